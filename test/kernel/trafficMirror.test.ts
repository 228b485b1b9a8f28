// bpf/tc_mirror.bpf.c in the running kernel: it loads as a TC program, its maps
// are the layout the provider writes (written here with the provider's own
// codec and planner), and BPF_PROG_TEST_RUN shows which crafted packets are
// copied. The copies really leave through a veth in the root namespace; one
// test captures them on its peer and compares bytes.
import { execFileSync, spawn } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  BOUNDS, CONFIG_MAP, CONFIG_SIZE, decodeConfig, FILTER_SETS, FILTER_SIZE, FILTERS_MAP, GUARD, HEAD_SIZE, HEADS_MAP, liveFilters, RANGES_MAP, RANGES_SIZE,
  RANGES6_MAP, RANGES6_SIZE, RANGES_DEPTH, RANGES6_DEPTH, SET_SLOTS, STAT, STATS_MAP, type TunnelGuard,
} from "../../provider/trafficMirror/codec";
import { mirrorOperations, planMirror } from "../../provider/trafficMirror/plan";
import { filterRecord, filterSchema, MAX_FILTERS, type MirrorFilter } from "../../provider/trafficMirror/schema";
import {
  arp, ETH_P, ethernet, icmpv4, icmpv6, IPPROTO, ipv4, ipv6, tcp, udp, type Ipv6Extension, type Segment, type VlanTag,
} from "./packets";
import { listMatches, randomFilters, randomPacket, type ModelPacket } from "../support/mirrorModel";
import { seededRandom } from "../support/seededRandom";
import { buildObjects, kernelTestsUnavailable, loadProgram, objectPath, sumCounters, type LoadedProgram } from "./progRun";

const unavailable = kernelTestsUnavailable();
if (unavailable) console.warn(`test/kernel/trafficMirror: skipped: ${unavailable}`);

const OBJ = objectPath("tc_mirror");
/** TC_ACT_UNSPEC (-1) as BPF_PROG_TEST_RUN reports the u32 return value. */
const TC_ACT_UNSPEC = 0xffffffff;

// A veth pair in the root namespace stands for the target (this kernel has no
// dummy driver). IPv6 is off on both ends so that nothing but our copies
// crosses it.
const VETH = `bfkm${process.pid % 100000}`;
const TARGET = `${VETH}a`;
const PEER = `${VETH}b`;
function removeVeth(): void {
  try {
    execFileSync("ip", ["link", "del", TARGET], { stdio: "ignore" });
  } catch {
    // already gone
  }
}

interface MirrorSetup {
  targetIfindex?: number;
  sampleRate?: number;
  guard?: TunnelGuard;
  filters?: MirrorFilter[];
}

let targetIfindex = 0;

/** Reads what the maps hold and applies the provider's own plan, as `bpftool batch` lines. */
async function configure(prog: LoadedProgram, setup: MirrorSetup): Promise<void> {
  const configEntry = (await prog.dumpMap(CONFIG_MAP))[0]!;
  const config = decodeConfig(configEntry.value);
  const slots = new Map((await prog.dumpMap(FILTERS_MAP)).map((e) => [e.key.readUInt32LE(0), Uint8Array.from(e.value)]));
  const filters = filterRecord((setup.filters ?? []).map((f) => filterSchema.parse(f)));
  const plan = planMirror(
    { targetIfindex: setup.targetIfindex ?? targetIfindex, sampleRate: setup.sampleRate ?? 1, guard: setup.guard, filters },
    { config, filters: liveFilters(config, slots) },
  );
  for (const op of mirrorOperations(plan, (m) => m)) {
    if (op.op !== "update") throw new Error("the planner only writes");
    await prog.updateMap(op.map, [{ key: Buffer.from(op.key), value: Buffer.from(op.value) }]);
  }
}

async function stat(prog: LoadedProgram, index: number): Promise<{ packets: bigint; bytes: bigint }> {
  return sumCounters(await prog.lookupPerCpu(STATS_MAP, Buffer.from([index, 0, 0, 0])));
}

/** Runs `frame` once; true when the program made a copy. Checks the promises made for every packet. */
async function mirrored(prog: LoadedProgram, frame: Buffer): Promise<boolean> {
  const before = await stat(prog, STAT.MIRRORED);
  const out = await prog.run(frame);
  expect(out.retval, "the verdict is always TC_ACT_UNSPEC").toBe(TC_ACT_UNSPEC);
  expect(out.dataOut.equals(frame), "the original is never changed").toBe(true);
  const after = await stat(prog, STAT.MIRRORED);
  expect(after.packets - before.packets).toBeLessThanOrEqual(1n);
  return after.packets > before.packets;
}

