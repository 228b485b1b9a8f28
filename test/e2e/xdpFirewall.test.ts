// End to end: the real pulumi CLI runs examples/quickstart (XdpFirewall on every
// lab host) from a project that installed bpfleet as a user would.
import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import { resolve } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createLab, type Lab, type LabHost } from "../lab/lab";
import { pingReaches, udpReaches } from "../lab/traffic";
import { PulumiProject } from "./pulumiProject";

let lab: Lab;
let project: PulumiProject;

async function entriesOn(host: LabHost): Promise<string> {
  const r = await lab.inHost(host, ["sh", "-c", "for m in /sys/fs/bpf/bpfleet/xdp-firewall/*/maps/deny_*; do bpftool map dump pinned $m; done 2>&1"]);
  return String(r.stdout);
}

async function leftovers(host: LabHost): Promise<{ pins: string; xdp: unknown }> {
  const pins = await lab.inHost(host, ["sh", "-c", "find /sys/fs/bpf/bpfleet -mindepth 1 2>/dev/null || true"]);
  const net = await lab.inHost(host, ["bpftool", "-j", "net", "show", "dev", "eth0"]);
  return { pins: String(pins.stdout).trim(), xdp: JSON.parse(String(net.stdout))[0].xdp };
}

/**
 * The entry lines (`+ "x": "deny"` / `- "x": "deny"`, or `+ x` / `- x` in a DenyList's text) of each resource block in a
 * --diff output; refresh prints each block twice (preview, then result), so lines are deduplicated.
 * A firewall's drift (`denyDrift`, issue 10) reads the same way: a stray entry
 * appearing is `+ x`, a missing one `- x`, and the signs turn when drift goes away.
 */
function entryChanges(output: string): Map<string, string[]> {
  const byResource = new Map<string, string[]>();
  let current: string | undefined;
  for (const line of output.split("\n")) {
    const resource = line.match(/(XdpFirewall|DenyList): \((update|create|delete|replace|refresh)\)/) ? line : undefined;
    const name = line.match(/urn=.*::(edge-[\w-]+)\]/)?.[1];
    if (resource) current = undefined;
    if (name) current = name;
    // A DenyList's entries are one sorted text, which the CLI diffs line by line (`+ x`).
    const entry = line.match(/^\s*([+-])\s+"?([0-9a-f.:]+\/\d+)"?(?:\s*:\s*"(deny|stray|missing)")?\s*$/);
    const sign = entry?.[3] === "missing" ? (entry[1] === "+" ? "-" : "+") : entry?.[1];
    if (current && entry) byResource.set(current, [...new Set([...(byResource.get(current) ?? []), `${sign} ${entry[2]}`])]);
  }
  return byResource;
}

beforeAll(async () => {
  lab = await createLab("e2e", { hosts: 2, clients: 2 });
  project = await PulumiProject.create("quickstart", resolve(__dirname, "../../examples/quickstart/index.ts"));
  await project.ok(["config", "set", "labFile", lab.jsonPath]);
});

afterAll(async () => {
  if (project) await project.pulumi(["destroy", "--yes"]);
  await lab?.destroy();
});

