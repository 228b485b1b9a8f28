// End to end: the real pulumi CLI runs examples/maglev (a MaglevService on lab
// host h1 in front of h2..h4, dsr) from a project that installed bpfleet as a
// user would. Backends are prepared as a user would prepare them (the VIP on
// lo, arp_ignore/arp_announce, a server answering with the host's name); the
// client routes the VIP via h1, as an upstream router would.
import { readFileSync } from "node:fs";
import { resolve } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createLab, type Lab, type LabHost } from "../lab/lab";
import { passXdpTxToBridge } from "../lab/traffic";
import { PulumiProject } from "./pulumiProject";

const VIP = "198.51.100.10";
let lab: Lab;
let project: PulumiProject;

/** One short TCP connection to the VIP per source port; the backend name that answered each, in port order. */
async function backendsByPort(from: number, count: number): Promise<string[]> {
  const script = `for p in $(seq ${from} ${from + count - 1}); do timeout 3 socat -u TCP:${VIP}:80,sourceport=$p,reuseaddr STDOUT 2>/dev/null || echo none; done`;
  const r = await lab.inClient(lab.clients[0]!, ["sh", "-c", script], { timeout: 120_000 });
  return String(r.stdout).split("\n").filter(Boolean);
}

/** How many of those connections each backend answered. */
async function connections(from: number, count: number): Promise<Record<string, number>> {
  const counts: Record<string, number> = {};
  for (const name of await backendsByPort(from, count)) counts[name] = (counts[name] ?? 0) + 1;
  return counts;
}

async function leftovers(host: LabHost): Promise<{ pins: string; xdp: unknown }> {
  const pins = await lab.inHost(host, ["sh", "-c", "find /sys/fs/bpf/bpfleet -mindepth 1 2>/dev/null || true"]);
  const net = await lab.inHost(host, ["bpftool", "-j", "net", "show", "dev", "eth0"]);
  return { pins: String(pins.stdout).trim(), xdp: JSON.parse(String(net.stdout))[0].xdp };
}

/**
 * The `+`/`-` lines that name a VIP or backend entry (a quoted address or
 * "addr:port/proto" key) in the MaglevService block of a --diff output,
 * deduplicated; nested property lines of an entry are not entries.
 */
function entryChanges(output: string): string[] {
  const changes = new Set<string>();
  for (const line of output.split("\n")) {
    const entry = line.match(/^\s*([+-])\s+"?(\[?[0-9a-f.:]+\]?(?::\d+\/(?:tcp|udp))?)"?\s*:\s*[{"]/);
    if (entry && /[.:]/.test(entry[2]!) && !/^\d+$/.test(entry[2]!)) changes.add(`${entry[1]} ${entry[2]}`);
  }
  return [...changes];
}

beforeAll(async () => {
  lab = await createLab("e2emg", { hosts: 4, clients: 1 });
  const [h1, ...backends] = lab.hosts as [LabHost, ...LabHost[]];
  await passXdpTxToBridge(lab, h1);
  for (const h of backends) {
    await lab.inHost(h, [
      "sh",
      "-c",
      `ip addr add ${VIP}/32 dev lo && sysctl -qw net.ipv4.conf.all.arp_ignore=1 net.ipv4.conf.all.arp_announce=2 && ` +
        `setsid socat TCP-LISTEN:80,fork,reuseaddr SYSTEM:'echo ${h.name}' </dev/null >/dev/null 2>&1 &`,
    ]);
  }
  await lab.inClient(lab.clients[0]!, ["ip", "route", "add", `${VIP}/32`, "via", h1.address]);
  project = await PulumiProject.create("maglev", resolve(__dirname, "../../examples/maglev/index.ts"), "bpfleet-maglev");
  await project.ok(["config", "set", "labFile", lab.jsonPath]);
});

afterAll(async () => {
  if (project) await project.pulumi(["destroy", "--yes", "--skip-preview"]);
  await lab?.destroy();
});

describe("examples/maglev through the real Pulumi CLI", () => {
  it("pulumi up installs the load balancer on h1: connections to the VIP spread over h2, h3 and h4", async () => {
    await project.ok(["up", "--yes", "--skip-preview"]);
    const counts = await connections(41001, 45);
    expect(Object.keys(counts).sort(), JSON.stringify(counts)).toEqual(["h2", "h3", "h4"]);
    const outputs = JSON.parse((await project.ok(["stack", "output", "--json"])).stdout);
    expect(outputs.balancedVips).toEqual([`${VIP}:80/tcp`]);
    expect(outputs.balancedBackends).toEqual(lab.hosts.slice(1).map((h) => h.address));
    expect(outputs.nextHops).toEqual(Object.fromEntries(lab.hosts.slice(1).map((h) => [h.address, h.mac])));
  });

  it("the private key is a secret in state", async () => {
    const keyBody = readFileSync(lab.privateKeyPath, "utf8").split("\n")[1]!;
    expect(await project.exportState()).not.toContain(keyBody);
  });

  it("pulumi preview --diff after removing a backend shows exactly that backend, no table slots", async () => {
    const h4 = lab.hosts[3]!;
    const before = await backendsByPort(42001, 30);
    expect(new Set(before)).toEqual(new Set(["h2", "h3", "h4"]));
    await project.setList("backendHosts", ["h2", "h3"]);
    const preview = await project.ok(["preview", "--diff"]);
    expect(entryChanges(preview.stdout), preview.stdout).toEqual([`- ${h4.address}`]);
    expect(preview.stdout).toMatch(/1 to update/);
    expect(preview.stdout).not.toMatch(/slot|maglev_table/);
    await project.ok(["up", "--yes", "--skip-preview"]);
    // Only h4's flows move: every source port that h2 or h3 answered is answered by the same host again.
    const after = await backendsByPort(42001, 30);
    before.forEach((host, i) => {
      if (host === "h4") expect(["h2", "h3"]).toContain(after[i]);
      else expect(after[i], `source port ${42001 + i}`).toBe(host);
    });
  });

  it("pulumi refresh reads the service back: nothing to change afterwards, and the VIP's packets are counted", async () => {
    await project.ok(["refresh", "--yes", "--skip-preview"]);
    await project.ok(["preview", "--expect-no-changes"]);
    const outputs = JSON.parse((await project.ok(["stack", "output", "--json"])).stdout);
    expect(outputs.vipPackets[`${VIP}:80/tcp`]).toBeGreaterThanOrEqual(30 * 3);
  });

  it("a bad backend list fails the preview with the property and the reason, and changes nothing", async () => {
    await project.setList("backends", [lab.hosts[1]!.address, lab.hosts[1]!.address]);
    const up = await project.pulumi(["up", "--yes"]);
    expect(up.exitCode).not.toBe(0);
    expect(up.stdout + up.stderr).toMatch(/backends\[1\]: \S+ is listed twice \(also at backends\[0\]\)/);
    await project.pulumi(["config", "rm", "backends"]);
    const counts = await connections(43001, 20);
    expect(Object.keys(counts).sort()).toEqual(["h2", "h3"]);
  });

  it("pulumi destroy leaves no pins and no XDP program", async () => {
    await project.ok(["destroy", "--yes", "--skip-preview"]);
    expect(await leftovers(lab.hosts[0]!)).toEqual({ pins: "", xdp: [] });
    expect(await connections(44001, 2)).toEqual({ none: 2 });
  });
});
