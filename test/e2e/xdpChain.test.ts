// End to end: the real pulumi CLI runs examples/edge (an XdpFirewall, chainPriority 0,
// in front of a MaglevService, chainPriority 1, on h1's eth0) from a project that
// installed bpfleet as a user would. Neither detaches the other: both sit in the
// chain behind bpfleet's dispatcher. The topology is test/lab/xdpChain.test.ts's:
//
//   c1 (allowed client) ─┐           both route the VIP via h1
//   c2 (denied client)  ─┤ bridge
//   h1 firewall + LB    ─┤           dispatcher on eth0: slot 0 firewall, slot 1 balancer
//   h2, h3 backends     ─┘           VIP on lo, answer with their name (DSR)
import { resolve } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createLab, type Lab, type LabClient, type LabHost } from "../lab/lab";
import { passXdpTxToBridge, pingReaches, tcpAnswer, tcpAnswers } from "../lab/traffic";
import { PulumiProject } from "./pulumiProject";

const VIP = "198.51.100.10";
const DISPATCHER = "/sys/fs/bpf/bpfleet/xdp-dispatcher/eth0";
const ADDED = "192.0.2.0/24";

let lab: Lab;
let project: PulumiProject;
let h1: LabHost;
let c1: LabClient;
let c2: LabClient;

async function inHostText(argv: string[]): Promise<string> {
  return String((await lab.inHost(h1, argv)).stdout).trim();
}

/** The id of the program on h1's XDP hook, or undefined. */
async function hookId(): Promise<number | undefined> {
  return JSON.parse(await inHostText(["bpftool", "-j", "net", "show", "dev", "eth0"]))[0].xdp[0]?.id;
}

async function dispatcherId(): Promise<number | undefined> {
  const r = await lab.inHost(h1, ["bpftool", "-j", "prog", "show", "pinned", `${DISPATCHER}/prog`], { reject: false });
  return r.exitCode === 0 ? JSON.parse(String(r.stdout)).id : undefined;
}

/** Chain slot -> program id on h1. */
async function chainSlots(): Promise<Record<number, number>> {
  const r = await lab.inHost(h1, ["bpftool", "-j", "map", "dump", "pinned", `${DISPATCHER}/maps/xdp_chain`], { reject: false });
  if (r.exitCode !== 0) return {};
  return Object.fromEntries((JSON.parse(String(r.stdout)) as { formatted: { key: number; value: number } }[]).map((e) => [e.formatted.key, e.formatted.value]));
}

/** What one short connection from `client` to the VIP got back: a backend's name, or "" (nothing). */
const askVip = (client: LabClient, sport: number) => tcpAnswer(lab, client, VIP, 80, sport, 3);
const askVipMany = (client: LabClient, from: number, count: number) => tcpAnswers(lab, client, VIP, 80, from, count);

async function stackOutputs(): Promise<Record<string, any>> {
  return JSON.parse((await project.ok(["stack", "output", "--json"])).stdout);
}

/** Each resource's outputs in the stack's state, by resource name. */
async function stateOutputs(): Promise<Record<string, Record<string, unknown>>> {
  const { deployment } = JSON.parse(await project.exportState()) as { deployment: { resources: { urn: string; type: string; outputs?: Record<string, unknown> }[] } };
  return Object.fromEntries(deployment.resources.filter((r) => /\/bpfleet:/.test(r.type)).map((r) => [r.urn.split("::").pop()!, r.outputs ?? {}]));
}

/**
 * Per resource block of a --diff output (keyed "Type name"), its `+`/`-`/`~`
 * lines, trimmed, padding collapsed and deduplicated (refresh prints each block
 * twice). The stack's outputs section that follows the last block is not a block's.
 */