describe("quickstart through the real Pulumi CLI", () => {
  it("pulumi up installs the firewall on both hosts: denied clients are dropped, others pass", async () => {
    const [c1, c2] = lab.clients as [(typeof lab.clients)[0], (typeof lab.clients)[0]];
    await project.setList("deny", [c1.address, c1.address6, "203.0.113.0/24"]);
    await project.ok(["up", "--yes", "--skip-preview"]);
    for (const host of lab.hosts) {
      expect(await pingReaches(lab, c1, host.address)).toBe(false);
      expect(await pingReaches(lab, c1, host.address6)).toBe(false);
      expect(await udpReaches(lab, c1, host, host.address)).toBe(false);
      expect(await pingReaches(lab, c2, host.address)).toBe(true);
      expect(await udpReaches(lab, c2, host, host.address6)).toBe(true);
    }
    const outputs = JSON.parse((await project.ok(["stack", "output", "--json"])).stdout);
    // Summaries (issue 10): per host the count and version of the list it applied, and its drift.
    expect(outputs.denied).toEqual([
      { entries: 3, digest: createHash("sha256").update(`${[`${c1.address}/32`, `${c1.address6}/128`, "203.0.113.0/24"].sort().join("\n")}\n`).digest("hex").slice(0, 12), drift: 0 },
      { entries: 3, digest: outputs.denied[0].digest, drift: 0 },
    ]);
    expect(outputs.dropped.every((n: number) => typeof n === "number")).toBe(true);
  });

  it("the private key is a secret in state: absent from the export, present only when secrets are shown", async () => {
    const keyBody = readFileSync(lab.privateKeyPath, "utf8").split("\n")[1]!;
    expect(keyBody.length).toBeGreaterThan(20);
    expect(await project.exportState()).not.toContain(keyBody);
    expect(await project.exportState(true)).toContain(keyBody);
  });

  it("pulumi preview --diff shows exactly the added and removed entries, once, and the hosts that update", async () => {
    const c1 = lab.clients[0]!;
    await project.setList("deny", [c1.address, "203.0.113.0/24", "198.51.100.0/24"]);
    const preview = await project.ok(["preview", "--diff"]);
    const changes = entryChanges(preview.stdout);
    // The entries once, under the shared list (issue 10); each host's firewall updates to its new digest.
    expect(changes.get("edge-deny")?.sort(), preview.stdout).toEqual([`+ 198.51.100.0/24`, `- ${c1.address6}/128`].sort());
    const updated: string[] = [];
    let inUpdate = false;
    for (const line of preview.stdout.split("\n")) {
      const block = line.match(/:(\w+): \((\w[\w-]*)\)/);
      if (block) inUpdate = block[1] === "XdpFirewall" && block[2] === "update";
      const name = line.match(/urn=.*::(edge-fw-[\w-]+)\]/)?.[1];
      if (inUpdate && name) updated.push(name);
    }
    updated.sort();
    expect(updated, preview.stdout).toEqual(lab.hosts.map((host) => `edge-fw-${host.name}`).sort());
    for (const host of lab.hosts) expect(changes.has(`edge-fw-${host.name}`)).toBe(false);
    expect(preview.stdout).toMatch(/3 to update/);
    await project.ok(["up", "--yes", "--skip-preview"]);
    for (const host of lab.hosts) {
      expect(await pingReaches(lab, c1, host.address6)).toBe(true);
      expect(await pingReaches(lab, c1, host.address)).toBe(false);
    }
  });

  it("pulumi refresh shows an entry added by hand as drift on that host only, and up removes it", async () => {
    const [h1, h2] = lab.hosts as [LabHost, LabHost];
    await lab.inHost(h1, ["bpftool", "map", "update", "pinned", `/sys/fs/bpf/bpfleet/xdp-firewall/edge-fw-${h1.name}/maps/deny_v4_exact`, "key", "192", "0", "2", "77", "value", "1"]);
    const refresh = await project.ok(["refresh", "--yes", "--diff"]);
    const drift = entryChanges(refresh.stdout);
    expect(drift.get(`edge-fw-${h1.name}`), refresh.stdout).toEqual(["+ 192.0.2.77/32"]);
    expect(drift.has(`edge-fw-${h2.name}`)).toBe(false);
    const preview = await project.ok(["preview", "--diff"]);
    expect(entryChanges(preview.stdout).get(`edge-fw-${h1.name}`)).toEqual(["- 192.0.2.77/32"]);
    expect(preview.stdout).toMatch(/1 to update/);
    await project.ok(["up", "--yes", "--skip-preview"]);
    expect(await entriesOn(h1)).not.toMatch(/0xc0 0x00 0x02 0x4d|"key": \["0xc0","0x00","0x02","0x4d"\]/);
    expect(await entriesOn(h1)).not.toContain("4d");
  });

  it("after a host loses its pins and hooks (as on a reboot), refresh reports the firewall gone and up restores it", async () => {
    const h2 = lab.hosts[1]!;
    const c1 = lab.clients[0]!;
    await lab.inHost(h2, ["sh", "-c", "ip link set dev eth0 xdpgeneric off; ip link set dev eth0 xdpdrv off; rm -rf /sys/fs/bpf/bpfleet; true"]);
    expect(await pingReaches(lab, c1, h2.address)).toBe(true);
    const refresh = await project.ok(["refresh", "--yes"]);
    expect(refresh.stdout).toMatch(new RegExp(`edge-fw-${h2.name}\\s+deleted`));
    const up = await project.ok(["up", "--yes", "--skip-preview"]);
    expect(up.stdout).toMatch(/1 created/);
    expect(await pingReaches(lab, c1, h2.address)).toBe(false);
  });

  it("a bad entry fails the preview with the property and the reason, and changes nothing", async () => {
    const before = await Promise.all(lab.hosts.map(entriesOn));
    await project.setList("deny", [lab.clients[0]!.address, "10.0.0.0/33"]);
    const preview = await project.pulumi(["up", "--yes"]);
    expect(preview.exitCode).not.toBe(0);
    // The quickstart's list is a DenyList: the error names its input, `entries`.
    expect(preview.stdout + preview.stderr).toMatch(/entries\[1\]: "10\.0\.0\.0\/33": prefix length must be a whole number from 0 to 32/);
    expect(await Promise.all(lab.hosts.map(entriesOn))).toEqual(before);
  });

  it("pulumi destroy leaves no pins and no XDP program on any host", async () => {
    await project.ok(["destroy", "--yes", "--skip-preview"]);
    for (const host of lab.hosts) {
      expect(await leftovers(host)).toEqual({ pins: "", xdp: [] });
      expect(await pingReaches(lab, lab.clients[0]!, host.address)).toBe(true);
    }
  });
});
