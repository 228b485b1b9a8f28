// Two bpfleet XDP programs on one interface, the classic deployment: an
// XdpFirewall in front of a MaglevService on h1's eth0, through bpfleet's
// dispatcher and chain (bpf/include/xdp_chain.h, provider/remote/xdpHook.ts).
// Real sshd, real kernel, real connections; the provider is driven directly.
//
//   c1 (allowed client) ─┐           both route the VIP via h1
//   c2 (denied client)  ─┤ bridge
//   h1 firewall + LB    ─┤           dispatcher on eth0: slot 0 firewall, slot 1 balancer
//   h2, h3 backends     ─┘           VIP on lo, answer with their name (DSR)
import { readFileSync } from "node:fs";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { checkInputs } from "../../provider/dynamicAdapter";
import { maglevServiceKind as lb } from "../../provider/maglev/lifecycle";
import { checkMaglevService, type MaglevServiceInputs, type MaglevServiceOutputs } from "../../provider/maglev/schema";
import { closeAllSessions, sessionFor } from "../../provider/remote/ssh";
import { xdpFirewallKind as firewall } from "../../provider/xdpFirewall/lifecycle";
import { xdpFirewallSchema, type XdpFirewallInputs, type XdpFirewallOutputs } from "../../provider/xdpFirewall/schema";
import { createLab, type Lab, type LabClient, type LabHost } from "./lab";
import { passXdpTxToBridge, pingReaches, tcpAnswers } from "./traffic";

const VIP = "198.51.100.20";
const DISPATCHER = "/sys/fs/bpf/bpfleet/xdp-dispatcher/eth0";

let lab: Lab;
let privateKey: string;
let h1: LabHost;
let backends: LabHost[];
let c1: LabClient;
let c2: LabClient;
let fw: { id: string; outs: XdpFirewallOutputs } | undefined;
let service: { id: string; outs: MaglevServiceOutputs } | undefined;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function firewallInputs(patch: Record<string, unknown> = {}): XdpFirewallInputs {
  const result = checkInputs(xdpFirewallSchema, {
    host: { address: h1.address, hostKey: h1.hostKey, connectTimeoutMs: 5000, commandTimeoutMs: 60_000 },
    credentials: { privateKey },
    interface: "eth0",
    name: "edge",
    deny: [c2.address, c2.address6],
    chainPriority: 0,
    ...patch,
  });
  if (!result.inputs) throw new Error(JSON.stringify(result.failures));
  return result.inputs as XdpFirewallInputs;
}

function serviceInputs(patch: Record<string, unknown> = {}): MaglevServiceInputs {
  const result = checkMaglevService({
    host: { address: h1.address, hostKey: h1.hostKey, connectTimeoutMs: 5000, commandTimeoutMs: 120_000 },
    credentials: { privateKey },
    interface: "eth0",
    name: "web",
    vips: [`${VIP}:80/tcp`, `${VIP}:81/tcp`],
    backends: backends.map((h) => h.address),
    mode: "dsr",
    tableSize: 1021,
    chainPriority: 1,
    ...patch,
  });
  if (!result.inputs) throw new Error(JSON.stringify(result.failures));
  return result.inputs as MaglevServiceInputs;
}

async function inHostText(host: LabHost, argv: string[]): Promise<string> {
  return String((await lab.inHost(host, argv)).stdout).trim();
}

/** The id of the program on h1's XDP hook, or undefined. */
async function hookId(): Promise<number | undefined> {
  return JSON.parse(await inHostText(h1, ["bpftool", "-j", "net", "show", "dev", "eth0"]))[0].xdp[0]?.id;
}

async function programIdAt(pin: string): Promise<number | undefined> {
  const r = await lab.inHost(h1, ["bpftool", "-j", "prog", "show", "pinned", pin], { reject: false });
  return r.exitCode === 0 ? JSON.parse(String(r.stdout)).id : undefined;
}

/** Chain slot -> program id on h1. */
async function chainSlots(): Promise<Record<number, number>> {
  const r = await lab.inHost(h1, ["bpftool", "-j", "map", "dump", "pinned", `${DISPATCHER}/maps/xdp_chain`], { reject: false });
  if (r.exitCode !== 0) return {};
  return Object.fromEntries((JSON.parse(String(r.stdout)) as { formatted: { key: number; value: number } }[]).map((e) => [e.formatted.key, e.formatted.value]));
}