function changesByResource(output: string): Map<string, string[]> {
  const changes = new Map<string, string[]>();
  let type: string | undefined;
  let current: string | undefined;
  for (const line of output.split("\n")) {
    const block = line.match(/^\s*[~+\-=<>]*\s*\S+:(\w+): \((\w[\w-]*)\)/);
    if (block) {
      type = block[1];
      current = undefined;
      continue;
    }
    if (/^\s*--outputs:--|^Resources:/.test(line)) type = current = undefined;
    const name = line.match(/^\s*\[urn=.*::([\w-]+)\]/)?.[1];
    if (type && name) current = `${type} ${name}`;
    const change = line.match(/^\s*([+\-~])\s+(\S.*)$/);
    if (current && change) {
      const text = `${change[1]} ${change[2]!.replace(/\s+:\s/, ": ").replace(/"([^"]*)":/, "$1:")}`;
      changes.set(current, [...new Set([...(changes.get(current) ?? []), text])]);
    }
  }
  return changes;
}

beforeAll(async () => {
  lab = await createLab("e2echn", { hosts: 3, clients: 2 });
  [h1] = lab.hosts as [LabHost];
  [c1, c2] = lab.clients as [LabClient, LabClient];
  await passXdpTxToBridge(lab, h1);
  for (const h of lab.hosts.slice(1)) {
    await lab.inHost(h, [
      "sh",
      "-c",
      `ip addr add ${VIP}/32 dev lo && sysctl -qw net.ipv4.conf.all.arp_ignore=1 net.ipv4.conf.all.arp_announce=2 && ` +
        `setsid socat TCP4-LISTEN:80,fork,reuseaddr,backlog=128 SYSTEM:'echo ${h.name}' </dev/null >/dev/null 2>&1 &`,
    ]);
  }
  for (const c of [c1, c2]) await lab.inClient(c, ["ip", "route", "add", `${VIP}/32`, "via", h1.address]);
  project = await PulumiProject.create("edge", resolve(__dirname, "../../examples/edge/index.ts"), "bpfleet-edge");
  await project.ok(["config", "set", "labFile", lab.jsonPath]);
  await project.setList("deny", [c2.address, c2.address6, "203.0.113.0/24"]);
});

afterAll(async () => {
  if (project) await project.pulumi(["destroy", "--yes", "--skip-preview"]);
  await lab?.destroy();
});