const eth4 = (payload: Buffer, vlans?: VlanTag[]) => ethernet({ etherType: ETH_P.IP, vlans, payload });
const eth6 = (payload: Buffer) => ethernet({ etherType: ETH_P.IPV6, payload });
const v4 = (src: string, dst: string, seg: Segment, vlans?: VlanTag[]) => eth4(ipv4({ src, dst, payload: seg }), vlans);
const v6 = (src: string, dst: string, seg: Segment) => eth6(ipv6({ src, dst, payload: seg }));
const TCP = (sport: number, dport: number) => tcp({ srcPort: sport, dstPort: dport, flags: { ack: true }, payload: Buffer.from("GET / HTTP/1.0\r\n\r\n") });
const UDP = (sport: number, dport: number) => udp({ srcPort: sport, dstPort: dport, payload: Buffer.from("probe") });
/** SCTP common header: ports, verification tag, checksum (not checked by anyone here). */
const SCTP = (sport: number, dport: number): Segment => ({
  protocol: 132,
  encode() {
    const b = Buffer.alloc(12);
    b.writeUInt16BE(sport, 0);
    b.writeUInt16BE(dport, 2);
    return b;
  },
});
const GRE = (): Segment => ({ protocol: 47, encode: () => Buffer.from([0, 0, 0x65, 0x58]) });
const ARP = () => ethernet({ dst: "ff:ff:ff:ff:ff:ff", etherType: ETH_P.ARP, payload: arp({ op: "request", senderMac: "02:00:00:00:00:01", senderIp: "192.0.2.1", targetIp: "192.0.2.2" }) });

/** A frame carrying what `p` describes; a port protocol without ports is a later fragment. */
function frameOf(p: ModelPacket): Buffer {
  if (p.family === 0) return ARP();
  const protocol = p.protocol!;
  const bytes = Buffer.alloc(8);
  if (p.sport !== undefined) {
    bytes.writeUInt16BE(p.sport, 0);
    bytes.writeUInt16BE(p.dport!, 2);
  }
  const later = p.sport === undefined && [6, 17, 132].includes(protocol);
  if (p.family === 4) return eth4(ipv4({ src: p.src!, dst: p.dst!, protocol, payload: bytes, fragmentOffset: later ? 185 : 0 }));
  if (later) return v6WithExtensions(p.src!, p.dst!, { protocol, encode: () => bytes }, [{ type: "fragment", fragmentOffset: 100 }]);
  return eth6(ipv6({ src: p.src!, dst: p.dst!, nextHeader: protocol, payload: bytes }));
}

/** IPv6 with extension headers in front of `seg`. */
function v6WithExtensions(src: string, dst: string, seg: Segment, extensions: Ipv6Extension[]): Buffer {
  return eth6(ipv6({ src, dst, payload: seg, extensions }));
}

// ---------------------------------------------------------------- pcap

/** Frames of a classic pcap file (what tcpdump -w writes). */
function readPcap(path: string): Buffer[] {
  const data = readFileSync(path);
  if (data.length < 24) return [];
  const frames: Buffer[] = [];
  for (let off = 24; off + 16 <= data.length; ) {
    const captured = data.readUInt32LE(off + 8);
    frames.push(data.subarray(off + 16, off + 16 + captured));
    off += 16 + captured;
  }
  return frames;
}

async function capture(iface: string, file: string, during: () => Promise<void>): Promise<Buffer[]> {
  const dump = spawn("tcpdump", ["-i", iface, "-Q", "in", "-U", "-n", "--immediate-mode", "-w", file], { stdio: ["ignore", "ignore", "pipe"] });
  await new Promise<void>((resolve, reject) => {
    dump.stderr.on("data", (d: Buffer) => d.toString().includes("listening on") && resolve());
    dump.once("exit", (code) => reject(new Error(`tcpdump exited with ${code}`)));
  });
  try {
    await during();
    await new Promise((r) => setTimeout(r, 300));
  } finally {
    dump.kill("SIGINT");
    await new Promise((r) => dump.once("exit", r));
  }
  return readPcap(file);
}

