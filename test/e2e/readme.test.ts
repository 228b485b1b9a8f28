// End to end: the README's "Your own hosts, from zero" project, taken out of
// README.md as a user would copy it (Pulumi.yaml, package.json, no tsconfig.json,
// index.ts with every resource snippet appended), run by the real Pulumi CLI
// against lab hosts. Only the example addresses are replaced by the lab's, and
// the config is set the way the README says (`pulumi config set --secret sshKey < key`).
import { readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { execa } from "execa";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createLab, type Lab, type LabHost } from "../lab/lab";
import { readmeProgram, readmeSnippets } from "../support/readmeSnippets";
import { packBpfleet, PulumiProject } from "./pulumiProject";
import { tearDownLabProject } from "./labHosts";

let lab: Lab;
let project: PulumiProject;
let outputs: Record<string, unknown>;
let upSeconds = 0;

/** Replaces each example value of the README by the lab's; each must be in the text, or the README changed under the test. */
function substitute(text: string, replacements: Record<string, string>): string {
  let result = text;
  for (const [example, real] of Object.entries(replacements)) {
    if (!result.includes(example)) throw new Error(`the README's program no longer contains ${example}: update test/e2e/readme.test.ts`);
    result = result.split(example).join(real);
  }
  return result;
}

async function sh(host: LabHost, script: string): Promise<string> {
  const r = await lab.inHost(host, ["sh", "-c", script]);
  return String(r.stdout).trim();
}

beforeAll(async () => {
  lab = await createLab("docsrd", { hosts: 4, clients: 1 });
  const [a, b, c, d] = lab.hosts as [LabHost, LabHost, LabHost, LabHost];
  const snippets = readmeSnippets();
  const tarball = await packBpfleet();
  const rootPackage = JSON.parse(readFileSync(`${__dirname}/../../package.json`, "utf8"));
  project = await PulumiProject.fromFiles("readme", {
    "Pulumi.yaml": snippets.get("Pulumi.yaml")!,
    "package.json": substitute(snippets.get("package.json")!, { [`file:../bpfleet/bpfleet-${rootPackage.version}.tgz`]: `file:${tarball}` }),
    "index.ts": substitute(readmeProgram(snippets), {
      '"10.0.0.21"': JSON.stringify(c.address), // the MaglevService's backends
      '"10.0.0.22"': JSON.stringify(d.address),
      '"198.51.100.50"': JSON.stringify(lab.clients[0]!.address), // the mirror's collector
    }),
  });
  await project.ok(["config", "set", "address", a.address]);
  await project.ok(["config", "set", "hostKey", a.hostKey]);
  await execa("pulumi", ["config", "set", "--secret", "sshKey", "--non-interactive"], { cwd: project.dir, env: project.env, inputFile: lab.privateKeyPath });
  await project.ok(["config", "set", "lbAddress", b.address]);
  await project.ok(["config", "set", "lbHostKey", b.hostKey]);
  for (const [i, host] of [c, d].entries()) {
    await project.ok(["config", "set", "--path", `hosts[${i}].name`, `web-${i + 1}`]);
    await project.ok(["config", "set", "--path", `hosts[${i}].address`, host.address]);
    await project.ok(["config", "set", "--path", `hosts[${i}].hostKey`, host.hostKey]);
  }
}, 600_000);

afterAll(async () => {
  await tearDownLabProject(project, lab);
}, 600_000);

describe("the README's from-zero project with every resource snippet, through the real Pulumi CLI", () => {
  it("pulumi up succeeds without a tsconfig.json, and the outputs show each resource", { timeout: 600_000 }, async () => {
    const started = Date.now();
    await project.ok(["up", "--yes", "--skip-preview"]);
    upSeconds = (Date.now() - started) / 1000;
    outputs = JSON.parse((await project.ok(["stack", "output", "--json"])).stdout);
    // The deny output is keyed by canonical entry, as the README's comment says.
    expect(outputs.denied).toEqual({ "192.0.2.9/32": "deny", "203.0.113.0/24": "deny", "2001:db8::/32": "deny" });
    expect(outputs.policyRules).toMatchObject({ "allow tcp 22": "allow", "allow tcp 443": "allow", "allow udp 68": "allow" });
    expect(outputs.mirrorTunnel).toMatch(/^bfm/);
    expect(typeof outputs.webProgram).toBe("number");
    expect(outputs.fleetWaves).toEqual([["web-1"], ["web-2"]]);
    console.log(`README project: pulumi up took ${upSeconds.toFixed(1)} s`);
  });

  it("each host holds what its snippet declared", { timeout: 120_000 }, async () => {
    const [a, b, c, d] = lab.hosts as [LabHost, LabHost, LabHost, LabHost];
    // XdpFirewall: attached on eth0, its IPv4 prefix trie holds 203.0.113.0/24.
    const xdpA = JSON.parse(await sh(a, "bpftool -j net show dev eth0"))[0];
    expect(xdpA.xdp.length).toBe(1);
    const prefixes = JSON.parse(await sh(a, "bpftool map dump pinned /sys/fs/bpf/bpfleet/xdp-firewall/edge-fw/maps/deny_v4_prefix"));
    expect(prefixes.map((e: { key: unknown }) => e.key)).toContainEqual({ prefixlen: 24, addr: [203, 0, 113, 0] });
    // TcPolicy and TrafficMirror: their filters on eth0's ingress hook, the mirror's VXLAN tunnel to the collector.
    const ingress = await sh(a, "tc filter show dev eth0 ingress");
    expect(ingress).toMatch(/pref 2 bpf/);
    expect(ingress).toMatch(/pref 1 bpf/);
    expect(await sh(a, `ip -d link show ${String(outputs.mirrorTunnel)}`)).toMatch(new RegExp(`vxlan id 42 remote ${lab.clients[0]!.address.replace(/\./g, "\\.")}`));
    // MaglevService on its own host; the fleet's firewall on each of its hosts.
    expect(JSON.parse(await sh(b, "bpftool -j net show dev eth0"))[0].xdp[0].id).toBe(outputs.webProgram);
    for (const host of [c, d]) {
      expect(JSON.parse(await sh(host, "bpftool -j net show dev eth0"))[0].xdp.length).toBe(1);
      expect(await sh(host, "ls /sys/fs/bpf/bpfleet/xdp-firewall")).not.toBe("");
    }
  });

  it("tsc type-checks the project with the README's tsconfig.json, as a user running tsc would", { timeout: 300_000 }, async () => {
    const tsconfig = join(project.dir, "tsconfig.json");
    writeFileSync(tsconfig, readmeSnippets().get("tsconfig.json")!);
    try {
      const r = await execa("npx", ["tsc", "-p", "."], { cwd: project.dir, env: project.env, reject: false });
      expect(`${r.stdout}${r.stderr}`).toBe("");
      expect(r.exitCode).toBe(0);
    } finally {
      rmSync(tsconfig);
    }
  });

  it("pulumi destroy leaves every host as it found it", { timeout: 600_000 }, async () => {
    await project.ok(["destroy", "--yes", "--skip-preview"]);
    for (const host of lab.hosts) {
      expect(await sh(host, "find /sys/fs/bpf/bpfleet -mindepth 1 2>/dev/null || true")).toBe("");
      expect(JSON.parse(await sh(host, "bpftool -j net show dev eth0"))[0].xdp).toEqual([]);
      expect(await sh(host, "ip -o link show type vxlan")).toBe("");
    }
  });
});
