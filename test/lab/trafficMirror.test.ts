// TrafficMirror's lifecycle against real hosts: real sshd, real kernel, real
// packets. A client (c1) talks HTTP-like TCP to port 80 of h1 and other traffic
// besides; h1 mirrors eth0 to a local veth or, through a VXLAN tunnel it owns,
// to h2 as the collector. Captures on h1's eth0 with tcpdump's own filter are
// the reference: the target must see exactly those frames, byte for byte.
// The provider is driven directly here; test/e2e drives it through the Pulumi CLI.
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { checkInputs } from "../../provider/dynamicAdapter";
import { packagedObject } from "../../provider/objects";
import { operations } from "../../provider/operations";
import { objectRemotePath } from "../../provider/remote/objectUpload";
import { closeAllSessions } from "../../provider/remote/ssh";
import { CONFIG_MAP } from "../../provider/trafficMirror/codec";
import { tcHandle, trafficMirrorKind as mirror } from "../../provider/trafficMirror/lifecycle";
import { filterKey, trafficMirrorSchema, type TrafficMirrorInputs, type TrafficMirrorOutputs } from "../../provider/trafficMirror/schema";
import { checksumsValid, dissect, ETH_P, IPPROTO } from "../kernel/packets";
import { expectRevertedByHost, guardFiles, watchGuards } from "./guards";
import { createLab, type Lab, type LabHost, type Run } from "./lab";
import { slipFilterIn } from "./mirrorByHand";
import { tcpdumpListening } from "./traffic";

let lab: Lab;
let privateKey: string;
let h1: LabHost;
let h2: LabHost;
let workDir: string;
const servers: Run[] = [];

const PIN = "/sys/fs/bpf/bpfleet/traffic-mirror/mir";
const TARGET = "mir0";
const TARGET_PEER = "mir0p";
const HTTP_FILTERS = [
  { protocol: "tcp", destinationPort: 80 },
  { protocol: "tcp", sourcePort: 80 },
];