describe.skipIf(unavailable !== undefined)("tc_mirror", { timeout: 120_000 }, () => {
  beforeAll(async () => {
    await buildObjects();
    removeVeth();
    execFileSync("ip", ["link", "add", TARGET, "type", "veth", "peer", "name", PEER]);
    process.once("exit", removeVeth);
    for (const dev of [TARGET, PEER]) {
      execFileSync("sysctl", ["-qw", `net.ipv6.conf.${dev}.disable_ipv6=1`]);
      execFileSync("ip", ["link", "set", dev, "up"]);
    }
    targetIfindex = Number(readFileSync(`/sys/class/net/${TARGET}/ifindex`, "utf8"));
  }, 120_000);
  afterAll(removeVeth);

  describe("object", () => {
    let prog: LoadedProgram;
    beforeAll(async () => {
      prog = await loadProgram(OBJ, "tc");
    });
    afterAll(() => prog?.close());

    it("passes the verifier as a sched_cls program with its maps", async () => {
      const info = await prog.progInfo();
      expect(info).toMatchObject({ type: "sched_cls", name: "tc_mirror", jited: true });
      expect(prog.mapNames()).toEqual(["mirror_config", "mirror_filters", "mirror_heads", "mirror_ranges", "mirror_ranges6", "mirror_stats"]);
      expect(await prog.mapInfo(HEADS_MAP)).toMatchObject({ type: "array", bytes_key: 4, bytes_value: HEAD_SIZE, max_entries: 2 });
      expect(await prog.mapInfo(RANGES_MAP)).toMatchObject({ type: "array", bytes_key: 4, bytes_value: RANGES_SIZE, max_entries: 8 });
      expect(await prog.mapInfo(RANGES6_MAP)).toMatchObject({ type: "array", bytes_key: 4, bytes_value: RANGES6_SIZE, max_entries: 4 });
      expect(await prog.mapInfo("mirror_config")).toMatchObject({ type: "array", bytes_key: 4, bytes_value: CONFIG_SIZE, max_entries: 1 });
      // check() refuses more than MAX_FILTERS filters: the map holds two sets of that many (the codec's SET_SLOTS).
      expect(SET_SLOTS).toBe(MAX_FILTERS);
      expect(await prog.mapInfo("mirror_filters")).toMatchObject({ type: "array", bytes_key: 4, bytes_value: FILTER_SIZE, max_entries: FILTER_SETS * MAX_FILTERS });
      expect(await prog.mapInfo("mirror_stats")).toMatchObject({ type: "percpu_array", bytes_key: 4, bytes_value: 16, max_entries: 3 });
    });

    it("has the struct layouts of bpf/include/tc_mirror.h that codec.ts writes", () => {
      const btf = JSON.parse(execFileSync("bpftool", ["-j", "btf", "dump", "file", OBJ]).toString()) as {
        types: { kind: string; name?: string; size?: number; members?: { name: string; bits_offset: number }[] }[];
      };
      const layout = (name: string) => {
        const t = btf.types.find((x) => x.kind === "STRUCT" && x.name === name);
        return { size: t?.size, members: Object.fromEntries(t?.members?.map((m) => [m.name, m.bits_offset / 8]) ?? []) };
      };
      expect(layout("mirror_filter")).toEqual({
        size: FILTER_SIZE,
        members: { flags: 0, protocol: 4, pad: 5, sport_min: 8, sport_max: 10, dport_min: 12, dport_max: 14, src_addr: 16, src_mask: 32, dst_addr: 48, dst_mask: 64 },
      });
      expect(layout("mirror_config")).toEqual({
        size: CONFIG_SIZE,
        members: { target_ifindex: 0, active_set: 4, set_len: 8, sample_rate: 16, guard_kind: 20, guard_family: 21, guard_port: 22, guard_addr: 24 },
      });
      expect(layout("mirror_counter")).toEqual({ size: 16, members: { packets: 0, bytes: 8 } });
      expect(layout("mirror_head")).toEqual({
        size: HEAD_SIZE,
        members: { live: 0, any_packet: 8, v4: 16, v6: 24, proto_any: 32, ports_any: 40, sport_any: 48, dport_any: 56, src_any: 64, dst_any: 72, proto: 80 },
      });
      expect(layout("mirror_ranges")).toEqual({ size: RANGES_SIZE, members: { bound: 0, bits: 4 * BOUNDS, depth: RANGES_DEPTH, pad: RANGES_DEPTH + 4 } });
      expect(layout("mirror_ranges6")).toEqual({ size: RANGES6_SIZE, members: { bound: 0, bits: 16 * BOUNDS, depth: RANGES6_DEPTH, pad: RANGES6_DEPTH + 4 } });
    });

    it("mirrors nothing, and counts nothing, while no target is configured", async () => {
      expect(await mirrored(prog, v4("10.0.0.1", "10.0.0.2", TCP(1234, 80)))).toBe(false);
      expect(await stat(prog, STAT.MATCHED)).toEqual({ packets: 0n, bytes: 0n });
    });
  });

  describe("filters", () => {
    let prog: LoadedProgram;
    beforeAll(async () => {
      prog = await loadProgram(OBJ, "tc");
    });
    afterAll(() => prog?.close());

    const A4 = "192.0.2.7";
    const B4 = "198.51.100.9";
    const A6 = "2001:db8:1::7";
    const B6 = "2001:db8:2::9";

    // [case, filters, frame, mirrored?]
    const cases: [string, MirrorFilter[], () => Buffer, boolean][] = [
      // no filters: everything, IP or not
      ["no filters: IPv4 TCP", [], () => v4(A4, B4, TCP(1, 2)), true],
      ["no filters: IPv6 UDP", [], () => v6(A6, B6, UDP(1, 2)), true],
      ["no filters: ARP", [], () => ARP(), true],
      ["filter with no fields: ARP", [{}], () => ARP(), true],
      // protocol
      ["protocol udp: IPv4 UDP", [{ protocol: "udp" }], () => v4(A4, B4, UDP(5, 53)), true],
      ["protocol udp: IPv4 TCP", [{ protocol: "udp" }], () => v4(A4, B4, TCP(5, 53)), false],
      ["protocol udp: IPv6 UDP", [{ protocol: "udp" }], () => v6(A6, B6, UDP(5, 53)), true],
      ["protocol udp: IPv6 TCP", [{ protocol: "udp" }], () => v6(A6, B6, TCP(5, 53)), false],
      ["protocol udp: ARP", [{ protocol: "udp" }], () => ARP(), false],
      ["protocol icmp: IPv4 echo", [{ protocol: "icmp" }], () => v4(A4, B4, icmpv4({ type: 8, id: 1, sequence: 1 })), true],
      ["protocol icmpv6: IPv6 echo", [{ protocol: "icmpv6" }], () => v6(A6, B6, icmpv6({ type: 128, id: 1, sequence: 1 })), true],
      ["protocol icmpv6: IPv4 echo", [{ protocol: "icmpv6" }], () => v4(A4, B4, icmpv4({ type: 8, id: 1, sequence: 1 })), false],
      ["protocol 47 (GRE) by number: IPv4 GRE", [{ protocol: 47 }], () => v4(A4, B4, GRE()), true],
      // source prefix
      ["source 192.0.2.0/24: from 192.0.2.7", [{ source: "192.0.2.0/24" }], () => v4(A4, B4, UDP(1, 2)), true],
      ["source 192.0.2.0/24: from 192.0.3.7", [{ source: "192.0.2.0/24" }], () => v4("192.0.3.7", B4, UDP(1, 2)), false],
      ["source 192.0.2.0/24: to 192.0.2.7 (destination only)", [{ source: "192.0.2.0/24" }], () => v4(B4, A4, UDP(1, 2)), false],
      ["source 192.0.2.0/24: an IPv6 packet", [{ source: "192.0.2.0/24" }], () => v6(A6, B6, UDP(1, 2)), false],
      ["source 0.0.0.0/0: any IPv4", [{ source: "0.0.0.0/0" }], () => v4("203.0.113.1", B4, UDP(1, 2)), true],
      ["source 0.0.0.0/0: not IPv6", [{ source: "0.0.0.0/0" }], () => v6(A6, B6, UDP(1, 2)), false],
      ["source 2001:db8:1::/48: from 2001:db8:1::7", [{ source: "2001:db8:1::/48" }], () => v6(A6, B6, UDP(1, 2)), true],
      ["source 2001:db8:1::/48: from 2001:db8:2::9", [{ source: "2001:db8:1::/48" }], () => v6(B6, A6, UDP(1, 2)), false],
      ["source 2001:db8:1::/48: an IPv4 packet", [{ source: "2001:db8:1::/48" }], () => v4(A4, B4, UDP(1, 2)), false],
      ["source 2001:db8:1::7/128: exact", [{ source: "2001:db8:1::7" }], () => v6(A6, B6, UDP(1, 2)), true],
      ["source 2001:db8:1::7/128: neighbour", [{ source: "2001:db8:1::7" }], () => v6("2001:db8:1::6", B6, UDP(1, 2)), false],
      // destination prefix
      ["destination 198.51.100.0/25: to .9", [{ destination: "198.51.100.0/25" }], () => v4(A4, B4, TCP(1, 2)), true],
      ["destination 198.51.100.0/25: to .200", [{ destination: "198.51.100.0/25" }], () => v4(A4, "198.51.100.200", TCP(1, 2)), false],
      ["destination 198.51.100.0/25: from .9 (source only)", [{ destination: "198.51.100.0/25" }], () => v4(B4, A4, TCP(1, 2)), false],
      ["destination 2001:db8:2::/64: to 2001:db8:2::9", [{ destination: "2001:db8:2::/64" }], () => v6(A6, B6, TCP(1, 2)), true],
      ["destination 2001:db8:2::/64: to 2001:db8:2:1::9", [{ destination: "2001:db8:2::/64" }], () => v6(A6, "2001:db8:2:1::9", TCP(1, 2)), false],
      // source port range
      ["sourcePort 1000-2000: TCP from 1000", [{ sourcePort: "1000-2000" }], () => v4(A4, B4, TCP(1000, 80)), true],
      ["sourcePort 1000-2000: UDP from 2000", [{ sourcePort: "1000-2000" }], () => v4(A4, B4, UDP(2000, 80)), true],
      ["sourcePort 1000-2000: TCP from 999", [{ sourcePort: "1000-2000" }], () => v4(A4, B4, TCP(999, 80)), false],
      ["sourcePort 1000-2000: TCP from 2001", [{ sourcePort: "1000-2000" }], () => v4(A4, B4, TCP(2001, 80)), false],
      ["sourcePort 1000-2000: IPv6 UDP from 1500", [{ sourcePort: "1000-2000" }], () => v6(A6, B6, UDP(1500, 80)), true],
      ["sourcePort 1000-2000: IPv6 UDP from 3000", [{ sourcePort: "1000-2000" }], () => v6(A6, B6, UDP(3000, 80)), false],
      ["sourcePort 1000-2000: ICMP has no ports", [{ sourcePort: "1000-2000" }], () => v4(A4, B4, icmpv4({ type: 8, id: 1500, sequence: 1500 })), false],
      // destination port
      ["destinationPort 80: TCP to 80", [{ destinationPort: 80 }], () => v4(A4, B4, TCP(40000, 80)), true],
      ["destinationPort 80: TCP to 81", [{ destinationPort: 80 }], () => v4(A4, B4, TCP(40000, 81)), false],
      ["destinationPort 80: TCP from 80 (source only)", [{ destinationPort: 80 }], () => v4(A4, B4, TCP(80, 40000)), false],
      ["destinationPort 80: IPv6 TCP to 80", [{ destinationPort: 80 }], () => v6(A6, B6, TCP(40000, 80)), true],
      ["destinationPort 80: IPv6 TCP to 8080", [{ destinationPort: 80 }], () => v6(A6, B6, TCP(40000, 8080)), false],
      ["destinationPort 80: SCTP to 80", [{ destinationPort: 80 }], () => v4(A4, B4, SCTP(40000, 80)), true],
      ["destinationPort 1-1023: UDP to 53", [{ destinationPort: "1-1023" }], () => v6(A6, B6, UDP(40000, 53)), true],
      ["destinationPort 1-1023: UDP to 1024", [{ destinationPort: "1-1023" }], () => v6(A6, B6, UDP(40000, 1024)), false],
      // all fields together (AND)
      ...(() => {
        const web: MirrorFilter[] = [{ protocol: "tcp", source: "192.0.2.0/24", destination: "198.51.100.0/24", sourcePort: "1024-65535", destinationPort: 80 }];
        const web6: MirrorFilter[] = [{ protocol: "tcp", source: "2001:db8:1::/48", destination: "2001:db8:2::/48", sourcePort: "1024-65535", destinationPort: 80 }];
        return [
          ["all fields: IPv4 everything matches", web, () => v4(A4, B4, TCP(40000, 80)), true],
          ["all fields: IPv4 wrong protocol", web, () => v4(A4, B4, UDP(40000, 80)), false],
          ["all fields: IPv4 wrong source", web, () => v4("192.0.3.7", B4, TCP(40000, 80)), false],
          ["all fields: IPv4 wrong destination", web, () => v4(A4, "198.51.101.9", TCP(40000, 80)), false],
          ["all fields: IPv4 wrong source port", web, () => v4(A4, B4, TCP(1023, 80)), false],
          ["all fields: IPv4 wrong destination port", web, () => v4(A4, B4, TCP(40000, 443)), false],
          ["all fields: IPv6 everything matches", web6, () => v6(A6, B6, TCP(40000, 80)), true],
          ["all fields: IPv6 wrong protocol", web6, () => v6(A6, B6, UDP(40000, 80)), false],
          ["all fields: IPv6 wrong source", web6, () => v6("2001:db8:3::7", B6, TCP(40000, 80)), false],
          ["all fields: IPv6 wrong destination", web6, () => v6(A6, "2001:db8:3::9", TCP(40000, 80)), false],
          ["all fields: IPv6 wrong destination port", web6, () => v6(A6, B6, TCP(40000, 443)), false],
        ] as [string, MirrorFilter[], () => Buffer, boolean][];
      })(),
      // filters are ORed
      ["two filters: the first matches", [{ destinationPort: 80 }, { protocol: "udp" }], () => v4(A4, B4, TCP(1, 80)), true],
      ["two filters: the second matches", [{ destinationPort: 80 }, { protocol: "udp" }], () => v4(A4, B4, UDP(1, 53)), true],
      ["two filters: neither matches", [{ destinationPort: 80 }, { protocol: "udp" }], () => v4(A4, B4, TCP(1, 443)), false],
      // header variants
      ["802.1Q-tagged IPv4 TCP to 80", [{ protocol: "tcp", destinationPort: 80 }], () => v4(A4, B4, TCP(1, 80), [{ vid: 100 }]), true],
      ["IPv4 with options, TCP to 80", [{ destinationPort: 80 }], () => eth4(ipv4({ src: A4, dst: B4, payload: TCP(1, 80), options: Buffer.from([0x94, 0x04, 0, 0]) })), true],
      ["IPv4 later fragment: no ports to match", [{ protocol: "udp", destinationPort: 53 }], () => eth4(ipv4({ src: A4, dst: B4, protocol: 17, fragmentOffset: 185, payload: Buffer.alloc(64, 0xab) })), false],
      ["IPv4 later fragment: protocol and address still match", [{ protocol: "udp", source: "192.0.2.0/24" }], () => eth4(ipv4({ src: A4, dst: B4, protocol: 17, fragmentOffset: 185, payload: Buffer.alloc(64, 0xab) })), true],
      ["IPv4 first fragment carries the ports", [{ destinationPort: 53 }], () => eth4(ipv4({ src: A4, dst: B4, payload: UDP(1, 53), moreFragments: true })), true],
      ["IPv6 hop-by-hop, then TCP to 80", [{ protocol: "tcp", destinationPort: 80 }], () => v6WithExtensions(A6, B6, TCP(1, 80), [{ type: "hop-by-hop" }]), true],
      ["IPv6 hop-by-hop + destination options, then UDP to 53", [{ protocol: "udp", destinationPort: 53 }], () => v6WithExtensions(A6, B6, UDP(1, 53), [{ type: "hop-by-hop" }, { type: "destination" }]), true],
      ["IPv6 first fragment, UDP to 53", [{ destinationPort: 53 }], () => v6WithExtensions(A6, B6, UDP(1, 53), [{ type: "fragment" }]), true],
      ["IPv6 later fragment: no ports to match", [{ destinationPort: 53 }], () => v6WithExtensions(A6, B6, UDP(1, 53), [{ type: "fragment", fragmentOffset: 100 }]), false],
      ["IPv6 later fragment: protocol still matches", [{ protocol: "udp" }], () => v6WithExtensions(A6, B6, UDP(1, 53), [{ type: "fragment", fragmentOffset: 100 }]), true],
      ["IPv6 TCP behind hop-by-hop and AH: ports still match", [{ protocol: "tcp", destinationPort: 80 }], () => v6WithExtensions(A6, B6, TCP(1, 80), [{ type: "hop-by-hop" }, { type: "ah", length: 24 }]), true],
      ["IPv6 TCP behind AH: another port does not", [{ protocol: "tcp", destinationPort: 81 }], () => v6WithExtensions(A6, B6, TCP(1, 80), [{ type: "hop-by-hop" }, { type: "ah", length: 24 }]), false],
      ["IPv6 hop-by-hop, then TCP to 81", [{ destinationPort: 80 }], () => v6WithExtensions(A6, B6, TCP(1, 81), [{ type: "hop-by-hop" }]), false],
      // not parseable (BPF_PROG_TEST_RUN refuses IP frames shorter than the fixed
      // header, so this header claims 60 bytes and the frame ends first)
      ["IPv4 IHL beyond the frame: address filter cannot match", [{ source: "0.0.0.0/0" }], () => eth4(ipv4({ src: A4, dst: B4, payload: UDP(1, 2), ihl: 15 })), false],
      ["IPv4 IHL beyond the frame: mirrored when there are no filters", [], () => eth4(ipv4({ src: A4, dst: B4, payload: UDP(1, 2), ihl: 15 })), true],
    ];

    it.each(cases)("%s", async (_name, filters, frame, expected) => {
      await configure(prog, { filters });
      expect(await mirrored(prog, frame())).toBe(expected);
    });

    it("holds 64 filters and still finds a match in the last one", async () => {
      const filters: MirrorFilter[] = Array.from({ length: 63 }, (_, i) => ({ protocol: "tcp", destinationPort: 1000 + i }));
      filters.push({ protocol: "udp", destination: "2001:db8:ff::/64", destinationPort: 4242 });
      await configure(prog, { filters });
      const config = decodeConfig((await prog.dumpMap(CONFIG_MAP))[0]!.value);
      expect(config.setLength[config.activeSet]).toBe(64);
      const lastKey = Object.keys(filterRecord(filters.map((f) => filterSchema.parse(f)))).at(-1)!;
      expect(lastKey).toBe("udp and dst net 2001:db8:ff::/64 and dst port 4242");
      expect(await mirrored(prog, v6(A6, "2001:db8:ff::1", UDP(1, 4242)))).toBe(true);
      expect(await mirrored(prog, v6(A6, "2001:db8:ff::1", UDP(1, 4243)))).toBe(false);
      expect(await mirrored(prog, v4(A4, B4, TCP(1, 1062)))).toBe(true);
      expect(await mirrored(prog, v4(A4, B4, TCP(1, 1063)))).toBe(false);
    });

    it("flips between the two filter sets: the old list stops matching the moment the new one is live", async () => {
      await configure(prog, { filters: [{ destinationPort: 80 }] });
      const first = decodeConfig((await prog.dumpMap(CONFIG_MAP))[0]!.value).activeSet;
      await configure(prog, { filters: [{ destinationPort: 443 }] });
      const second = decodeConfig((await prog.dumpMap(CONFIG_MAP))[0]!.value).activeSet;
      expect(second).not.toBe(first);
      expect(await mirrored(prog, v4(A4, B4, TCP(1, 443)))).toBe(true);
      expect(await mirrored(prog, v4(A4, B4, TCP(1, 80)))).toBe(false);
      // Equal lists write nothing at all.
      await configure(prog, { filters: [{ destinationPort: 443 }] });
      expect(decodeConfig((await prog.dumpMap(CONFIG_MAP))[0]!.value).activeSet).toBe(second);
    });
  });

  describe("the classifier against the filter semantics (test/support/mirrorModel.ts)", () => {
    let prog: LoadedProgram;
    beforeAll(async () => {
      prog = await loadProgram(OBJ, "tc");
    });
    afterAll(() => prog?.close());

    it.each([
      [1, 64],
      [2, 17],
      [3, 3],
    ])("seed %i: %i random filters, packets at their edges, verdicts as the model's", async (seed, count) => {
      const rnd = seededRandom(seed * 104729);
      const filters = Object.values(filterRecord(randomFilters(rnd, count)));
      await configure(prog, { filters });
      const verdicts: boolean[] = [];
      for (let n = 0; n < 40; n++) {
        const p = randomPacket(rnd, filters);
        const want = listMatches(filters, p);
        expect(await mirrored(prog, frameOf(p)), JSON.stringify(p)).toBe(want);
        verdicts.push(want);
      }
      // The packets tell the filters apart: some are mirrored, some not.
      expect(new Set(verdicts).size).toBe(2);
    });

    it("every prefix of an update's writes matches exactly the old list or exactly the new one", async () => {
      const rnd = seededRandom(99991);
      const old = Object.values(filterRecord(randomFilters(rnd, 6)));
      const next = Object.values(filterRecord([old[0]!, old[3]!, ...randomFilters(rnd, 3)]));
      await configure(prog, { filters: old });
      const config = decodeConfig((await prog.dumpMap(CONFIG_MAP))[0]!.value);
      const slots = new Map((await prog.dumpMap(FILTERS_MAP)).map((e) => [e.key.readUInt32LE(0), Uint8Array.from(e.value)]));
      const ops = mirrorOperations(planMirror({ targetIfindex, sampleRate: 1, filters: filterRecord(next) }, { config, filters: liveFilters(config, slots) }), (m) => m);
      // Packets each list tells apart, and some both match.
      const packets = Array.from({ length: 60 }, () => randomPacket(rnd, [...old, ...next]))
        .filter((p, i) => i < 4 || listMatches(old, p) !== listMatches(next, p))
        .slice(0, 8);
      expect(packets.some((p) => listMatches(old, p) && !listMatches(next, p))).toBe(true);
      for (const [i, op] of ops.entries()) {
        if (op.op !== "update") throw new Error("the planner only writes");
        await prog.updateMap(op.map, [{ key: Buffer.from(op.key), value: Buffer.from(op.value) }]);
        const live = i === ops.length - 1 ? next : old;
        for (const p of packets) expect(await mirrored(prog, frameOf(p)), `after write ${i + 1} of ${ops.length}: ${JSON.stringify(p)}`).toBe(listMatches(live, p));
      }
    });
  });

  describe("counters, sampling, failures, loop guard", () => {
    it("counts matched and mirrored packets and bytes", async () => {
      const prog = await loadProgram(OBJ, "tc");
      try {
        await configure(prog, { filters: [{ protocol: "tcp" }] });
        const hit = v4("10.1.1.1", "10.2.2.2", TCP(1, 80));
        const miss = v6("2001:db8::1", "2001:db8::2", UDP(1, 53));
        await prog.run(hit, { repeat: 50 });
        await prog.run(miss, { repeat: 30 });
        expect(await stat(prog, STAT.MATCHED)).toEqual({ packets: 50n, bytes: BigInt(50 * hit.length) });
        expect(await stat(prog, STAT.MIRRORED)).toEqual({ packets: 50n, bytes: BigInt(50 * hit.length) });
        expect(await stat(prog, STAT.CLONE_FAILED)).toEqual({ packets: 0n, bytes: 0n });
      } finally {
        prog.close();
      }
    });

    it("mirrors exactly 1 in N matching packets with sampleRate N", async () => {
      const prog = await loadProgram(OBJ, "tc");
      try {
        await configure(prog, { filters: [{ protocol: "udp" }], sampleRate: 10 });
        const frame = v4("10.1.1.1", "10.2.2.2", UDP(1, 53));
        const out = await prog.run(frame, { repeat: 1000 });
        expect(out.retval).toBe(TC_ACT_UNSPEC);
        await prog.run(v4("10.1.1.1", "10.2.2.2", TCP(1, 53)), { repeat: 1000 });
        expect((await stat(prog, STAT.MATCHED)).packets).toBe(1000n);
        expect((await stat(prog, STAT.MIRRORED)).packets).toBe(100n);
      } finally {
        prog.close();
      }
    });

    it("counts a copy that cannot be sent as a failure and passes the original all the same", async () => {
      const prog = await loadProgram(OBJ, "tc");
      try {
        await configure(prog, { targetIfindex: 0x7ffffff0 });
        const frame = v4("10.1.1.1", "10.2.2.2", TCP(1, 80));
        expect(await mirrored(prog, frame)).toBe(false);
        await prog.run(frame, { repeat: 9 });
        expect(await stat(prog, STAT.CLONE_FAILED)).toEqual({ packets: 10n, bytes: BigInt(10 * frame.length) });
        expect((await stat(prog, STAT.MIRRORED)).packets).toBe(0n);
      } finally {
        prog.close();
      }
    });

    it.each([
      ["VXLAN, IPv4", { kind: GUARD.VXLAN, address: "192.0.2.50", port: 4789 }, [
        ["a VXLAN packet to the collector", () => v4("10.0.0.1", "192.0.2.50", UDP(55555, 4789)), false],
        ["a later fragment of a UDP datagram to the collector", () => eth4(ipv4({ src: "10.0.0.1", dst: "192.0.2.50", protocol: IPPROTO.UDP, fragmentOffset: 100, payload: Buffer.alloc(40) })), false],
        ["other UDP to the collector", () => v4("10.0.0.1", "192.0.2.50", UDP(55555, 53)), true],
        ["VXLAN to another address", () => v4("10.0.0.1", "192.0.2.51", UDP(55555, 4789)), true],
        ["TCP to the collector's VXLAN port", () => v4("10.0.0.1", "192.0.2.50", TCP(55555, 4789)), true],
      ]],
      ["VXLAN, IPv6, port 8472", { kind: GUARD.VXLAN, address: "2001:db8::50", port: 8472 }, [
        ["a VXLAN packet to the collector", () => v6("2001:db8::1", "2001:db8::50", UDP(55555, 8472)), false],
        ["UDP to port 4789 of the collector", () => v6("2001:db8::1", "2001:db8::50", UDP(55555, 4789)), true],
      ]],
      ["GRE, IPv4", { kind: GUARD.GRE, address: "192.0.2.60", port: 0 }, [
        ["a GRE packet to the collector", () => v4("10.0.0.1", "192.0.2.60", GRE()), false],
        ["a GRE packet to another address", () => v4("10.0.0.1", "192.0.2.61", GRE()), true],
        ["UDP to the collector", () => v4("10.0.0.1", "192.0.2.60", UDP(1, 2)), true],
      ]],
    ] as [string, TunnelGuard, [string, () => Buffer, boolean][]][])("never mirrors its own tunnel's packets (%s)", async (_name, guard, probes) => {
      const prog = await loadProgram(OBJ, "tc");
      try {
        await configure(prog, { guard });
        for (const [what, frame, expected] of probes) expect(await mirrored(prog, frame()), what).toBe(expected);
      } finally {
        prog.close();
      }
    });
  });

  describe("the copies", () => {
    it("leave through the target byte for byte, and only for matching packets", async () => {
      const prog = await loadProgram(OBJ, "tc");
      const dir = mkdtempSync(join(tmpdir(), "bpfleet-mirror-"));
      try {
        await configure(prog, { filters: [{ protocol: "tcp", destinationPort: 80 }, { protocol: "udp", destination: "2001:db8:2::/48" }] });
        const sent = [
          v4("192.0.2.7", "198.51.100.9", TCP(40000, 80)),
          v6("2001:db8:1::7", "2001:db8:2::9", UDP(40000, 53)),
          v6("2001:db8:1::7", "2001:db8:2::9", TCP(40000, 80)),
        ];
        const notSent = [v4("192.0.2.7", "198.51.100.9", TCP(40000, 81)), v6("2001:db8:1::7", "2001:db8:3::9", UDP(40000, 53)), ARP()];
        const frames = await capture(PEER, join(dir, "copies.pcap"), async () => {
          for (const f of [...sent, ...notSent]) await prog.run(f);
        });
        expect(frames.map((f) => f.toString("hex"))).toEqual(sent.map((f) => f.toString("hex")));
      } finally {
        prog.close();
        rmSync(dir, { recursive: true, force: true });
      }
    });
  });
});