/** Every path under h1's bpfleet pin root (empty directories too); "" once the root is gone. */
async function pinsOn(host: LabHost): Promise<string> {
  return inHostText(host, ["sh", "-c", "find /sys/fs/bpf/bpfleet 2>/dev/null || true"]);
}

/** What short connections from `client` to the VIP got back: a backend's name each, or "" (nothing). */
const askVipMany = (client: LabClient, from: number, count: number) => tcpAnswers(lab, client, VIP, 80, from, count);

/**
 * One TCP connection from the client, a line every 50 ms for `seconds`: how many
 * lines it sent, how many came back, and the error that ended it, if any.
 */
const HOLD_CONNECTION = `
const net = require("net");
const [host, port, seconds] = process.argv.slice(1);
const socket = net.connect({ host, port: Number(port) });
let sent = 0, got = 0, buf = "", error = null;
socket.setEncoding("utf8");
socket.on("data", (d) => { buf += d; let n; while ((n = buf.indexOf("\\n")) >= 0) { buf = buf.slice(n + 1); got++; } });
socket.on("error", (e) => { error = e.code; });
socket.on("connect", () => {
  const tick = setInterval(() => { socket.write("line\\n"); sent++; }, 50);
  setTimeout(() => { clearInterval(tick); setTimeout(() => { console.log(JSON.stringify({ sent, got, error })); process.exit(0); }, 1000); }, Number(seconds) * 1000);
});
`;

/** Pings from the denied client at h1 while `during` runs; how many got an answer. */
async function deniedPingsAnsweredDuring(during: () => Promise<unknown>): Promise<{ sent: number; answered: number }> {
  const ping = lab.inClient(c2, ["ping", "-n", "-i", "0.01", "-w", "6", h1.address], { reject: false });
  await sleep(500);
  await during();
  const out = String((await ping).stdout);
  const m = out.match(/(\d+) packets transmitted, (\d+) received/);
  return { sent: Number(m?.[1] ?? 0), answered: Number(m?.[2] ?? -1) };
}

beforeAll(async () => {
  lab = await createLab("xchain", { hosts: 3, clients: 2 });
  privateKey = readFileSync(lab.privateKeyPath, "utf8");
  [h1] = lab.hosts as [LabHost];
  backends = lab.hosts.slice(1);
  [c1, c2] = lab.clients as [LabClient, LabClient];
  await passXdpTxToBridge(lab, h1);
  for (const h of backends) {
    await lab.inHost(h, ["sh", "-c", `ip addr add ${VIP}/32 dev lo && sysctl -qw net.ipv4.conf.all.arp_ignore=1 net.ipv4.conf.all.arp_announce=2`]);
    await lab.inHost(h, ["sh", "-c", `setsid socat TCP4-LISTEN:80,fork,reuseaddr,backlog=128 SYSTEM:'echo ${h.name}' </dev/null >/dev/null 2>&1 &`]);
    // Port 81: the name, then the name again for every line received (an established flow).
    await lab.inHost(h, ["sh", "-c", `setsid socat TCP4-LISTEN:81,fork,reuseaddr SYSTEM:'echo ${h.name}; while read l; do echo ${h.name}; done' </dev/null >/dev/null 2>&1 &`]);
  }
  for (const c of [c1, c2]) await lab.inClient(c, ["ip", "route", "add", `${VIP}/32`, "via", h1.address]);
  await sleep(300);
});

afterAll(async () => {
  if (fw) await firewall.delete(fw.id, fw.outs).catch(() => undefined);
  if (service) await lb.delete(service.id, service.outs).catch(() => undefined);
  closeAllSessions();
  await lab?.destroy();
});