function inputs(host: LabHost, patch: Record<string, unknown> = {}): TrafficMirrorInputs {
  const result = checkInputs(trafficMirrorSchema, {
    host: { address: host.address, hostKey: host.hostKey, connectTimeoutMs: 3000, commandTimeoutMs: 60_000 },
    credentials: { privateKey },
    interface: "eth0",
    name: "mir",
    direction: "ingress",
    filters: HTTP_FILTERS,
    target: { interface: TARGET },
    ...patch,
  });
  if (!result.inputs) throw new Error(JSON.stringify(result.failures));
  return result.inputs as TrafficMirrorInputs;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function inHostText(host: LabHost, argv: string[]): Promise<string> {
  return String((await lab.inHost(host, argv)).stdout).trim();
}

async function pinsOn(host: LabHost): Promise<string> {
  return inHostText(host, ["sh", "-c", "ls -R /sys/fs/bpf/bpfleet 2>/dev/null || true"]);
}

interface HookFilter {
  pref: number;
  handle: string;
  name?: string;
}

async function tcFiltersOn(host: LabHost, hook: "ingress" | "egress"): Promise<HookFilter[]> {
  const out = await inHostText(host, ["tc", "-j", "filter", "show", "dev", "eth0", hook]);
  return (JSON.parse(out || "[]") as { pref: number; options?: { handle: string; prog?: { name?: string } } }[])
    .filter((f) => f.options)
    .map((f) => ({ pref: f.pref, handle: f.options!.handle, name: f.options!.prog?.name }));
}

/** The name tc shows for each of the hook's filters (`bpf_name`: the pin's file name for a pinned program). */
async function tcFilterNames(host: LabHost, hook: "ingress" | "egress"): Promise<string[]> {
  const out = await inHostText(host, ["tc", "-j", "filter", "show", "dev", "eth0", hook]);
  return (JSON.parse(out || "[]") as { options?: { bpf_name?: string } }[]).filter((f) => f.options).map((f) => f.options!.bpf_name ?? "");
}

async function hasClsact(host: LabHost): Promise<boolean> {
  return (await inHostText(host, ["tc", "qdisc", "show", "dev", "eth0"])).includes("clsact");
}

async function linksOn(host: LabHost): Promise<{ ifname: string; ifalias?: string }[]> {
  return JSON.parse(await inHostText(host, ["ip", "-j", "link", "show"])) as { ifname: string; ifalias?: string }[];
}

// ---------------------------------------------------------------- captures

function readPcap(path: string): Buffer[] {
  const data = readFileSync(path);
  const frames: Buffer[] = [];
  for (let off = 24; off + 16 <= data.length; ) {
    const captured = data.readUInt32LE(off + 8);
    frames.push(Buffer.from(data.subarray(off + 16, off + 16 + captured)));
    off += 16 + captured;
  }
  return frames;
}

let captures = 0;

/** Starts tcpdump in a host (or client); the returned function stops it and returns the frames. */
async function startCapture(
  where: { host: LabHost } | { client: string },
  iface: string,
  direction: "in" | "out" | "inout",
  filter: string[] = [],
): Promise<() => Promise<Buffer[]>> {
  const file = join(workDir, `capture-${++captures}.pcap`);
  const argv = ["tcpdump", "-i", iface, "-Q", direction, "-U", "-n", "--immediate-mode", "-s", "0", "-w", file, ...filter];
  const proc = "host" in where ? lab.inHost(where.host, argv, { reject: false }) : lab.inClient(where.client, argv, { reject: false });
  const stop = await tcpdumpListening(proc, iface, 500);
  return async () => {
    await stop();
    return readPcap(file);
  };
}

const hexSorted = (frames: Buffer[]) => frames.map((f) => f.toString("hex")).sort();

// ---------------------------------------------------------------- traffic

interface TrafficResult {
  /** What the HTTP-like server echoed back, per exchange. */
  replies: string[];
  requests: string[];
}

/** HTTP-like exchanges to h1:80 (echoed), and traffic no HTTP filter matches: TCP 8080, UDP 5353, ping. */
async function traffic(exchanges = 4): Promise<TrafficResult> {
  const c1 = lab.clients[0]!;
  const requests: string[] = [];
  const replies: string[] = [];
  for (let i = 0; i < exchanges; i++) {
    const request = `GET /item/${i} HTTP/1.0\r\nHost: h1\r\nX-Token: ${Math.random().toString(36).slice(2)}\r\n\r\n`;
    requests.push(request);
    const r = await lab.inClient(c1, ["socat", "-t", "1", "-", `TCP:${h1.address}:80`], { input: request });
    replies.push(String(r.stdout));
  }
  await lab.inClient(c1, ["socat", "-t", "1", "-", `TCP:${h1.address}:8080`], { input: "not http\n" });
  for (let i = 0; i < 3; i++) await lab.inClient(c1, ["sh", "-c", `echo dns-ish | socat -u STDIN UDP4-SENDTO:${h1.address}:5353`]);
  await lab.inClient(c1, ["ping", "-n", "-c", "2", "-i", "0.2", "-W", "1", h1.address], { reject: false });
  return { requests, replies };
}

/** The original traffic is intact: every echo is what was sent, every frame the client got has right checksums. */
function expectUnaffected(result: TrafficResult, clientFrames: Buffer[]): void {
  // execa drops one final newline from stdout.
  expect(result.replies).toEqual(result.requests.map((r) => r.replace(/\r?\n$/, "")));
  const fromServer = clientFrames.filter((f) => dissect(f).protocol === IPPROTO.TCP);
  expect(fromServer.length).toBeGreaterThan(result.requests.length * 3);
  for (const frame of fromServer) expect(checksumsValid(frame), frame.toString("hex")).toEqual({ ipv4Header: true, l4: true });
}

/** Runs traffic with captures on h1's eth0 (tcpdump filter), the target, and the client. */
async function mirrorRound(o: {
  direction: "in" | "out" | "inout";
  reference: string[];
  target: { host: LabHost; iface: string };
}): Promise<{ reference: Buffer[]; copies: Buffer[]; all: Buffer[]; result: TrafficResult; client: Buffer[] }> {
  const stopReference = await startCapture({ host: h1 }, "eth0", o.direction, o.reference);
  const stopAll = await startCapture({ host: h1 }, "eth0", "inout");
  const stopCopies = await startCapture({ host: o.target.host }, o.target.iface, "in");
  const stopClient = await startCapture({ client: lab.clients[0]!.name }, "eth0", "in", ["tcp", "port", "80"]);
  const result = await traffic();
  const [reference, all, copies, client] = [await stopReference(), await stopAll(), await stopCopies(), await stopClient()];
  return { reference, copies, all, result, client };
}

// ---------------------------------------------------------------- setup

beforeAll(async () => {
  lab = await createLab("mirlab", { hosts: 2, clients: 1 });
  privateKey = readFileSync(lab.privateKeyPath, "utf8");
  [h1, h2] = lab.hosts as [LabHost, LabHost];
  workDir = mkdtempSync(join(lab.dir, "mirror-"));
  // The local target: a veth pair inside h1 (this kernel has no dummy driver),
  // IPv6 off so that nothing but copies crosses it.
  await lab.inHost(h1, ["ip", "link", "add", TARGET, "type", "veth", "peer", "name", TARGET_PEER]);
  for (const dev of [TARGET, TARGET_PEER]) {
    await lab.inHost(h1, ["sysctl", "-qw", `net.ipv6.conf.${dev}.disable_ipv6=1`]);
    await lab.inHost(h1, ["ip", "link", "set", dev, "up"]);
  }
  // Egress copies of h1's own packets still carry CHECKSUM_PARTIAL at the TC
  // hook (the L4 checksum is completed later, on the way to eth0). With TX
  // checksum offload off on the target, the kernel completes the copies' too,
  // as it would for a NIC without offload; a capture tool then sees the bytes
  // that went out of eth0.
  await lab.inHost(h1, ["ethtool", "-K", TARGET, "tx", "off"]);
  // An HTTP-like echo server on 80 and another service on 8080.
  for (const port of [80, 8080]) {
    servers.push(lab.inHost(h1, ["socat", `TCP-LISTEN:${port},reuseaddr,fork`, "EXEC:cat"], { reject: false }));
  }
  await sleep(300);
}, 600_000);

afterAll(async () => {
  for (const s of servers) s.kill("SIGTERM");
  closeAllSessions();
  if (workDir) rmSync(workDir, { recursive: true, force: true });
  await lab?.destroy();
});

const HTTP = ["tcp", "port", "80"];

describe("TrafficMirror to a local interface", () => {
  let created: { id: string; outs: TrafficMirrorOutputs };

  it("create, ingress: the target sees exactly the tcp/80 frames h1 received, byte for byte", async () => {
    expect(await hasClsact(h1)).toBe(false);
    created = await mirror.create(inputs(h1));
    expect(created.id).toBe(`root@${h1.address}/traffic-mirror/mir`);
    expect(created.outs).toMatchObject({ direction: "ingress", targetInterface: TARGET, qdiscCreated: true, sampleRate: 1 });
    expect(Object.keys(created.outs.filters)).toEqual(["tcp and dst port 80", "tcp and src port 80"]);
    expect(await tcFiltersOn(h1, "ingress")).toEqual([{ pref: 1, handle: `0x${tcHandle("mir").toString(16)}`, name: "tc_mirror" }]);
    expect(await tcFiltersOn(h1, "egress")).toEqual([]);
    // Attached from the final pin, not the staged one ("prog_new"): hosts that reached one
    // configuration by different paths show one spelling in `tc filter show`.
    expect(await tcFilterNames(h1, "ingress")).toEqual(["prog:[*fsobj]"]);

    const round = await mirrorRound({ direction: "in", reference: HTTP, target: { host: h1, iface: TARGET_PEER } });
    expect(round.reference.length).toBeGreaterThanOrEqual(4 * 4);
    expect(hexSorted(round.copies)).toEqual(hexSorted(round.reference));
    // The other traffic was there, and none of it was copied.
    const seen = round.all.map(dissect);
    expect(seen.some((d) => d.protocol === IPPROTO.UDP)).toBe(true);
    expect(seen.some((d) => d.protocol === IPPROTO.ICMP)).toBe(true);
    expect(round.copies.every((f) => dissect(f).protocol === IPPROTO.TCP)).toBe(true);
    expectUnaffected(round.result, round.client);
  });

  it("read: counters count the copies", async () => {
    const read = await mirror.read(created.id, created.outs);
    expect(read!.outs.counters.mirroredPackets).toBeGreaterThanOrEqual(16);
    expect(read!.outs.counters.mirroredPackets).toBe(read!.outs.counters.matchedPackets);
    expect(read!.outs.counters.cloneFailures).toBe(0);
    expect(read!.inputs.filters).toEqual(created.outs.filters);
    expect(read!.inputs.target).toEqual({ interface: TARGET });
  });

  it("update to egress in place: the same program, now seeing what h1 sends", async () => {
    const outs = await mirror.update(created.id, created.outs, inputs(h1, { direction: "egress" }));
    expect(outs.programId).toBe(created.outs.programId);
    expect(outs.direction).toBe("egress");
    expect(await tcFiltersOn(h1, "ingress")).toEqual([]);
    expect((await tcFiltersOn(h1, "egress")).map((f) => f.name)).toEqual(["tc_mirror"]);
    const round = await mirrorRound({ direction: "out", reference: HTTP, target: { host: h1, iface: TARGET_PEER } });
    expect(round.reference.length).toBeGreaterThanOrEqual(4 * 4);
    expect(hexSorted(round.copies)).toEqual(hexSorted(round.reference));
    expectUnaffected(round.result, round.client);
    created = { id: created.id, outs };
  });

  it("update to both directions: requests and replies", async () => {
    const outs = await mirror.update(created.id, created.outs, inputs(h1, { direction: "both" }));
    expect(outs.direction).toBe("both");
    const round = await mirrorRound({ direction: "inout", reference: HTTP, target: { host: h1, iface: TARGET_PEER } });
    expect(round.reference.length).toBeGreaterThanOrEqual(8 * 4);
    expect(hexSorted(round.copies)).toEqual(hexSorted(round.reference));
    expectUnaffected(round.result, round.client);
    created = { id: created.id, outs };
  });

  it("update filters in place: UDP 5353 only, and sampling 1 in 3", async () => {
    const outs = await mirror.update(created.id, created.outs, inputs(h1, { direction: "both", filters: [{ protocol: "udp", destinationPort: 5353 }], sampleRate: 3 }));
    expect(Object.keys(outs.filters)).toEqual(["udp and dst port 5353"]);
    expect(outs.programId).toBe(created.outs.programId);
    const stopCopies = await startCapture({ host: h1 }, TARGET_PEER, "in");
    for (let round = 0; round < 3; round++) await traffic(1);
    const copies = await stopCopies();
    // 9 datagrams, 1 in 3 per CPU: at least 1, at most 9/3 rounded up per CPU.
    expect(copies.length).toBeGreaterThanOrEqual(1);
    expect(copies.length).toBeLessThanOrEqual(5);
    expect(copies.every((f) => dissect(f).protocol === IPPROTO.UDP && f.readUInt16BE(dissect(f).l4Offset! + 2) === 5353)).toBe(true);
    const read = await mirror.read(created.id, outs);
    expect(read!.outs.counters.mirroredPackets - created.outs.counters.mirroredPackets).toBeLessThan(read!.outs.counters.matchedPackets - created.outs.counters.matchedPackets);
    created = { id: created.id, outs: await mirror.update(created.id, outs, inputs(h1, { direction: "both" })) };
  });

  it("read: a filter deleted by hand and a filter added by hand show up as drift; update restores both", async () => {
    const handle = `0x${tcHandle("mir").toString(16)}`;
    await lab.inHost(h1, ["tc", "filter", "del", "dev", "eth0", "egress", "prio", "1", "handle", handle, "bpf"]);
    // A filter slipped into the live set with bpftool (config, slot and the classifier the program matches with), so that it is really live.
    const live = await slipFilterIn(lab, h1, PIN, { protocol: "icmp" });
    expect(live.map(filterKey)).toEqual(["tcp and dst port 80", "tcp and src port 80", "icmp"]);

    const read = await mirror.read(created.id, created.outs);
    expect(read!.inputs.direction).toBe("ingress");
    expect(Object.keys(read!.inputs.filters)).toEqual(["icmp", "tcp and dst port 80", "tcp and src port 80"]);
    const outs = await mirror.update(created.id, read!.outs, inputs(h1, { direction: "both" }));
    expect(outs.direction).toBe("both");
    expect(Object.keys(outs.filters)).toEqual(["tcp and dst port 80", "tcp and src port 80"]);
    expect((await tcFiltersOn(h1, "egress")).map((f) => f.name)).toEqual(["tc_mirror"]);
    created = { id: created.id, outs };
  });

  it("update: a new BPF object is swapped into both TC filters in place, against the same maps", async () => {
    const mapBefore = JSON.parse(await inHostText(h1, ["bpftool", "-j", "map", "show", "pinned", `${PIN}/maps/${CONFIG_MAP}`])) as { id: number };
    const stale = { ...created.outs, objectSha256: "0".repeat(64) };
    const outs = await mirror.update(created.id, stale, inputs(h1, { direction: "both" }));
    expect(outs.programId).not.toBe(created.outs.programId);
    expect(outs.objectSha256).toBe(packagedObject("tc_mirror").sha256);
    expect(outs.direction).toBe("both");
    const mapAfter = JSON.parse(await inHostText(h1, ["bpftool", "-j", "map", "show", "pinned", `${PIN}/maps/${CONFIG_MAP}`])) as { id: number };
    expect(mapAfter.id).toBe(mapBefore.id);
    const progs = JSON.parse(await inHostText(h1, ["tc", "-j", "filter", "show", "dev", "eth0", "ingress"])) as { options?: { prog?: { id: number } } }[];
    expect(progs.filter((p) => p.options).map((p) => p.options!.prog!.id)).toEqual([outs.programId]);
    expect(await pinsOn(h1)).not.toMatch(/prog_new|maps_staged/);
    expect([await tcFilterNames(h1, "ingress"), await tcFilterNames(h1, "egress")]).toEqual([["prog:[*fsobj]"], ["prog:[*fsobj]"]]);
    const round = await mirrorRound({ direction: "inout", reference: HTTP, target: { host: h1, iface: TARGET_PEER } });
    expect(hexSorted(round.copies)).toEqual(hexSorted(round.reference));
    created = { id: created.id, outs };
  });

  it("hands every packet on: a TC filter after the mirror still drops what it drops", async () => {
    // A second program at a later priority that drops UDP to port 7777. Had the
    // mirror returned TC_ACT_OK, it would never run.
    const dir = mkdtempSync(join(workDir, "drop-"));
    const src = join(dir, "drop7777.bpf.c");
    writeFileSync(
      src,
      `#include <linux/bpf.h>\n#include <linux/pkt_cls.h>\n#include <bpf/bpf_helpers.h>\n` +
        `SEC("tc") int drop7777(struct __sk_buff *skb) {\n` +
        `  unsigned char b[26];\n` +
        `  if (bpf_skb_load_bytes(skb, 12, b, sizeof(b))) return TC_ACT_OK;\n` +
        `  /* IPv4 without options, UDP, destination port 7777 (0x1e61) */\n` +
        `  if (b[0] == 0x08 && b[1] == 0x00 && b[2] == 0x45 && b[11] == 17 && b[24] == 0x1e && b[25] == 0x61) return TC_ACT_SHOT;\n` +
        `  return TC_ACT_OK;\n}\nchar LICENSE[] SEC("license") = "GPL";\n`,
    );
    const multiarch = execFileSync("gcc", ["-dumpmachine"]).toString().trim();
    execFileSync("clang", ["-O2", "-g", "-target", "bpf", "-I", `/usr/include/${multiarch}`, "-c", src, "-o", join(dir, "drop7777.bpf.o")]);
    const outs = await mirror.update(created.id, created.outs, inputs(h1, { direction: "both", filters: [{ protocol: "udp" }] }));
    await lab.inHost(h1, ["tc", "filter", "add", "dev", "eth0", "ingress", "prio", "200", "handle", "0x7", "bpf", "da", "obj", join(dir, "drop7777.bpf.o"), "sec", "tc"]);
    try {
      const receiver = lab.inHost(h1, ["timeout", "3", "socat", "-u", "UDP4-RECV:7777", "STDOUT"], { reject: false });
      const control = lab.inHost(h1, ["timeout", "3", "socat", "-u", "UDP4-RECV:7778", "STDOUT"], { reject: false });
      const stopCopies = await startCapture({ host: h1 }, TARGET_PEER, "in", ["udp", "and", "portrange", "7777-7778"]);
      await sleep(300);
      for (const port of [7777, 7778]) {
        await lab.inClient(lab.clients[0]!, ["sh", "-c", `echo token-${port} | socat -u STDIN UDP4-SENDTO:${h1.address}:${port}`]);
      }
      const [received, controlled, copies] = [await receiver, await control, await stopCopies()];
      expect(String(received.stdout)).not.toContain("token-7777");
      expect(String(controlled.stdout)).toContain("token-7778");
      // The mirror saw both (it runs first), the later filter dropped one.
      expect(copies.map((f) => f.readUInt16BE(dissect(f).l4Offset! + 2)).sort()).toEqual([7777, 7778]);
    } finally {
      await lab.inHost(h1, ["tc", "filter", "del", "dev", "eth0", "ingress", "prio", "200", "handle", "0x7", "bpf"]);
    }
    created = { id: created.id, outs: await mirror.update(created.id, outs, inputs(h1, { direction: "both" })) };
  });
});

describe("TrafficMirror through a VXLAN tunnel to a collector", () => {
  let created: { id: string; outs: TrafficMirrorOutputs };
  const vxlan = (vni: number) => ({ tunnel: { type: "vxlan", remote: h2.address, vni } });

  beforeAll(async () => {
    // The collector: h2 decapsulates VNI 42 and 43 on devices of its own.
    for (const [dev, vni] of [["col42", 42], ["col43", 43]] as const) {
      await lab.inHost(h2, ["ip", "link", "add", dev, "type", "vxlan", "id", String(vni), "dstport", "4789", "local", h2.address, "nolearning"]);
      await lab.inHost(h2, ["sysctl", "-qw", `net.ipv6.conf.${dev}.disable_ipv6=1`]);
      await lab.inHost(h2, ["ip", "link", "set", dev, "up"]);
    }
  });

  it("update from the local target: the tunnel exists before the mirror points at it, copies arrive at the collector", async () => {
    const local = await mirror.create(inputs(h1, { direction: "both" }));
    const outs = await mirror.update(local.id, local.outs, inputs(h1, { direction: "both", target: vxlan(42) }));
    expect(outs.programId).toBe(local.outs.programId);
    expect(outs.targetInterface).toMatch(/^bfm[0-9a-f]{12}$/);
    expect(outs.target).toEqual({ tunnel: { type: "vxlan", remote: h2.address, vni: 42, port: 4789 } });
    const tunnel = (await linksOn(h1)).find((l) => l.ifname === outs.targetInterface);
    expect(tunnel?.ifalias).toBe("bpfleet traffic-mirror mir");
    created = { id: local.id, outs };

    const round = await mirrorRound({ direction: "inout", reference: HTTP, target: { host: h2, iface: "col42" } });
    expect(round.reference.length).toBeGreaterThanOrEqual(8 * 4);
    expect(hexSorted(round.copies)).toEqual(hexSorted(round.reference));
    expectUnaffected(round.result, round.client);
  });

  it("with no filters in both directions, its own encapsulated copies are never mirrored again", async () => {
    // The tunnel leaves through eth0, the very interface mirrored on egress.
    const outs = await mirror.update(created.id, created.outs, inputs(h1, { direction: "both", filters: [], target: vxlan(42) }));
    const before = (await mirror.read(created.id, outs))!.outs.counters;
    const round = await mirrorRound({ direction: "inout", reference: HTTP, target: { host: h2, iface: "col42" } });
    const after = (await mirror.read(created.id, outs))!.outs.counters;
    const isVxlanToCollector = (f: Buffer) => {
      const d = dissect(f);
      return d.etherType === ETH_P.IP && d.protocol === IPPROTO.UDP && f.readUInt16BE(d.l4Offset! + 2) === 4789;
    };
    expect(round.all.filter(isVxlanToCollector).length).toBeGreaterThan(0);
    expect(round.copies.filter(isVxlanToCollector)).toEqual([]);
    // Every HTTP frame arrived once, not once per nesting level.
    const httpCopies = round.copies.filter((f) => { const d = dissect(f); return d.protocol === IPPROTO.TCP && (f.readUInt16BE(d.l4Offset!) === 80 || f.readUInt16BE(d.l4Offset! + 2) === 80); });
    expect(hexSorted(httpCopies)).toEqual(hexSorted(round.reference));
    expect(after.cloneFailures).toBe(before.cloneFailures);
    created = { id: created.id, outs: await mirror.update(created.id, outs, inputs(h1, { direction: "both", target: vxlan(42) })) };
  });

  it("a new VNI makes a new tunnel before the old one goes", async () => {
    const old = created.outs.targetInterface;
    const outs = await mirror.update(created.id, created.outs, inputs(h1, { direction: "both", target: vxlan(43) }));
    expect(outs.targetInterface).not.toBe(old);
    const names = (await linksOn(h1)).map((l) => l.ifname);
    expect(names).toContain(outs.targetInterface);
    expect(names).not.toContain(old);
    const round = await mirrorRound({ direction: "inout", reference: HTTP, target: { host: h2, iface: "col43" } });
    expect(hexSorted(round.copies)).toEqual(hexSorted(round.reference));
    created = { id: created.id, outs };
  });

  it("read: a tunnel deleted by hand shows up as drift; update makes it again", async () => {
    const ifindex = created.outs.targetIfindex;
    await lab.inHost(h1, ["ip", "link", "del", "dev", created.outs.targetInterface]);
    const read = await mirror.read(created.id, created.outs);
    expect(read!.inputs.target).toEqual({ interface: `(ifindex ${ifindex} is gone)` });
    const outs = await mirror.update(created.id, read!.outs, inputs(h1, { direction: "both", target: vxlan(43) }));
    expect(outs.target).toEqual({ tunnel: { type: "vxlan", remote: h2.address, vni: 43, port: 4789 } });
    expect(outs.targetIfindex).not.toBe(ifindex);
    const round = await mirrorRound({ direction: "inout", reference: HTTP, target: { host: h2, iface: "col43" } });
    expect(hexSorted(round.copies)).toEqual(hexSorted(round.reference));
    created = { id: created.id, outs };
  });

  it("delete removes only its filters, its tunnel and its pins", async () => {
    // Somebody else's filter and device on the same host.
    const empty = "/tmp/foreign_tc.bpf.o";
    await lab.putFile(h1, empty, packagedObject("empty_tc").bytes);
    await lab.inHost(h1, ["tc", "filter", "add", "dev", "eth0", "ingress", "prio", "100", "handle", "0x1", "bpf", "da", "obj", empty, "sec", "tc"]);
    await lab.inHost(h1, ["ip", "link", "add", "other0", "type", "vxlan", "id", "99", "remote", h2.address, "dstport", "4789"]);
    const tunnel = created.outs.targetInterface;
    await mirror.delete(created.id, created.outs);
    expect(await pinsOn(h1)).not.toContain("mir");
    const names = (await linksOn(h1)).map((l) => l.ifname);
    expect(names).not.toContain(tunnel);
    expect(names).toContain("other0");
    expect(names).toContain(TARGET);
    expect(await tcFiltersOn(h1, "ingress")).toEqual([{ pref: 100, handle: "0x1", name: "empty_tc" }]);
    expect(await tcFiltersOn(h1, "egress")).toEqual([]);
    // We created the clsact qdisc, but another filter still needs it.
    expect(await hasClsact(h1)).toBe(true);
    // Deleting again finds nothing to do; read says it is gone.
    await mirror.delete(created.id, created.outs);
    expect(await mirror.read(created.id, created.outs)).toBeUndefined();

    await lab.inHost(h1, ["tc", "filter", "del", "dev", "eth0", "ingress", "prio", "100", "handle", "0x1", "bpf"]);
    await lab.inHost(h1, ["ip", "link", "del", "other0"]);
    await lab.inHost(h1, ["tc", "qdisc", "del", "dev", "eth0", "clsact"]);
  });

  it("the clsact qdisc it created goes with the last filter", async () => {
    const made = await mirror.create(inputs(h1, { target: vxlan(42) }));
    expect(made.outs.qdiscCreated).toBe(true);
    await mirror.delete(made.id, made.outs);
    expect(await hasClsact(h1)).toBe(false);
    expect((await linksOn(h1)).filter((l) => l.ifalias?.startsWith("bpfleet"))).toEqual([]);
  });

  it("a clsact qdisc that was there before stays", async () => {
    await lab.inHost(h1, ["tc", "qdisc", "add", "dev", "eth0", "clsact"]);
    const made = await mirror.create(inputs(h1, { target: vxlan(42) }));
    expect(made.outs.qdiscCreated).toBe(false);
    await mirror.delete(made.id, made.outs);
    expect(await hasClsact(h1)).toBe(true);
    await lab.inHost(h1, ["tc", "qdisc", "del", "dev", "eth0", "clsact"]);
  });
});

describe("TrafficMirror through a GRE (gretap) tunnel", () => {
  it("mirrors to the collector where the kernel has gretap, and otherwise fails clearly, changing nothing", async () => {
    const probe = await lab.inHost(h2, ["ip", "link", "add", "grecol", "type", "gretap", "local", h2.address, "remote", h1.address, "key", "5"], { reject: false });
    const gretap = { tunnel: { type: "gretap", remote: h2.address, local: h1.address, key: 5 } };
    if (probe.exitCode !== 0) {
      // This VM's kernel is built without CONFIG_NET_IPGRE.
      await expect(mirror.create(inputs(h1, { direction: "both", target: gretap }))).rejects.toThrow(/could not create the gretap tunnel .* no gretap support \(CONFIG_NET_IPGRE\)/);
      expect(await pinsOn(h1)).toBe("");
      expect(await hasClsact(h1)).toBe(false);
      expect((await linksOn(h1)).filter((l) => l.ifname.startsWith("bfm"))).toEqual([]);
      return;
    }
    await lab.inHost(h2, ["sysctl", "-qw", "net.ipv6.conf.grecol.disable_ipv6=1"]);
    await lab.inHost(h2, ["ip", "link", "set", "grecol", "up"]);
    const made = await mirror.create(inputs(h1, { direction: "both", target: gretap }));
    try {
      const round = await mirrorRound({ direction: "inout", reference: HTTP, target: { host: h2, iface: "grecol" } });
      expect(hexSorted(round.copies)).toEqual(hexSorted(round.reference));
    } finally {
      await mirror.delete(made.id, made.outs);
      await lab.inHost(h2, ["ip", "link", "del", "grecol"]);
    }
  });
});

describe("TrafficMirror refuses, and leaves the host as it was", () => {
  async function expectUntouched(): Promise<void> {
    expect(await pinsOn(h1)).toBe("");
    expect(await hasClsact(h1)).toBe(false);
    expect((await linksOn(h1)).filter((l) => l.ifname.startsWith("bfm"))).toEqual([]);
  }

  it.each([
    ["a target interface that does not exist", { target: { interface: "nosuch0" } }, /target interface "nosuch0" does not exist on the host \(it has: .*eth0/],
    ["the mirrored interface as its own target (a loop)", { target: { interface: "eth0" } }, /is the mirrored interface eth0 itself.*loop/],
    ["loopback as the target", { target: { interface: "lo" } }, /"lo" would hand every copy back/],
    ["a mirrored interface that does not exist", { interface: "eth9" }, /interface "eth9" does not exist on the host/],
  ])("%s", async (_name, patch, message) => {
    await expect(mirror.create(inputs(h1, { name: "bad", ...patch }))).rejects.toThrow(message);
    await expectUntouched();
  });

  it("a target interface that is down", async () => {
    await lab.inHost(h1, ["ip", "link", "set", TARGET, "down"]);
    try {
      await expect(mirror.create(inputs(h1, { name: "bad" }))).rejects.toThrow(/target interface "mir0" is down/);
      await expectUntouched();
    } finally {
      await lab.inHost(h1, ["ip", "link", "set", TARGET, "up"]);
    }
  });

  it("a priority and handle taken by a filter it did not attach", async () => {
    const empty = "/tmp/foreign_tc.bpf.o";
    await lab.putFile(h1, empty, packagedObject("empty_tc").bytes);
    await lab.inHost(h1, ["tc", "qdisc", "add", "dev", "eth0", "clsact"]);
    await lab.inHost(h1, ["tc", "filter", "add", "dev", "eth0", "egress", "prio", "1", "handle", `0x${tcHandle("bad").toString(16)}`, "bpf", "da", "obj", empty, "sec", "tc"]);
    try {
      await expect(mirror.create(inputs(h1, { name: "bad" }))).rejects.toThrow(/eth0 egress already has a bpf filter at priority 1 .*empty_tc.*did not attach/);
      expect(await pinsOn(h1)).toBe("");
      expect((await tcFiltersOn(h1, "egress")).map((f) => f.name)).toEqual(["empty_tc"]);
    } finally {
      await lab.inHost(h1, ["tc", "qdisc", "del", "dev", "eth0", "clsact"]);
    }
  });
});

describe("TrafficMirror delete when the host cannot list its filters", () => {
  // Before, a failed listing read as "no filters": the pins went while the filter stayed
  // attached, running a program no pin named any more, and the delete reported success.
  const escaped = (text: string) => text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");

  it("fails naming the host, the resource and the step, leaves the host as before, and the next delete finishes", async () => {
    let steps: string[] = [];
    const ops = operations(mirror, (operation) => (steps = [...operation.steps]));
    // A clean delete first, to find the listing's step (the script that lists the hooks' filters).
    const clean = await ops.create(inputs(h1));
    await ops.delete(clean.id, clean.outs);
    const step = steps.findIndex((name) => name.startsWith("script (tc filter")) + 1;
    expect(step, `the delete's steps: ${steps.join("; ")}`).toBeGreaterThan(0);
    const listing = steps[step - 1]!;

    const made = await ops.create(inputs(h1));
    process.env.BPFLEET_FAULT = `${mirror.kind}:delete:${step}:fail`;
    let error: Error | undefined;
    try {
      await ops.delete(made.id, made.outs);
    } catch (err) {
      error = err as Error;
    } finally {
      delete process.env.BPFLEET_FAULT;
    }
    expect(error, "the delete reported success").toBeDefined();
    expect(error!.message.split("\n")[0]).toMatch(
      new RegExp(`^${escaped(made.id)}: delete failed at step ${step} \\(${escaped(listing)}\\): .*it is as before\\.$`),
    );
    expect(await pinsOn(h1)).toContain("mir");
    expect((await tcFiltersOn(h1, "ingress")).map((f) => f.name)).toEqual(["tc_mirror"]);

    await ops.delete(made.id, made.outs);
    expect(await pinsOn(h1)).not.toContain("mir");
    expect(await tcFiltersOn(h1, "ingress")).toEqual([]);
    expect(await hasClsact(h1)).toBe(false);
  });

  it("an interface that is gone has no filters: the delete still removes the pins", async () => {
    await lab.inHost(h1, ["ip", "link", "add", "gone0", "type", "veth", "peer", "name", "gone0p"]);
    for (const dev of ["gone0", "gone0p"]) await lab.inHost(h1, ["ip", "link", "set", dev, "up"]);
    const made = await mirror.create(inputs(h1, { interface: "gone0", name: "gone" }));
    await lab.inHost(h1, ["ip", "link", "del", "gone0"]);
    await mirror.delete(made.id, made.outs);
    expect(await pinsOn(h1)).not.toContain("gone");
  });
});

describe("TrafficMirror lockout guard (eth0 carries the provider's SSH session)", () => {
  let created: { id: string; outs: TrafficMirrorOutputs };

  async function ingressPrograms(): Promise<number[]> {
    const rows = JSON.parse(await inHostText(h1, ["tc", "-j", "filter", "show", "dev", "eth0", "ingress"])) as { options?: { handle: string; prog?: { id: number } } }[];
    return rows.filter((r) => r.options?.handle === `0x${tcHandle("grd").toString(16)}`).map((r) => r.options!.prog!.id);
  }

  it("a change on the management interface arms a revert with the window asked for, and disarms it once a fresh login works", async () => {
    const stop = await watchGuards(lab, h1);
    created = await mirror.create(inputs(h1, { name: "grd", lockoutRevertSeconds: 40 }));
    const outs = await mirror.update(created.id, created.outs, inputs(h1, { name: "grd", lockoutRevertSeconds: 40, sampleRate: 2 }));
    const armed = await stop();
    // One guard for the create, one for the update, both with the 40 s window.
    expect(armed.map((g) => g.seconds)).toEqual([40, 40]);
    for (const { token } of armed) expect(await guardFiles(lab, h1, token)).toEqual([]);
    expect(outs.sampleRate).toBe(2);
    expect(await ingressPrograms()).toEqual([created.outs.programId]);
    created = { id: created.id, outs };
  });

  it("with lockoutGuard: false the change is applied with no revert armed; a change that changes nothing arms none either", async () => {
    const stop = await watchGuards(lab, h1);
    const outs = await mirror.update(created.id, created.outs, inputs(h1, { name: "grd", lockoutGuard: false, sampleRate: 3 }));
    await mirror.update(created.id, outs, inputs(h1, { name: "grd", sampleRate: 3 }));
    expect(await stop()).toEqual([]);
    expect(outs.sampleRate).toBe(3);
    expect((await mirror.read(created.id, outs))!.outs.sampleRate).toBe(3);
    created = { id: created.id, outs };
  });

  describe("a BPF object that cuts new SSH logins", () => {
    // Stands in for a faulty upgrade: the mirror's maps, and a program that drops
    // IPv4 TCP SYNs to port 22. The provider's open session goes on; fresh logins fail.
    const cached = () => objectRemotePath(packagedObject("tc_mirror"));

    beforeAll(async () => {
      const src = join(workDir, "cutssh.bpf.c");
      writeFileSync(
        src,
        `#include <linux/bpf.h>\n#include <linux/pkt_cls.h>\n#include <bpf/bpf_helpers.h>\n#include "tc_mirror.h"\n` +
          `struct { __uint(type, BPF_MAP_TYPE_ARRAY); __uint(max_entries, 1); __type(key, __u32); __type(value, struct mirror_config); } mirror_config SEC(".maps");\n` +
          `struct { __uint(type, BPF_MAP_TYPE_ARRAY); __uint(max_entries, MIRROR_FILTER_SLOTS); __type(key, __u32); __type(value, struct mirror_filter); } mirror_filters SEC(".maps");\n` +
          `struct { __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY); __uint(max_entries, MIRROR_STAT_MAX); __type(key, __u32); __type(value, struct mirror_counter); } mirror_stats SEC(".maps");\n` +
          // The classifier's maps too: the provider loads an object against every map pinned before.
          `struct { __uint(type, BPF_MAP_TYPE_ARRAY); __uint(max_entries, MIRROR_FILTER_SETS); __type(key, __u32); __type(value, struct mirror_head); } mirror_heads SEC(".maps");\n` +
          `struct { __uint(type, BPF_MAP_TYPE_ARRAY); __uint(max_entries, MIRROR_FILTER_SETS * MIRROR_RANGES_PER_SET); __type(key, __u32); __type(value, struct mirror_ranges); } mirror_ranges SEC(".maps");\n` +
          `struct { __uint(type, BPF_MAP_TYPE_ARRAY); __uint(max_entries, MIRROR_FILTER_SETS * MIRROR_RANGES6_PER_SET); __type(key, __u32); __type(value, struct mirror_ranges6); } mirror_ranges6 SEC(".maps");\n` +
          `SEC("tc") int tc_mirror(struct __sk_buff *skb) {\n` +
          `  unsigned char b[36];\n` +
          `  if (bpf_skb_load_bytes(skb, 12, b, sizeof(b))) return TC_ACT_UNSPEC;\n` +
          `  /* IPv4 without options, TCP to port 22, SYN without ACK */\n` +
          `  if (b[0] == 0x08 && b[1] == 0x00 && b[2] == 0x45 && b[11] == 6 && b[24] == 0 && b[25] == 22 && (b[35] & 0x12) == 0x02) return TC_ACT_SHOT;\n` +
          `  return TC_ACT_UNSPEC;\n}\nchar LICENSE[] SEC("license") = "GPL";\n`,
      );
      const multiarch = execFileSync("gcc", ["-dumpmachine"]).toString().trim();
      const include = join(__dirname, "../../bpf/include");
      execFileSync("clang", ["-O2", "-g", "-target", "bpf", "-I", `/usr/include/${multiarch}`, "-I", include, "-c", src, "-o", join(workDir, "cutssh.bpf.o")]);
      // In the host's content-addressed cache, where the provider finds it and skips the upload.
      await lab.putFile(h1, cached(), readFileSync(join(workDir, "cutssh.bpf.o")));
    });

    afterAll(async () => {
      await lab.inHost(h1, ["rm", "-f", cached()]);
    });

    it("an upgrade to it is undone by the host within lockoutRevertSeconds: the previous program runs again, and the update fails saying so", async () => {
      const before = await mirror.read(created.id, created.outs);
      const stale = { ...created.outs, objectSha256: "0".repeat(64) };
      await expectRevertedByHost(
        lab,
        h1,
        10,
        () => mirror.update(created.id, stale, inputs(h1, { name: "grd", sampleRate: 3, lockoutRevertSeconds: 10 })),
        /fresh SSH login failed.*the mirror cuts the management path.*over eth0.*A fresh login worked again.*had fired: the change was undone/s,
      );
      const after = await mirror.read(created.id, created.outs);
      expect(after!.outs.programId).toBe(before!.outs.programId);
      expect(await ingressPrograms()).toEqual([before!.outs.programId]);
      expect(after!.inputs.filters).toEqual(before!.inputs.filters);
      expect(await pinsOn(h1)).not.toMatch(/prog_old|prog_new/);
    }, 90_000);

    it("a new mirror loading it is removed whole by the host", async () => {
      const stop = await watchGuards(lab, h1);
      await expect(mirror.create(inputs(h1, { name: "grdnew", lockoutRevertSeconds: 10 }))).rejects.toThrow(/fresh SSH login failed.*the change was undone/s);
      const armed = await stop();
      expect(armed).toHaveLength(1);
      expect(await guardFiles(lab, h1, armed[0]!.token)).toContain(".fired");
      expect(await pinsOn(h1)).not.toContain("grdnew");
      const handles = (await tcFiltersOn(h1, "ingress")).map((f) => f.handle);
      expect(handles).not.toContain(`0x${tcHandle("grdnew").toString(16)}`);
      expect(handles).toContain(`0x${tcHandle("grd").toString(16)}`);
      expect((await lab.ssh(h1, ["true"], { reject: false })).exitCode).toBe(0);
    }, 90_000);
  });

  it("delete removes it; the host is as before the describe", async () => {
    await mirror.delete(created.id, created.outs);
    expect(await pinsOn(h1)).not.toContain("grd");
    expect(await tcFiltersOn(h1, "ingress")).toEqual([]);
    expect(await hasClsact(h1)).toBe(false);
  });
});