describe("examples/edge: a firewall in front of a load balancer on one interface, through the real Pulumi CLI", () => {
  it("one pulumi up creates both: the dispatcher holds h1's hook and the chain holds the firewall, then the balancer", async () => {
    const up = await project.ok(["up", "--yes", "--skip-preview"]);
    expect(up.stdout).toMatch(/XdpFirewall edge-fw created/);
    expect(up.stdout).toMatch(/MaglevService web created/);
    const outputs = await stackOutputs();
    const [firewallId, balancerId] = outputs.chain as [number, number];
    expect(firewallId).not.toBe(balancerId);
    expect(await hookId()).toBeDefined();
    expect(await hookId()).toBe(await dispatcherId());
    expect(await chainSlots()).toEqual({ 0: firewallId, 1: balancerId });
    expect(outputs.attachModes).toEqual({ firewall: "driver", balancer: "driver" });
    expect(outputs.denied.sort()).toEqual([`${c2.address}/32`, "203.0.113.0/24", `${c2.address6}/128`].sort());
    expect(outputs.balancedVips).toEqual([`${VIP}:80/tcp`]);
    expect(outputs.balancedBackends).toEqual(lab.hosts.slice(1).map((h) => h.address));
  }, 300_000);

  it("the allowed client reaches both backends through the VIP; the denied client gets nothing from the VIP and no ping reply from h1", async () => {
    const allowed = await askVipMany(c1, 41001, 12);
    expect(allowed.every((r) => r === "h2" || r === "h3"), allowed.join(",")).toBe(true);
    expect(new Set(allowed).size).toBe(2);
    expect(await askVipMany(c2, 41001, 3)).toEqual(["", "", ""]);
    expect(await pingReaches(lab, c2, h1.address)).toBe(false);
    // Traffic for h1 itself from an allowed client passes both members to the stack.
    expect(await pingReaches(lab, c1, h1.address)).toBe(true);
  });

  it("pulumi preview --diff after adding a deny entry lists only the firewall, with that entry", async () => {
    await project.setList("deny", [c2.address, c2.address6, "203.0.113.0/24", ADDED]);
    const preview = await project.ok(["preview", "--diff"]);
    const changes = changesByResource(preview.stdout);
    expect([...changes.keys()], preview.stdout).toEqual(["XdpFirewall edge-fw"]);
    expect(changes.get("XdpFirewall edge-fw"), preview.stdout).toEqual(["~ deny: {", `+ ${ADDED}: "deny"`]);
    expect(preview.stdout).toMatch(/1 to update/);
    expect(preview.stdout).not.toMatch(/MaglevService: \((update|replace|create|delete)/);
  });

  it("pulumi up applies it while the allowed client's connections to the VIP keep succeeding", async () => {
    const before = (await stackOutputs()).chain as [number, number];
    const answers: string[] = [];
    let running = true;
    const traffic = (async () => {
      for (let port = 42001; running && port < 43000; port++) answers.push(await askVip(c1, port));
    })();
    await new Promise((r) => setTimeout(r, 500));
    const up = await project.ok(["up", "--yes", "--skip-preview"]);
    await new Promise((r) => setTimeout(r, 500));
    running = false;
    await traffic;
    expect(up.stdout).toMatch(/1 updated/);
    expect(answers.length).toBeGreaterThan(10);
    expect(answers.filter((a) => a !== "h2" && a !== "h3"), `${answers.length} connections`).toEqual([]);
    const outputs = await stackOutputs();
    expect(outputs.denied).toContain(ADDED);
    // Map writes only: the same programs in the same slots.
    expect(outputs.chain).toEqual(before);
    expect(await chainSlots()).toEqual({ 0: before[0], 1: before[1] });
    expect(await askVipMany(c2, 42001, 2)).toEqual(["", ""]);
  }, 300_000);

  it("pulumi refresh shows no changes other than counters", async () => {
    // Fresh traffic through both members since the last up, so their counters have moved.
    await askVipMany(c1, 43001, 4);
    await pingReaches(lab, c2, h1.address);
    const before = await stateOutputs();
    const preview = await project.ok(["refresh", "--preview-only", "--diff"]);
    expect([...changesByResource(preview.stdout).keys()], preview.stdout).toEqual([]);
    expect(preview.stdout).toMatch(/^\s*3 unchanged$/m);
    // The CLI reports read-only outputs that moved (the counters) as no change; the state takes them.
    const refresh = await project.ok(["refresh", "--yes", "--skip-preview", "--diff"]);
    expect([...changesByResource(refresh.stdout).keys()], refresh.stdout).toEqual([]);
    expect(refresh.stdout).toMatch(/^\s*3 unchanged$/m);
    const after = await stateOutputs();
    // The credentials are re-encrypted (a fresh nonce) on every write of the state.
    const declared = (all: Record<string, Record<string, unknown>>) =>
      Object.fromEntries(Object.entries(all).map(([name, outs]) => [name, { ...outs, counters: undefined, credentials: undefined }]));
    expect(declared(after)).toEqual(declared(before));
    const dropped = (outs: Record<string, Record<string, unknown>>) => (outs["edge-fw"]!.counters as { dropPackets: number }).dropPackets;
    const vipPackets = (outs: Record<string, Record<string, unknown>>) => (outs.web!.counters as { vips: Record<string, { packets: number }> }).vips[`${VIP}:80/tcp`]!.packets;
    expect(dropped(after)).toBeGreaterThan(dropped(before));
    expect(vipPackets(after)).toBeGreaterThan(vipPackets(before));
    await project.ok(["preview", "--expect-no-changes"]);
  }, 300_000);

  it("pulumi destroy leaves no /sys/fs/bpf/bpfleet on h1 and an empty XDP hook", async () => {
    await project.ok(["destroy", "--yes", "--skip-preview"]);
    expect(await inHostText(["sh", "-c", "find /sys/fs/bpf/bpfleet 2>/dev/null || true"])).toBe("");
    expect(JSON.parse(await inHostText(["bpftool", "-j", "net", "show", "dev", "eth0"]))[0].xdp).toEqual([]);
    expect(await pingReaches(lab, c2, h1.address)).toBe(true);
  }, 300_000);
});