describe("a firewall in front of a load balancer on one interface", () => {
  it("both created at once: the dispatcher is on the hook, the firewall in slot 0 and the balancer in slot 1", async () => {
    [fw, service] = await Promise.all([firewall.create(firewallInputs()), lb.create(serviceInputs())]);
    expect(await hookId()).toBe(await programIdAt(`${DISPATCHER}/prog`));
    expect(await chainSlots()).toEqual({ 0: fw.outs.programId, 1: service.outs.programId });
    expect(fw.outs.attached).toBe(true);
    expect(fw.outs.attachMode).toBe("driver");
    expect(service.outs.attachMode).toBe("driver");
  });

  it("an allowed client reaches the backends through the VIP; the denied client reaches neither the VIP nor h1", async () => {
    const allowed = await askVipMany(c1, 42001, 12);
    expect(allowed.every((r) => r === "h2" || r === "h3"), allowed.join(",")).toBe(true);
    expect(new Set(allowed).size).toBe(2);
    expect(await askVipMany(c2, 42001, 3)).toEqual(["", "", ""]);
    expect(await pingReaches(lab, c2, h1.address)).toBe(false);
    // Non-VIP traffic from an allowed client passes both programs to h1's stack.
    expect(await pingReaches(lab, c1, h1.address)).toBe(true);
    const fwRead = (await firewall.read(fw!.id, fw!.outs))!.outs;
    const lbRead = (await lb.read(service!.id, service!.outs))!.outs;
    expect(fwRead.counters.dropPackets).toBeGreaterThan(0);
    expect(fwRead.attached).toBe(true);
    // Only the allowed client's packets reached the balancer: 12 connections, a handful of packets each.
    expect(lbRead.counters.vips[`${VIP}:80/tcp`]!.packets).toBeGreaterThanOrEqual(12 * 3);
    expect(lbRead.attachMode).toBe("driver");
  });

  it("the management SSH path still works (a fresh login)", async () => {
    const session = await sessionFor(firewallInputs().host, firewallInputs().credentials);
    expect((await session.run(["true"])).code).toBe(0);
  });

  it("a program that wants the interface alone, or a taken slot, is refused with what to do instead", async () => {
    await expect(firewall.create(firewallInputs({ name: "alone", chainPriority: undefined }))).rejects.toThrow(
      /eth0 already runs bpfleet's XDP dispatcher, which runs bpfleet's XdpFirewall "edge" \(chainPriority 0\), bpfleet's MaglevService "web" \(chainPriority 1\).*give this firewall a chainPriority/,
    );
    await expect(firewall.create(firewallInputs({ name: "second", chainPriority: 1 }))).rejects.toThrow(/chainPriority 1 on eth0 is taken by bpfleet's MaglevService "web" \(pins \/sys\/fs\/bpf\/bpfleet\/maglev\/web\)\.\n[\s\S]*give this firewall a free chainPriority \(2, 3, 4, 5, 6, 7;/);
    expect(await pinsOn(h1)).not.toMatch(/alone|second/);
    expect(await chainSlots()).toEqual({ 0: fw!.outs.programId, 1: service!.outs.programId });
  });

  it("upgrades of both objects swap their slots atomically: an established connection through the VIP loses no line, not one denied packet is answered", async () => {
    const oldIds = [fw!.outs.programId, service!.outs.programId];
    const held = lab.inClient(c1, [process.execPath, "-e", HOLD_CONNECTION, VIP, "81", "14"], { reject: false });
    await sleep(1000);
    const pings = await deniedPingsAnsweredDuring(async () => {
      service = { id: service!.id, outs: await lb.update(service!.id, { ...service!.outs, objectSha256: "an older object" }, serviceInputs()) };
      fw = { id: fw!.id, outs: await firewall.update(fw!.id, { ...fw!.outs, objectSha256: "an older object" }, firewallInputs()) };
    });
    const connection = JSON.parse(String((await held).stdout)) as { sent: number; got: number; error: string | null };
    expect(connection.error).toBeNull();
    expect(connection.sent).toBeGreaterThan(100);
    // The backend's name first, then one echo per line sent.
    expect(connection.got).toBe(connection.sent + 1);
    expect(pings.sent).toBeGreaterThan(100);
    expect(pings.answered).toBe(0);
    expect([fw!.outs.programId, service!.outs.programId].filter((id) => oldIds.includes(id))).toEqual([]);
    expect(await chainSlots()).toEqual({ 0: fw!.outs.programId, 1: service!.outs.programId });
    expect(await askVipMany(c1, 42101, 4)).not.toContain("");
  });

  it("lockout guard in the chain: an upgrade whose deny entry cuts the management path is undone by the host (old program back in its slot, entries back), and the update fails saying so", async () => {
    const before = { slots: await chainSlots(), deny: (await firewall.read(fw!.id, fw!.outs))!.outs.deny };
    const cutting = firewallInputs({ deny: [c2.address, c2.address6, lab.gateway4], allowManagementDeny: true, lockoutRevertSeconds: 10 });
    await expect(firewall.update(fw!.id, { ...fw!.outs, objectSha256: "an older object" }, cutting)).rejects.toThrow(
      /fresh SSH login failed.*cuts the management path.*A fresh login worked again.*had fired: the change was undone/s,
    );
    expect((await lab.ssh(h1, ["true"], { reject: false })).exitCode).toBe(0);
    expect(await chainSlots()).toEqual(before.slots);
    const after = (await firewall.read(fw!.id, fw!.outs))!.outs;
    expect(after.deny).toEqual(before.deny);
    expect(after.attached).toBe(true);
    expect(await inHostText(h1, ["sh", "-c", "ls /sys/fs/bpf/bpfleet/xdp-firewall/edge"])).not.toMatch(/prog_old|prog_new/);
    expect(await pingReaches(lab, c2, h1.address)).toBe(false);
    expect(await askVipMany(c1, 42151, 3)).not.toContain("");
  }, 90_000);

  it("deleting the firewall leaves the balancer serving (now to every client); deleting the balancer removes the dispatcher", async () => {
    await firewall.delete(fw!.id, fw!.outs);
    fw = undefined;
    expect(await chainSlots()).toEqual({ 1: service!.outs.programId });
    expect(await askVipMany(c2, 42201, 3)).not.toContain("");
    await lb.delete(service!.id, service!.outs);
    service = undefined;
    expect(await hookId()).toBeUndefined();
    expect(await pinsOn(h1)).toBe("");
    expect(await pingReaches(lab, c2, h1.address)).toBe(true);
  });
});

describe("moving a firewall attached alone into the chain", () => {
  it("a balancer that wants the chain is refused while the firewall runs alone, naming it", async () => {
    fw = await firewall.create(firewallInputs({ chainPriority: undefined }));
    expect(await hookId()).toBe(fw.outs.programId);
    await expect(lb.create(serviceInputs())).rejects.toThrow(/already runs the XDP program of bpfleet's XdpFirewall "edge" \(id \d+, \w+ mode, pins \/sys\/fs\/bpf\/bpfleet\/xdp-firewall\/edge\), attached alone, not through bpfleet's dispatcher\.\n[\s\S]*give XdpFirewall "edge" a chainPriority too/);
    expect(await hookId()).toBe(fw.outs.programId);
  });

  it("setting chainPriority moves it into the chain in place: not one denied packet answered", async () => {
    const pings = await deniedPingsAnsweredDuring(async () => {
      fw = { id: fw!.id, outs: await firewall.update(fw!.id, fw!.outs, firewallInputs({ chainPriority: 0 })) };
    });
    expect(pings.answered).toBe(0);
    expect(pings.sent).toBeGreaterThan(100);
    expect(await hookId()).toBe(await programIdAt(`${DISPATCHER}/prog`));
    expect(await chainSlots()).toEqual({ 0: fw!.outs.programId });
    service = await lb.create(serviceInputs());
    expect(await askVipMany(c1, 42301, 4)).not.toContain("");
    expect(await askVipMany(c2, 42301, 2)).toEqual(["", ""]);
  });

  it("drift: a member taken out of its slot by hand reads as detached, and the next update puts it back", async () => {
    await lab.inHost(h1, ["bpftool", "map", "delete", "pinned", `${DISPATCHER}/maps/xdp_chain`, "key", "0", "0", "0", "0"]);
    expect(await pingReaches(lab, c2, h1.address)).toBe(true);
    const read = (await firewall.read(fw!.id, fw!.outs))!;
    expect(read.outs.attached).toBe(false);
    fw = { id: fw!.id, outs: await firewall.update(fw!.id, read.outs, firewallInputs()) };
    expect(fw.outs.attached).toBe(true);
    expect(await pingReaches(lab, c2, h1.address)).toBe(false);
  });

  it("back to alone once the balancer is gone: the firewall replaces the dispatcher, which is removed", async () => {
    await lb.delete(service!.id, service!.outs);
    service = undefined;
    const pings = await deniedPingsAnsweredDuring(async () => {
      fw = { id: fw!.id, outs: await firewall.update(fw!.id, fw!.outs, firewallInputs({ chainPriority: undefined })) };
    });
    expect(pings.answered).toBe(0);
    expect(await hookId()).toBe(fw!.outs.programId);
    expect(await pinsOn(h1)).not.toContain("xdp-dispatcher");
    await firewall.delete(fw!.id, fw!.outs);
    fw = undefined;
    expect(await pinsOn(h1)).toBe("");
    expect(await hookId()).toBeUndefined();
  });
});
