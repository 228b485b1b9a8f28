// bpf/xdp_maglev.bpf.c in the running kernel, through BPF_PROG_TEST_RUN: it
// loads, its maps have the layouts of bpf/include/maglev.h and
// provider/maglev/codec.ts, and crafted packets come out as this file predicts.
//
// The backend a flow must reach is predicted here, independently: the flow
// key is built from the packet's fields, hashed with a TypeScript jhash2, and
// looked up in the table provider/maglev/table.ts built. Expected output
// frames are built from scratch by packets.ts, which computes every checksum
// itself, and compared byte for byte with what the program produced.
//
// Runs happen in a network namespace of their own (veth pairs, static
// neighbours, routes), so bpf_fib_lookup gives answers this file controls:
//   lb0  10.0.0.1/24  fd00::1/64    clients (via gateway .254 / ::fe) and local backends
//   lb1  10.1.0.1/24  fd00:1::1/64  backends behind another interface (redirect)
// What BPF_PROG_TEST_RUN cannot show: XDP_TX and XDP_REDIRECT are only return
// codes here (no frame leaves), the FIB sees only this namespace's routes, and
// reply traffic, ARP resolution by the kernel (XDP_PASS after NAT) and real
// connections are the lab tests' job.
import { execFileSync } from "node:child_process";
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from "vitest";
import {
  arp, checksumsValid, ETH_P, ethernet, icmpv4, ipv4, ipv6, IPPROTO, tcp, udp, type Segment, type VlanTag,
} from "./packets";
import {
  buildObjects, createNetns, kernelTestsUnavailable, loadProgram, objectPath, runXdp, withProgram, XDP,
  type LoadedProgram, type TestNetns,
} from "./progRun";
import {
  decodeBackend, decodeConfig, decodeFlowKey, decodeIndex, decodeNatOrigin, decodeVip, decodeVipKey, encodeBackend, encodeConfig,
  encodeFlowKey, encodeIndex, encodeVip, encodeVipKey, encodeVipSlot, LB_MAX_BACKENDS, LB_VIP_SLOTS, vipSlotOf, LB_MAX_VIPS, LB_STATS, LB_TABLE_CAPACITY, MAPS, SIZES,
  tableOperations, type BackendRecord, type LbConfig, type LbStat, type VipValue,
} from "../../provider/maglev/codec";
import { buildTable, diffTable, type MaglevTable } from "../../provider/maglev/table";
import { observedVipIndex, vipIndexImage, vipIndexOperations } from "../../provider/maglev/vipIndex";
import type { MapOperation } from "../../provider/remote/mapOperations";
import { sumCounters } from "../../provider/counters";
import { lbFlowHash, lbFlowKey, type Flow } from "../support/lbFlowHash";

const unavailable = kernelTestsUnavailable();
if (unavailable) console.warn(`test/kernel/maglev: skipped: ${unavailable}`);

const OBJ = objectPath("xdp_maglev");
const M = 1009;

// ---------------------------------------------------------------- the flow hash, recomputed

const isV6 = (addr: string) => addr.includes(":");

// ---------------------------------------------------------------- frames

const LB0_GW = { v4: "10.0.0.254", v6: "fd00::fe", mac: "02:00:00:00:00:fe" };
const CLIENT_MAC = LB0_GW.mac; // clients arrive through their gateway
const CLIENTS = { v4: "192.0.2.0/24", v6: "2001:db8:c::/64" };

function segment(f: Flow, o: { payload?: Buffer; flags?: Parameters<typeof tcp>[0]["flags"]; udpChecksum?: number } = {}): Segment {
  const payload = o.payload ?? Buffer.from(`payload ${f.sport}`);
  return f.proto === "tcp"
    ? tcp({ srcPort: f.sport, dstPort: f.dport, seq: 1000, ack: 1, flags: o.flags ?? { ack: true, psh: true }, payload })
    : udp({ srcPort: f.sport, dstPort: f.dport, payload, checksum: o.udpChecksum });
}

interface FrameOptions {
  dmac?: string;
  smac?: string;
  vlans?: VlanTag[];
  payload?: Buffer;
  flags?: Parameters<typeof tcp>[0]["flags"];
  options?: Buffer;
  udpChecksum?: number;
  tos?: number;
}

function l3(f: Flow, o: FrameOptions = {}): Buffer {
  const seg = segment(f, o);
  return isV6(f.src)
    ? ipv6({ src: f.src, dst: f.dst, payload: seg, trafficClass: o.tos, hopLimit: 61 })
    : ipv4({ src: f.src, dst: f.dst, payload: seg, options: o.options, tos: o.tos, ttl: 61, id: 0x4242 });
}

function frame(f: Flow, o: FrameOptions = {}): Buffer {
  return ethernet({
    dst: o.dmac ?? lbMac0,
    src: o.smac ?? CLIENT_MAC,
    vlans: o.vlans,
    etherType: isV6(f.src) ? ETH_P.IPV6 : ETH_P.IP,
    payload: l3(f, o),
  });
}

const hexDiff = (got: Buffer, want: Buffer) => `\n got  ${got.toString("hex")}\n want ${want.toString("hex")}`;

function expectFrame(got: Buffer, want: Buffer): void {
  expect(got.equals(want), hexDiff(got, want)).toBe(true);
}

// ---------------------------------------------------------------- the load balancer's maps

interface Backend extends BackendRecord {
  /** The MAC the namespace's neighbour table has for it (what the FIB answers). */
  neighMac?: string;
  dev: "lb0" | "lb1";
}

/** Backends by identity; the index is the position in the sorted table plus one (0 names no backend). */
function indexOf(table: MaglevTable, id: string): number {
  const i = table.backends.indexOf(id);
  if (i < 0) throw new Error(`${id} is not in the table`);
  return i + 1;
}

async function writeBackends(lb: LoadedProgram, table: MaglevTable, backends: Record<string, Backend>): Promise<void> {
  await lb.updateMap(
    MAPS.backends,
    table.backends.map((id) => ({ key: Buffer.from(encodeIndex(indexOf(table, id))), value: Buffer.from(encodeBackend(backends[id]!)) })),
  );
}

async function writeTable(lb: LoadedProgram, table: MaglevTable, offset: number): Promise<void> {
  const ops = tableOperations(diffTable(buildTable([], table.size), table), offset, (id) => indexOf(table, id), lb.mapPin(MAPS.table));
  await lb.updateMap(MAPS.table, ops.map((o) => ({ key: Buffer.from(o.key), value: Buffer.from((o as { value: Uint8Array }).value) })));
}

const entries = (ops: readonly MapOperation[]) => ops.map((o) => ({ key: Buffer.from(o.key), value: Buffer.from((o as { value: Uint8Array }).value) }));

/**
 * Writes a VIP into lb_vips and brings lb_vip_index along as the provider does
 * (the slots that change go through ASK around the lb_vips write), so that the
 * tests below run through the index: ONE for the VIPs, NONE for most other
 * traffic. `index: false` leaves the index alone (all ASK in a fresh object: lb_vips only).
 */
async function writeVip(lb: LoadedProgram, vip: { address: string; port: number; protocol: "tcp" | "udp" }, value: VipValue, o: { index?: boolean } = {}): Promise<void> {
  const key = encodeVipKey(vip);
  const record = { key, value: encodeVip(value) };
  if (o.index === false) {
    await lb.updateMap(MAPS.vips, entries([{ op: "update", map: MAPS.vips, ...record }]));
    return;
  }
  const others = (await lb.dumpMap(MAPS.vips)).filter((e) => !e.key.equals(Buffer.from(key)));
  const image = vipIndexImage([...others, record]);
  const { before, after } = vipIndexOperations(image, observedVipIndex(await lb.dumpMap(MAPS.vipIndex)), MAPS.vipIndex);
  if (before.length) await lb.updateMap(MAPS.vipIndex, entries(before));
  await lb.updateMap(MAPS.vips, entries([{ op: "update", map: MAPS.vips, ...record }]));
  if (after.length) await lb.updateMap(MAPS.vipIndex, entries(after));
}

async function writeConfig(lb: LoadedProgram, config: LbConfig): Promise<void> {
  await lb.updateMap(MAPS.config, [{ key: Buffer.from(encodeIndex(0)), value: Buffer.from(encodeConfig(config)) }]);
}

async function stat(lb: LoadedProgram, name: LbStat): Promise<{ packets: number; bytes: number }> {
  return sumCounters(await lb.lookupPerCpu(MAPS.stats, Buffer.from(encodeIndex(LB_STATS.indexOf(name)))));
}

// ---------------------------------------------------------------- the namespace

let ns: TestNetns;
let lbMac0 = "";
let lbMac1 = "";
let lb0 = 0;
let lb1 = 0;

async function setForwarding(on: boolean): Promise<void> {
  await ns.sysctl("net.ipv4.conf.all.forwarding", on ? 1 : 0);
  await ns.sysctl("net.ipv6.conf.all.forwarding", on ? 1 : 0);
}

async function addNeighbour(address: string, mac: string, dev: string): Promise<void> {
  await ns.ip(isV6(address) ? "-6" : "-4", "neigh", "replace", address, "lladdr", mac, "dev", dev, "nud", "permanent");
}

async function setUpNamespace(): Promise<void> {
  ns = await createNetns();
  for (const [dev, v4, v6] of [["lb0", "10.0.0.1/24", "fd00::1/64"], ["lb1", "10.1.0.1/24", "fd00:1::1/64"]] as const) {
    await ns.ip("link", "add", dev, "type", "veth", "peer", "name", `${dev}p`);
    await ns.ip("link", "set", dev, "up");
    await ns.ip("link", "set", `${dev}p`, "up");
    await ns.ip("addr", "add", v4, "dev", dev);
    await ns.ip("-6", "addr", "add", v6, "dev", dev, "nodad");
  }
  await ns.ip("route", "add", CLIENTS.v4, "via", LB0_GW.v4);
  await ns.ip("-6", "route", "add", CLIENTS.v6, "via", LB0_GW.v6);
  await ns.ip("route", "add", "blackhole", "203.0.113.0/24");
  await ns.ip("-6", "route", "add", "blackhole", "2001:db8:dead::/48");
  await addNeighbour(LB0_GW.v4, LB0_GW.mac, "lb0");
  await addNeighbour(LB0_GW.v6, LB0_GW.mac, "lb0");
  ({ ifindex: lb0, mac: lbMac0 } = await ns.link("lb0"));
  ({ ifindex: lb1, mac: lbMac1 } = await ns.link("lb1"));
}

const run = (lb: LoadedProgram, f: Buffer, ingress: "lb0" | "lb1" = "lb0") =>
  runXdp(lb, f, { netns: ns, ingressIfindex: ingress === "lb0" ? lb0 : lb1 });

// ---------------------------------------------------------------- test data

const VIP = { v4: "198.51.100.10", v6: "2001:db8:100::10" };

/** Three local backends per family with static MACs that differ from the neighbour table's. */
function localBackends(family: "v4" | "v6", port = 8080): Record<string, Backend> {
  const out: Record<string, Backend> = {};
  for (const n of [11, 12, 13]) {
    const address = family === "v4" ? `10.0.0.${n}` : `fd00::${n}`;
    const id = family === "v4" ? `${address}:${port}` : `[${address}]:${port}`;
    out[id] = { address, port, mac: `02:00:00:00:00:${n}`, neighMac: `02:00:00:00:aa:${n}`, dev: "lb0" };
  }
  return out;
}

function tableOf(backends: Record<string, Backend>, size = M): MaglevTable {
  return buildTable(Object.keys(backends).map((id) => ({ id })), size);
}

function expectedBackend(table: MaglevTable, backends: Record<string, Backend>, f: Flow): Backend {
  const id = table.backends[table.slots[lbFlowHash(f) % table.size]!]!;
  return backends[id]!;
}

/** Flows from many clients and ports, so that every backend of a 3-backend table gets some. */
function flows(family: "v4" | "v6", proto: "tcp" | "udp", dport: number, count: number, seed = 1): Flow[] {
  return Array.from({ length: count }, (_, i) => ({
    src: family === "v4" ? `192.0.2.${1 + ((i * 37 + seed) % 250)}` : `2001:db8:c::${(i * 37 + seed).toString(16)}`,
    dst: VIP[family],
    sport: 1024 + ((i * 7919 + seed * 13) % 60000),
    dport,
    proto,
  }));
}

const COMBOS = [["v4", "tcp"], ["v4", "udp"], ["v6", "tcp"], ["v6", "udp"]] as const;

async function configureService(
  lb: LoadedProgram,
  family: "v4" | "v6",
  proto: "tcp" | "udp",
  mode: VipValue["mode"],
  backends: Record<string, Backend>,
  o: { flowTable?: boolean; vipIndex?: number; offset?: number; port?: number } = {},
): Promise<MaglevTable> {
  const table = tableOf(backends);
  await writeBackends(lb, table, backends);
  await writeTable(lb, table, o.offset ?? 0);
  await writeVip(lb, { address: VIP[family], port: o.port ?? 80, protocol: proto }, {
    vipIndex: o.vipIndex ?? 0, tableOffset: o.offset ?? 0, tableSize: table.size, mode, flowTable: o.flowTable ?? false,
  });
  return table;
}

async function withNeighbours(backends: Record<string, Backend>): Promise<void> {
  for (const b of Object.values(backends)) if (b.neighMac) await addNeighbour(b.address, b.neighMac, b.dev);
}

// ================================================================ tests

describe.skipIf(unavailable !== undefined)("xdp_maglev", { timeout: 120_000 }, () => {
  beforeAll(async () => {
    await buildObjects();
    await setUpNamespace();
  }, 120_000);
  afterAll(() => ns?.close());

  describe("object", () => {
    let lb: LoadedProgram;
    beforeAll(async () => {
      lb = await loadProgram(OBJ);
    });
    afterAll(() => lb?.close());

    it("passes the verifier and is JIT-compiled as an XDP program", async () => {
      const info = await lb.progInfo();
      expect(info).toMatchObject({ type: "xdp", name: "xdp_maglev", jited: true });
      expect(info.map_ids).toHaveLength(12);
    });

    it("pins its ten maps and the two of the XDP chain, with the types and sizes the codec writes", async () => {
      expect(lb.mapNames()).toEqual([...Object.values(MAPS), "xdp_chain", "xdp_chain_next"].sort());
      const expected: Record<string, object> = {
        [MAPS.vips]: { type: "hash", bytes_key: SIZES.vipKey, bytes_value: SIZES.vip, max_entries: LB_MAX_VIPS },
        [MAPS.vipIndex]: { type: "array", bytes_key: 4, bytes_value: SIZES.vipSlot, max_entries: LB_VIP_SLOTS },
        [MAPS.table]: { type: "array", bytes_key: 4, bytes_value: 4, max_entries: LB_TABLE_CAPACITY },
        [MAPS.backends]: { type: "array", bytes_key: 4, bytes_value: SIZES.backend, max_entries: LB_MAX_BACKENDS },
        [MAPS.flows]: { type: "lru_hash", bytes_key: SIZES.flowKey, bytes_value: 4 },
        [MAPS.nat]: { type: "lru_hash", bytes_key: SIZES.flowKey, bytes_value: SIZES.natOrigin },
        [MAPS.config]: { type: "array", bytes_key: 4, bytes_value: SIZES.config, max_entries: 1 },
        [MAPS.vipStats]: { type: "percpu_array", bytes_key: 4, bytes_value: SIZES.counter, max_entries: LB_MAX_VIPS },
        [MAPS.backendStats]: { type: "percpu_array", bytes_key: 4, bytes_value: SIZES.counter, max_entries: LB_MAX_BACKENDS },
        [MAPS.stats]: { type: "percpu_array", bytes_key: 4, bytes_value: SIZES.counter, max_entries: LB_STATS.length },
        xdp_chain: { type: "prog_array", bytes_key: 4, bytes_value: 4, max_entries: 8 },
        xdp_chain_next: { type: "array", bytes_key: 4, bytes_value: 4, max_entries: 1 },
      };
      for (const [name, want] of Object.entries(expected)) expect(await lb.mapInfo(name), name).toMatchObject({ name, ...want });
    });

    it("has the struct layouts of bpf/include/maglev.h in its BTF, as the codec assumes", () => {
      const btf = JSON.parse(execFileSync("bpftool", ["-j", "btf", "dump", "file", OBJ]).toString()) as {
        types: { kind: string; name?: string; size?: number; members?: { name: string; bits_offset: number }[] }[];
      };
      const layout = (name: string) => {
        const t = btf.types.find((x) => x.kind === "STRUCT" && x.name === name);
        return { size: t?.size, members: t?.members?.map((m) => [m.name, m.bits_offset / 8]) };
      };
      expect(layout("lb_vip_key")).toEqual({ size: SIZES.vipKey, members: [["addr", 0], ["port", 16], ["proto", 18], ["family", 19]] });
      expect(layout("lb_vip")).toEqual({
        size: SIZES.vip, members: [["vip_index", 0], ["table_offset", 4], ["table_size", 8], ["mode", 12], ["flags", 13], ["reserved", 14]],
      });
      expect(layout("lb_vip_slot")).toEqual({ size: SIZES.vipSlot, members: [["key", 0], ["vip", SIZES.vipKey], ["state", SIZES.vipKey + SIZES.vip], ["reserved", SIZES.vipKey + SIZES.vip + 1]] });
      expect(layout("lb_backend")).toEqual({
        size: SIZES.backend, members: [["addr", 0], ["port", 16], ["family", 18], ["flags", 19], ["mac", 20], ["mtu", 26]],
      });
      expect(layout("lb_flow_key")).toEqual({
        size: SIZES.flowKey, members: [["src", 0], ["dst", 16], ["sport", 32], ["dport", 34], ["proto", 36], ["family", 37], ["reserved", 38]],
      });
      expect(layout("lb_nat_origin")).toEqual({ size: SIZES.natOrigin, members: [["vip_addr", 0], ["vip_port", 16], ["reserved", 18], ["vip_index", 20]] });
      expect(layout("lb_config")).toEqual({ size: SIZES.config, members: [["flags", 0], ["tunnel_src_v4", 4], ["tunnel_src_v6", 8]] });
      expect(layout("lb_counter")).toEqual({ size: SIZES.counter, members: [["packets", 0], ["bytes", 8]] });
    });

    it("reads back what the codec wrote", async () => {
      await withProgram(OBJ, async (other) => {
        await writeVip(other, { address: VIP.v6, port: 443, protocol: "udp" }, { vipIndex: 7, tableOffset: 65537, tableSize: 65537, mode: "ipip", flowTable: true });
        await other.updateMap(MAPS.backends, [{ key: Buffer.from(encodeIndex(9)), value: Buffer.from(encodeBackend({ address: "fd00::9", port: 0, mac: "02:00:00:00:00:09" })) }]);
        await writeConfig(other, { reverseNat: true, tunnelSourceV4: "10.9.9.9" });
        const [vip] = await other.dumpMap(MAPS.vips);
        expect(decodeVipKey(vip!.key)).toEqual({ address: VIP.v6, port: 443, protocol: "udp" });
        expect(decodeVip(vip!.value)).toEqual({ vipIndex: 7, tableOffset: 65537, tableSize: 65537, mode: "ipip", flowTable: true });
        const records = (await other.dumpMap(MAPS.backends)).filter((e) => decodeBackend(e.value));
        expect(records.map((e) => [decodeIndex(e.key), decodeBackend(e.value)])).toEqual([[9, { address: "fd00::9", port: 0, mac: "02:00:00:00:00:09" }]]);
        const [config] = await other.dumpMap(MAPS.config);
        expect(decodeConfig(config!.value)).toEqual({ reverseNat: true, tunnelSourceV4: "10.9.9.9" });
      });
    });
  });

  describe("traffic that is not for a VIP passes untouched", () => {
    let lb: LoadedProgram;
    beforeAll(async () => {
      lb = await loadProgram(OBJ);
      await setForwarding(true);
      await configureService(lb, "v4", "tcp", "dsr", localBackends("v4"));
      await configureService(lb, "v6", "tcp", "dsr", localBackends("v6"), { vipIndex: 1, offset: M });
      await writeConfig(lb, { reverseNat: true }); // the reverse lookup runs, and misses
    });
    afterAll(() => lb?.close());

    const v4 = (o: Partial<Flow> = {}): Flow => ({ src: "192.0.2.7", dst: VIP.v4, sport: 40000, dport: 80, proto: "tcp", ...o });
    const v6 = (o: Partial<Flow> = {}): Flow => ({ src: "2001:db8:c::7", dst: VIP.v6, sport: 40000, dport: 80, proto: "tcp", ...o });
    const eth4 = (payload: Buffer) => ethernet({ dst: lbMac0, src: CLIENT_MAC, etherType: ETH_P.IP, payload });
    const eth6 = (payload: Buffer) => ethernet({ dst: lbMac0, src: CLIENT_MAC, etherType: ETH_P.IPV6, payload });
    const cases: [string, () => Buffer][] = [
      ["IPv4 TCP to another address", () => frame(v4({ dst: "198.51.100.11" }))],
      ["IPv4 TCP to the VIP address, another port", () => frame(v4({ dport: 81 }))],
      ["IPv4 UDP to the VIP's TCP port", () => frame(v4({ proto: "udp" }))],
      ["IPv4 TCP from the VIP's port to elsewhere", () => frame(v4({ src: VIP.v4, dst: "192.0.2.7", sport: 80, dport: 40000 }))],
      ["IPv4 ICMP echo to the VIP", () => eth4(ipv4({ src: "192.0.2.7", dst: VIP.v4, payload: icmpv4({ type: 8, id: 1, sequence: 1 }) }))],
      ["IPv4 first fragment to the VIP (MF set)", () => eth4(ipv4({ src: "192.0.2.7", dst: VIP.v4, payload: segment(v4()), moreFragments: true }))],
      ["IPv4 later fragment to the VIP", () => eth4(ipv4({ src: "192.0.2.7", dst: VIP.v4, payload: Buffer.alloc(32, 1), protocol: IPPROTO.TCP, fragmentOffset: 100 }))],
      ["IPv4 TCP header cut short, to the VIP", () => frame(v4()).subarray(0, 14 + 20 + 12)],
      ["ARP for the VIP", () => ethernet({ dst: "ff:ff:ff:ff:ff:ff", etherType: ETH_P.ARP, payload: arp({ op: "request", senderMac: CLIENT_MAC, senderIp: "10.0.0.254", targetIp: VIP.v4 }) })],
      ["IPv6 TCP to another address", () => frame(v6({ dst: "2001:db8:100::11" }))],
      ["IPv6 UDP to the VIP's TCP port", () => frame(v6({ proto: "udp" }))],
      ["IPv6 TCP behind a hop-by-hop header, to the VIP", () => eth6(ipv6({ src: "2001:db8:c::7", dst: VIP.v6, payload: segment(v6()), extensions: [{ type: "hop-by-hop" }] }))],
      ["IPv6 first fragment to the VIP (M set)", () => eth6(ipv6({ src: "2001:db8:c::7", dst: VIP.v6, payload: segment(v6()), extensions: [{ type: "fragment", moreFragments: true }] }))],
      ["IPv6 later fragment to the VIP", () => eth6(ipv6({ src: "2001:db8:c::7", dst: VIP.v6, payload: Buffer.alloc(32, 1), nextHeader: IPPROTO.TCP, extensions: [{ type: "fragment", fragmentOffset: 100 }] }))],
    ];

    it.each(cases)("%s", async (_name, make) => {
      const packet = make();
      const before = await stat(lb, "notVip");
      const out = await run(lb, packet);
      expect(out.retval).toBe(XDP.PASS);
      expectFrame(out.dataOut, packet);
      expect((await stat(lb, "notVip")).packets).toBe(before.packets + 1);
    });
  });

  describe.each(COMBOS)("DSR, %s %s", (family, proto) => {
    let lb: LoadedProgram;
    let table: MaglevTable;
    const backends = localBackends(family);
    beforeAll(async () => {
      lb = await loadProgram(OBJ);
      table = await configureService(lb, family, proto, "dsr", backends);
      await withNeighbours(backends);
    });
    afterAll(() => lb?.close());

    it("with forwarding off (no FIB answer): the table's backend, by its static MAC, XDP_TX; only the MACs change", async () => {
      await setForwarding(false);
      const seen = new Set<string>();
      for (const f of flows(family, proto, 80, 40)) {
        const b = expectedBackend(table, backends, f);
        seen.add(b.address);
        const out = await run(lb, frame(f));
        expect(out.retval, `${f.src}:${f.sport}`).toBe(XDP.TX);
        expectFrame(out.dataOut, frame(f, { dmac: b.mac, smac: lbMac0 }));
      }
      expect(seen.size, "the flows reach every backend").toBe(3);
      expect((await stat(lb, "staticMac")).packets).toBe(40);
    });

    it("with forwarding on: MACs from the FIB (the neighbour table), XDP_TX out of the ingress interface", async () => {
      await setForwarding(true);
      for (const f of flows(family, proto, 80, 24, 5)) {
        const b = expectedBackend(table, backends, f);
        const out = await run(lb, frame(f));
        expect(out.retval).toBe(XDP.TX);
        expectFrame(out.dataOut, frame(f, { dmac: b.neighMac, smac: lbMac0 }));
      }
    });

    it("keeps 802.1Q tags and IPv4 options in place", async () => {
      await setForwarding(true);
      const f = flows(family, proto, 80, 1, 9)[0]!;
      const b = expectedBackend(table, backends, f);
      const o: FrameOptions = { vlans: [{ vid: 42 }], options: family === "v4" ? Buffer.from([1, 1, 1, 1, 1, 1, 1, 0]) : undefined };
      const out = await run(lb, frame(f, o));
      expect(out.retval).toBe(XDP.TX);
      expectFrame(out.dataOut, frame(f, { ...o, dmac: b.neighMac, smac: lbMac0 }));
    });
  });

  describe("DSR egress decisions", () => {
    let lb: LoadedProgram;
    beforeAll(async () => {
      lb = await loadProgram(OBJ);
      await setForwarding(true);
    });
    afterAll(() => lb?.close());

    it("redirects to the interface the FIB names when the backend lies behind another one", async () => {
      for (const family of ["v4", "v6"] as const) {
        const address = family === "v4" ? "10.1.0.21" : "fd00:1::21";
        const backends: Record<string, Backend> = { [`${address}:80`]: { address, port: 80, neighMac: "02:00:00:00:01:21", dev: "lb1" } };
        await addNeighbour(address, "02:00:00:00:01:21", "lb1");
        await configureService(lb, family, "tcp", "dsr", backends);
        const f = flows(family, "tcp", 80, 1)[0]!;
        const out = await run(lb, frame(f));
        expect(out.retval, family).toBe(XDP.REDIRECT);
        expectFrame(out.dataOut, frame(f, { dmac: "02:00:00:00:01:21", smac: lbMac1 }));
      }
      expect((await stat(lb, "redirect")).packets).toBe(2);
    });

    it("drops when neither the FIB nor a static MAC knows the backend (the VIP cannot go to the kernel)", async () => {
      const backends: Record<string, Backend> = { "10.0.0.99:80": { address: "10.0.0.99", port: 80, dev: "lb0" } };
      await configureService(lb, "v4", "tcp", "dsr", backends);
      const out = await run(lb, frame(flows("v4", "tcp", 80, 1)[0]!));
      expect(out.retval).toBe(XDP.DROP);
      expect((await stat(lb, "fibDrop")).packets).toBe(1);
    });

    it("drops a backend of the other family (the provider refuses to configure one)", async () => {
      const backends: Record<string, Backend> = { "[fd00::11]:80": { address: "fd00::11", port: 80, mac: "02:00:00:00:00:11", dev: "lb0" } };
      await configureService(lb, "v4", "tcp", "dsr", backends);
      const before = await stat(lb, "noBackend");
      expect((await run(lb, frame(flows("v4", "tcp", 80, 1)[0]!))).retval).toBe(XDP.DROP);
      expect((await stat(lb, "noBackend")).packets).toBe(before.packets + 1);
    });
  });

  describe.each(COMBOS)("NAT, %s %s", (family, proto) => {
    let lb: LoadedProgram;
    let table: MaglevTable;
    const backends = localBackends(family, 8080);
    beforeAll(async () => {
      lb = await loadProgram(OBJ);
      await setForwarding(true);
      table = await configureService(lb, family, proto, "nat", backends);
      await writeConfig(lb, { reverseNat: true });
      await withNeighbours(backends);
    });
    afterAll(() => lb?.close());

    /** The frame a backend must receive: built from scratch, every checksum computed by packets.ts. */
    const natted = (f: Flow, b: Backend, o: FrameOptions = {}) =>
      frame({ ...f, dst: b.address, dport: b.port || f.dport }, { ...o, dmac: b.neighMac, smac: lbMac0 });

    it("rewrites destination address and port to the table's backend, with correct checksums", async () => {
      for (const f of flows(family, proto, 80, 32)) {
        const b = expectedBackend(table, backends, f);
        const out = await run(lb, frame(f, { payload: Buffer.from(`odd length ${f.sport}!`) }));
        expect(out.retval).toBe(XDP.TX);
        expectFrame(out.dataOut, natted(f, b, { payload: Buffer.from(`odd length ${f.sport}!`) }));
        expect(checksumsValid(out.dataOut)).toEqual(family === "v4" ? { ipv4Header: true, l4: true } : { l4: true });
      }
    });

    it("translates the backend's reply back to the VIP", async () => {
      for (const f of flows(family, proto, 80, 8, 3)) {
        const b = expectedBackend(table, backends, f);
        await run(lb, frame(f));
        const reply: Flow = { src: b.address, dst: f.src, sport: b.port, dport: f.sport, proto };
        const out = await run(lb, frame(reply, { smac: b.neighMac, payload: Buffer.from("reply") }));
        expect(out.retval).toBe(XDP.TX);
        const back: Flow = { src: f.dst, dst: f.src, sport: f.dport, dport: f.sport, proto };
        expectFrame(out.dataOut, frame(back, { dmac: LB0_GW.mac, smac: lbMac0, payload: Buffer.from("reply") }));
        expect(checksumsValid(out.dataOut).l4).toBe(true);
      }
    });

    it("remembers each flow in lb_nat under the reply's 5-tuple", async () => {
      const f = flows(family, proto, 80, 1, 77)[0]!;
      const b = expectedBackend(table, backends, f);
      await run(lb, frame(f));
      const entries = (await lb.dumpMap(MAPS.nat)).map((e) => ({ key: decodeFlowKey(e.key), origin: decodeNatOrigin(e.value, family === "v4" ? 4 : 6) }));
      expect(entries).toContainEqual({
        key: { src: b.address, dst: f.src, srcPort: b.port, dstPort: f.sport, protocol: proto },
        origin: { vipAddress: f.dst, vipPort: 80, vipIndex: 0 },
      });
      expect(Buffer.from(encodeFlowKey({ src: b.address, dst: f.src, srcPort: b.port, dstPort: f.sport, protocol: proto })).equals(lbFlowKey({ src: b.address, dst: f.src, sport: b.port, dport: f.sport, proto }))).toBe(true);
    });

    it("passes replies of flows it never saw untouched", async () => {
      const stray: Flow = { src: "10.0.0.11", dst: "192.0.2.200", sport: 8080, dport: 5555, proto };
      const f = family === "v4" ? stray : { ...stray, src: "fd00::11", dst: "2001:db8:c::200" };
      const out = await run(lb, frame(f));
      expect(out.retval).toBe(XDP.PASS);
      expectFrame(out.dataOut, frame(f));
    });

    if (family === "v4") {
      it("updates checksums behind IPv4 options and TCP options", async () => {
        const f = flows(family, proto, 80, 1, 11)[0]!;
        const b = expectedBackend(table, backends, f);
        const o = { options: Buffer.from([0x94, 0x04, 0, 0]), tos: 0x10 };
        const out = await run(lb, frame(f, o));
        expect(out.retval).toBe(XDP.TX);
        expectFrame(out.dataOut, natted(f, b, o));
      });
    }

    if (family === "v4" && proto === "udp") {
      it("leaves an IPv4 UDP checksum of zero (none) at zero", async () => {
        const f = flows(family, proto, 80, 1, 12)[0]!;
        const b = expectedBackend(table, backends, f);
        const out = await run(lb, frame(f, { udpChecksum: 0 }));
        expectFrame(out.dataOut, natted(f, b, { udpChecksum: 0 }));
      });
    }
  });

  describe("NAT egress and configuration", () => {
    let lb: LoadedProgram;
    beforeAll(async () => {
      lb = await loadProgram(OBJ);
      await setForwarding(true);
    });
    afterAll(() => lb?.close());

    it("keeps the VIP's port when the backend record's port is 0", async () => {
      const backends: Record<string, Backend> = { "10.0.0.11:0": { address: "10.0.0.11", port: 0, neighMac: "02:00:00:00:aa:11", dev: "lb0" } };
      await withNeighbours(backends);
      await configureService(lb, "v4", "tcp", "nat", backends, { port: 443 });
      const f: Flow = { src: "192.0.2.9", dst: VIP.v4, sport: 33333, dport: 443, proto: "tcp" };
      const out = await run(lb, frame(f));
      expectFrame(out.dataOut, frame({ ...f, dst: "10.0.0.11" }, { dmac: "02:00:00:00:aa:11", smac: lbMac0 }));
    });

    it("hands the rewritten packet to the kernel when the backend's neighbour is unresolved; drops into a blackhole", async () => {
      const unresolved: Record<string, Backend> = { "10.0.0.98:8080": { address: "10.0.0.98", port: 8080, dev: "lb0" } };
      await configureService(lb, "v4", "tcp", "nat", unresolved);
      const f = flows("v4", "tcp", 80, 1)[0]!;
      const out = await run(lb, frame(f));
      expect(out.retval).toBe(XDP.PASS);
      expectFrame(out.dataOut, frame({ ...f, dst: "10.0.0.98", dport: 8080 }));
      expect((await stat(lb, "stack")).packets).toBe(1);

      // A blackhole route wins over a static MAC.
      const blackholed: Record<string, Backend> = { "203.0.113.5:8080": { address: "203.0.113.5", port: 8080, mac: "02:00:00:00:00:05", dev: "lb0" } };
      await configureService(lb, "v4", "tcp", "nat", blackholed);
      expect((await run(lb, frame(f))).retval).toBe(XDP.DROP);
      expect((await stat(lb, "fibDrop")).packets).toBe(1);
    });

    it("does not look replies up while no VIP is in NAT mode (lb_config flag off)", async () => {
      const backends = localBackends("v4", 8080);
      const table = await configureService(lb, "v4", "tcp", "nat", backends);
      await withNeighbours(backends);
      await writeConfig(lb, { reverseNat: true });
      const f = flows("v4", "tcp", 80, 1, 21)[0]!;
      const b = expectedBackend(table, backends, f);
      await run(lb, frame(f));
      const reply = frame({ src: b.address, dst: f.src, sport: 8080, dport: f.sport, proto: "tcp" }, { smac: b.neighMac });
      expect((await run(lb, reply)).retval).toBe(XDP.TX);
      await writeConfig(lb, { reverseNat: false });
      const out = await run(lb, reply);
      expect(out.retval).toBe(XDP.PASS);
      expectFrame(out.dataOut, reply);
    });
  });

  describe("IPIP", () => {
    let lb: LoadedProgram;
    beforeAll(async () => {
      lb = await loadProgram(OBJ);
      await setForwarding(true);
    });
    afterAll(() => lb?.close());

    const cases = [
      ["IPv4 in IPv4", "v4", "10.0.0.11", 4],
      ["IPv6 in IPv6", "v6", "fd00::11", 6],
      ["IPv4 in IPv6", "v4", "fd00::12", 6],
      ["IPv6 in IPv4", "v6", "10.0.0.12", 4],
    ] as const;

    it.each(cases)("%s: outer header to the backend from the FIB's source address, VIP kept inside", async (_name, family, backend, outer) => {
      const neighMac = "02:00:00:00:bb:01";
      await addNeighbour(backend, neighMac, "lb0");
      await configureService(lb, family, "tcp", "ipip", { [`${backend}:80`]: { address: backend, port: 80, dev: "lb0" } });
      await writeConfig(lb, { reverseNat: false });
      const f = flows(family, "tcp", 80, 1, 31)[0]!;
      const inner = l3(f, { tos: 0x28 });
      const out = await run(lb, frame(f, { tos: 0x28 }));
      expect(out.retval).toBe(XDP.TX);
      const innerProto = family === "v4" ? 4 : 41;
      const want = ethernet({
        dst: neighMac,
        src: lbMac0,
        etherType: outer === 4 ? ETH_P.IP : ETH_P.IPV6,
        payload:
          outer === 4
            ? ipv4({ src: "10.0.0.1", dst: backend, payload: inner, protocol: innerProto, tos: 0x28, ttl: 64, id: 0 })
            : ipv6({ src: "fd00::1", dst: backend, payload: inner, nextHeader: innerProto, trafficClass: 0x28, hopLimit: 64, flowLabel: lbFlowHash(f) & 0xfffff }),
      });
      expectFrame(out.dataOut, want);
      if (outer === 4) expect(checksumsValid(out.dataOut).ipv4Header).toBe(true);
    });

    it("uses the configured tunnel source address", async () => {
      await addNeighbour("10.0.0.11", "02:00:00:00:bb:01", "lb0");
      await configureService(lb, "v4", "udp", "ipip", { "10.0.0.11:53": { address: "10.0.0.11", port: 53, dev: "lb0" } });
      await writeConfig(lb, { reverseNat: false, tunnelSourceV4: "10.9.9.9" });
      const f = flows("v4", "udp", 80, 1, 32)[0]!;
      const out = await run(lb, frame(f));
      const want = ethernet({ dst: "02:00:00:00:bb:01", src: lbMac0, etherType: ETH_P.IP, payload: ipv4({ src: "10.9.9.9", dst: "10.0.0.11", payload: l3(f), protocol: 4, ttl: 64, id: 0 }) });
      expectFrame(out.dataOut, want);
    });

    it("drops VLAN-tagged VIP traffic it cannot encapsulate, and counts it", async () => {
      await configureService(lb, "v4", "tcp", "ipip", { "10.0.0.11:80": { address: "10.0.0.11", port: 80, dev: "lb0" } });
      expect((await run(lb, frame(flows("v4", "tcp", 80, 1)[0]!, { vlans: [{ vid: 7 }] }))).retval).toBe(XDP.DROP);
      expect((await stat(lb, "encapFail")).packets).toBe(1);
    });
  });

  describe("the next-hop cache (a MAC and MTU in the backend's record)", () => {
    let lb: LoadedProgram;
    beforeAll(async () => {
      lb = await loadProgram(OBJ);
      // Forwarding on: the FIB would answer with the neighbour table's MAC,
      // which differs from the record's, so the output shows which was used.
      await setForwarding(true);
    });
    afterAll(() => lb?.close());

    /** localBackends with the next hop cached (MTU 1500) for the ids in `cachedIds` (all when omitted). */
    const withCache = (backends: Record<string, Backend>, mtu = 1500, cachedIds = Object.keys(backends)) =>
      Object.fromEntries(Object.entries(backends).map(([id, b]) => [id, cachedIds.includes(id) ? { ...b, mtu } : b]));

    it.each(COMBOS)("hit, DSR %s %s: the record's MAC, no FIB walk; only the MACs change", async (family, proto) => {
      const backends = withCache(localBackends(family));
      await withNeighbours(backends);
      const table = await configureService(lb, family, proto, "dsr", backends);
      const before = await stat(lb, "staticMac");
      for (const f of flows(family, proto, 80, 12, 41)) {
        const b = expectedBackend(table, backends, f);
        const out = await run(lb, frame(f));
        expect(out.retval).toBe(XDP.TX);
        expectFrame(out.dataOut, frame(f, { dmac: b.mac, smac: lbMac0 }));
      }
      expect((await stat(lb, "staticMac")).packets).toBe(before.packets + 12);
    });

    it("miss: a backend without a cached next hop takes the FIB (the neighbour table's MAC), its neighbours in the table the cache", async () => {
      const all = localBackends("v4");
      const cachedId = Object.keys(all)[0]!;
      const backends = withCache(all, 1500, [cachedId]);
      await withNeighbours(backends);
      const table = await configureService(lb, "v4", "tcp", "dsr", backends);
      const seen = new Set<string>();
      for (const f of flows("v4", "tcp", 80, 40, 43)) {
        const b = expectedBackend(table, backends, f);
        seen.add(b.mtu ? "cache" : "fib");
        const out = await run(lb, frame(f));
        expect(out.retval).toBe(XDP.TX);
        expectFrame(out.dataOut, frame(f, { dmac: b.mtu ? b.mac : b.neighMac, smac: lbMac0 }));
      }
      expect([...seen].sort()).toEqual(["cache", "fib"]);
    });

    it("miss: a packet larger than the cached MTU takes the FIB", async () => {
      const backends = withCache(localBackends("v6"), 1280);
      await withNeighbours(backends);
      const table = await configureService(lb, "v6", "udp", "dsr", backends);
      const f = flows("v6", "udp", 80, 1, 44)[0]!;
      const b = expectedBackend(table, backends, f);
      const fits = Buffer.alloc(1280 - 40 - 8, 7);
      const tooBig = Buffer.alloc(1281 - 40 - 8, 7);
      expectFrame((await run(lb, frame(f, { payload: fits }))).dataOut, frame(f, { payload: fits, dmac: b.mac, smac: lbMac0 }));
      expectFrame((await run(lb, frame(f, { payload: tooBig }))).dataOut, frame(f, { payload: tooBig, dmac: b.neighMac, smac: lbMac0 }));
    });

    it.each(COMBOS)("hit, NAT %s %s: rewritten to the backend with correct checksums, sent to the record's MAC", async (family, proto) => {
      const backends = withCache(localBackends(family, 8080));
      await withNeighbours(backends);
      const table = await configureService(lb, family, proto, "nat", backends);
      for (const f of flows(family, proto, 80, 8, 45)) {
        const b = expectedBackend(table, backends, f);
        const out = await run(lb, frame(f, { payload: Buffer.from(`odd ${f.sport}!`) }));
        expect(out.retval).toBe(XDP.TX);
        expectFrame(out.dataOut, frame({ ...f, dst: b.address, dport: b.port }, { payload: Buffer.from(`odd ${f.sport}!`), dmac: b.mac, smac: lbMac0 }));
        expect(checksumsValid(out.dataOut)).toEqual(family === "v4" ? { ipv4Header: true, l4: true } : { l4: true });
      }
    });

    const ipipCases = [
      ["IPv4 in IPv4", "v4", "10.0.0.11", 4],
      ["IPv6 in IPv6", "v6", "fd00::11", 6],
      ["IPv4 in IPv6", "v4", "fd00::12", 6],
      ["IPv6 in IPv4", "v6", "10.0.0.12", 4],
    ] as const;

    it.each(ipipCases)("hit, IPIP %s with a configured tunnel source: the record's MAC, outer header exact", async (_name, family, backend, outer) => {
      await addNeighbour(backend, "02:00:00:00:bb:01", "lb0");
      const f = flows(family, "tcp", 80, 1, 46)[0]!;
      const inner = l3(f, { tos: 0x28 });
      const outerLen = outer === 4 ? 20 : 40;
      await writeConfig(lb, { reverseNat: false, tunnelSourceV4: "10.9.9.9", tunnelSourceV6: "fd00::99" });
      const want = (dmac: string) => ethernet({
        dst: dmac,
        src: lbMac0,
        etherType: outer === 4 ? ETH_P.IP : ETH_P.IPV6,
        payload:
          outer === 4
            ? ipv4({ src: "10.9.9.9", dst: backend, payload: inner, protocol: family === "v4" ? 4 : 41, tos: 0x28, ttl: 64, id: 0 })
            : ipv6({ src: "fd00::99", dst: backend, payload: inner, nextHeader: family === "v4" ? 4 : 41, trafficClass: 0x28, hopLimit: 64, flowLabel: lbFlowHash(f) & 0xfffff }),
      });
      // The encapsulated datagram just fits the cached MTU: the cache.
      await configureService(lb, family, "tcp", "ipip", { [`${backend}:80`]: { address: backend, port: 80, mac: "02:00:00:00:cc:01", mtu: inner.length + outerLen, dev: "lb0" } });
      let out = await run(lb, frame(f, { tos: 0x28 }));
      expect(out.retval).toBe(XDP.TX);
      expectFrame(out.dataOut, want("02:00:00:00:cc:01"));
      if (outer === 4) expect(checksumsValid(out.dataOut).ipv4Header).toBe(true);
      // One byte over: the FIB, whose neighbour entry says another MAC.
      await configureService(lb, family, "tcp", "ipip", { [`${backend}:80`]: { address: backend, port: 80, mac: "02:00:00:00:cc:01", mtu: inner.length + outerLen - 1, dev: "lb0" } });
      out = await run(lb, frame(f, { tos: 0x28 }));
      expect(out.retval).toBe(XDP.TX);
      expectFrame(out.dataOut, want("02:00:00:00:bb:01"));
    });

    it("IPIP without a configured tunnel source asks the FIB (for the source), cache or not", async () => {
      await addNeighbour("10.0.0.11", "02:00:00:00:bb:01", "lb0");
      await writeConfig(lb, { reverseNat: false });
      await configureService(lb, "v4", "tcp", "ipip", { "10.0.0.11:80": { address: "10.0.0.11", port: 80, mac: "02:00:00:00:cc:01", mtu: 1500, dev: "lb0" } });
      const f = flows("v4", "tcp", 80, 1, 47)[0]!;
      const out = await run(lb, frame(f));
      expect(out.retval).toBe(XDP.TX);
      expectFrame(out.dataOut, ethernet({ dst: "02:00:00:00:bb:01", src: lbMac0, etherType: ETH_P.IP, payload: ipv4({ src: "10.0.0.1", dst: "10.0.0.11", payload: l3(f), protocol: 4, ttl: 64, id: 0 }) }));
    });
  });

  describe("table changes", () => {
    let lb: LoadedProgram;
    beforeAll(async () => {
      await setForwarding(false); // static MACs tell the backends apart
    });
    afterEach(() => lb?.close());

    const fourBackends = (): Record<string, Backend> => ({
      ...localBackends("v4"),
      "10.0.0.14:8080": { address: "10.0.0.14", port: 8080, mac: "02:00:00:00:00:14", dev: "lb0" },
    });
    const macOf = (out: Buffer) => [...out.subarray(0, 6)].map((b) => b.toString(16).padStart(2, "0")).join(":");

    it("never drops while a one-backend addition or removal is half applied, in the order the design prescribes", async () => {
      lb = await loadProgram(OBJ);
      const all = fourBackends();
      const three = localBackends("v4");
      // Indexes stay with their backend across tables: 1..4 by identity.
      const ids = Object.keys(all).sort();
      const index = (id: string) => ids.indexOf(id) + 1;
      await lb.updateMap(MAPS.backends, Object.keys(three).map((id) => ({ key: Buffer.from(encodeIndex(index(id))), value: Buffer.from(encodeBackend(three[id]!)) })));
      const before = tableOf(three);
      const pin = lb.mapPin(MAPS.table);
      const apply = async (ops: ReturnType<typeof tableOperations>) =>
        lb.updateMap(MAPS.table, ops.map((o) => ({ key: Buffer.from(o.key), value: Buffer.from((o as { value: Uint8Array }).value) })));
      await apply(tableOperations(diffTable(buildTable([], M), before), 0, index, pin));
      await writeVip(lb, { address: VIP.v4, port: 80, protocol: "tcp" }, { vipIndex: 0, tableOffset: 0, tableSize: M, mode: "dsr", flowTable: false });
      const probe = flows("v4", "tcp", 80, 60, 40);
      const macs = async () => Promise.all(probe.map(async (f) => {
        const out = await run(lb, frame(f));
        expect(out.retval).toBe(XDP.TX);
        return macOf(out.dataOut);
      }));
      const valid = (records: Record<string, Backend>) => new Set(Object.values(records).map((b) => b.mac));

      // Add 10.0.0.14: its record first, then the slots, half of them, then the rest.
      const after = tableOf(all);
      const adding = tableOperations(diffTable(before, after), 0, index, pin);
      expect(adding.length).toBeLessThan(M / 4 * 1.5);
      await lb.updateMap(MAPS.backends, [{ key: Buffer.from(encodeIndex(index("10.0.0.14:8080"))), value: Buffer.from(encodeBackend(all["10.0.0.14:8080"]!)) }]);
      await apply(adding.slice(0, adding.length >> 1));
      for (const mac of await macs()) expect(valid(all).has(mac)).toBe(true);
      await apply(adding.slice(adding.length >> 1));
      probe.forEach((f) => expect(expectedBackend(after, all, f)).toBeDefined());
      expect(await macs()).toEqual(probe.map((f) => expectedBackend(after, all, f).mac));

      // Remove 10.0.0.12: slots first (half, then all), its record last.
      const { ["10.0.0.12:8080"]: removed, ...rest } = all;
      const final = tableOf(rest);
      const removing = tableOperations(diffTable(after, final), 0, index, pin);
      await apply(removing.slice(0, removing.length >> 1));
      for (const mac of await macs()) expect(valid(all).has(mac)).toBe(true);
      await apply(removing.slice(removing.length >> 1));
      const macsAfter = await macs();
      expect(macsAfter).not.toContain(removed!.mac);
      await lb.updateMap(MAPS.backends, [{ key: Buffer.from(encodeIndex(index("10.0.0.12:8080"))), value: Buffer.from(encodeBackend(undefined)) }]);
      expect(await macs()).toEqual(macsAfter);
      expect((await stat(lb, "noBackend")).packets).toBe(0);
    });

    it("drops and counts, never forwards, when a slot names a cleared record (the wrong order)", async () => {
      lb = await loadProgram(OBJ);
      const backends = localBackends("v4");
      const table = await configureService(lb, "v4", "tcp", "dsr", backends);
      const f = flows("v4", "tcp", 80, 1, 50)[0]!;
      const victim = table.backends.find((id) => backends[id] === expectedBackend(table, backends, f))!;
      await lb.updateMap(MAPS.backends, [{ key: Buffer.from(encodeIndex(indexOf(table, victim))), value: Buffer.from(encodeBackend(undefined)) }]);
      expect((await run(lb, frame(f))).retval).toBe(XDP.DROP);
      expect((await stat(lb, "noBackend")).packets).toBe(1);
    });

    it("drops traffic to a VIP without backends (its slots name index 0)", async () => {
      lb = await loadProgram(OBJ);
      await writeVip(lb, { address: VIP.v6, port: 80, protocol: "udp" }, { vipIndex: 3, tableOffset: 5 * M, tableSize: M, mode: "nat", flowTable: true });
      expect((await run(lb, frame(flows("v6", "udp", 80, 1)[0]!))).retval).toBe(XDP.DROP);
      expect((await stat(lb, "noBackend")).packets).toBe(1);
    });

    it("keeps established flows on their backend through a table change when the flow table is on; a SYN follows the table", async () => {
      lb = await loadProgram(OBJ);
      const backends = localBackends("v4");
      const table = await configureService(lb, "v4", "tcp", "dsr", backends, { flowTable: true });
      const f = flows("v4", "tcp", 80, 1, 60)[0]!;
      const first = expectedBackend(table, backends, f);
      expect(macOf((await run(lb, frame(f))).dataOut)).toBe(first.mac);
      // Every slot now names another backend.
      const other = table.backends.find((id) => backends[id] !== first)!;
      await lb.updateMap(MAPS.table, Array.from({ length: M }, (_, s) => ({ key: Buffer.from(encodeIndex(s)), value: Buffer.from(encodeIndex(indexOf(table, other))) })));
      expect(macOf((await run(lb, frame(f))).dataOut), "established flow").toBe(first.mac);
      expect((await stat(lb, "flowHit")).packets).toBe(1);
      const syn = frame(f, { flags: { syn: true } });
      expect(macOf((await run(lb, syn)).dataOut), "a new connection on the same 5-tuple").toBe(backends[other]!.mac);
      expect(macOf((await run(lb, frame(f))).dataOut), "now pinned to the new backend").toBe(backends[other]!.mac);
      const [pinned] = (await lb.dumpMap(MAPS.flows)).map((e) => [decodeFlowKey(e.key), decodeIndex(e.value)]);
      expect(pinned).toEqual([{ src: f.src, dst: f.dst, srcPort: f.sport, dstPort: 80, protocol: "tcp" }, indexOf(table, other)]);
    });

    it("moves a pinned flow once its backend's record is cleared", async () => {
      lb = await loadProgram(OBJ);
      const backends = localBackends("v4");
      const table = await configureService(lb, "v4", "udp", "dsr", backends, { flowTable: true });
      const f = flows("v4", "udp", 80, 1, 61)[0]!;
      const first = expectedBackend(table, backends, f);
      await run(lb, frame(f));
      const firstId = table.backends.find((id) => backends[id] === first)!;
      const rest = Object.fromEntries(Object.entries(backends).filter(([id]) => id !== firstId));
      const next = buildTable(Object.keys(rest).map((id) => ({ id })), M);
      await lb.updateMap(MAPS.table, tableOperations(diffTable(table, next), 0, (id) => indexOf(table, id), "").map((o) => ({ key: Buffer.from(o.key), value: Buffer.from((o as { value: Uint8Array }).value) })));
      expect(macOf((await run(lb, frame(f))).dataOut), "still pinned while the record exists").toBe(first.mac);
      await lb.updateMap(MAPS.backends, [{ key: Buffer.from(encodeIndex(indexOf(table, firstId))), value: Buffer.from(encodeBackend(undefined)) }]);
      expect(macOf((await run(lb, frame(f))).dataOut)).toBe(expectedBackend(next, rest, f).mac);
    });
  });

  describe("counters", () => {
    it("counts packets and bytes per VIP and per backend, summed over CPUs", async () => {
      await setForwarding(false);
      await withProgram(OBJ, async (lb) => {
        const backends = localBackends("v6");
        const table = await configureService(lb, "v6", "udp", "dsr", backends, { vipIndex: 17, offset: 3 * M });
        const f = flows("v6", "udp", 80, 1, 70)[0]!;
        const packet = frame(f);
        await runXdp(lb, packet, { netns: ns, ingressIfindex: lb0, repeat: 1000 });
        const b = expectedBackend(table, backends, f);
        const index = indexOf(table, table.backends.find((id) => backends[id] === b)!);
        const vipStats = sumCounters(await lb.lookupPerCpu(MAPS.vipStats, Buffer.from(encodeIndex(17))));
        const backendStats = sumCounters(await lb.lookupPerCpu(MAPS.backendStats, Buffer.from(encodeIndex(index))));
        expect(vipStats).toEqual({ packets: 1000, bytes: 1000 * packet.length });
        expect(backendStats).toEqual({ packets: 1000, bytes: 1000 * packet.length });
        expect(await stat(lb, "tx")).toEqual({ packets: 1000, bytes: 1000 * packet.length });
        const other = await run(lb, frame({ ...f, dport: 81 }));
        expect(other.retval).toBe(XDP.PASS);
        expect(await stat(lb, "notVip")).toEqual({ packets: 1, bytes: packet.length });
      });
    });
  });

  describe("lb_vip_index, the array in front of lb_vips", () => {
    let lb: LoadedProgram;
    const backends = localBackends("v4");
    const table = tableOf(backends);
    const vip = { address: VIP.v4, port: 80, protocol: "tcp" as const };
    const value: VipValue = { vipIndex: 0, tableOffset: 0, tableSize: M, mode: "dsr", flowTable: false };
    const flow: Flow = { src: "192.0.2.7", dst: VIP.v4, sport: 40000, dport: 80, proto: "tcp" };
    const writeSlot = (key: Uint8Array, slot: Uint8Array) => lb.updateMap(MAPS.vipIndex, [{ key: Buffer.from(encodeIndex(vipSlotOf(key))), value: Buffer.from(slot) }]);
    /** Balanced: XDP_TX to the table's backend by its static MAC (forwarding off), only the MACs changed. */
    const expectBalanced = async (f: Flow) => {
      const out = await run(lb, frame(f));
      expect(out.retval, `${f.dst}:${f.dport}/${f.proto}`).toBe(XDP.TX);
      expectFrame(out.dataOut, frame(f, { dmac: expectedBackend(table, backends, f).mac, smac: lbMac0 }));
    };
    const expectPassed = async (f: Flow) => {
      const packet = frame(f);
      const out = await run(lb, packet);
      expect(out.retval, `${f.dst}:${f.dport}/${f.proto}`).toBe(XDP.PASS);
      expectFrame(out.dataOut, packet);
    };
    /** A VIP key of the same family and protocol as `vip` that falls into the same slot. */
    const collidingWith = (k: typeof vip) => {
      const slot = vipSlotOf(encodeVipKey(k));
      for (let port = 1; port < 65536; port++) {
        const other = { ...k, port };
        if (port !== k.port && vipSlotOf(encodeVipKey(other)) === slot) return other;
      }
      throw new Error("no colliding port");
    };

    beforeEach(async () => {
      lb = await loadProgram(OBJ);
      await setForwarding(false);
      await writeBackends(lb, table, backends);
      await writeTable(lb, table, 0);
    });
    afterEach(() => lb?.close());

    it("a fresh index (all ASK) defers to lb_vips: the VIP is balanced, other traffic passes", async () => {
      await writeVip(lb, vip, value, { index: false });
      expect((await lb.dumpMap(MAPS.vipIndex)).every((e) => e.value.every((b) => b === 0))).toBe(true);
      await expectBalanced(flow);
      await expectPassed({ ...flow, dport: 81 });
    });

    it("ONE is read by the program with the hash the codec computes: VIPs found through their slots alone (lb_vips empty)", async () => {
      const keys = [
        ...Array.from({ length: 24 }, (_, i) => ({ address: `198.51.100.${10 + i * 9}`, port: 80 + i * 101, protocol: (i % 2 ? "udp" : "tcp") as "tcp" | "udp" })),
        ...Array.from({ length: 8 }, (_, i) => ({ address: `2001:db8:100::${(i * 4099).toString(16)}`, port: 443 + i, protocol: "tcp" as const })),
      ];
      expect(new Set(keys.map((k) => vipSlotOf(encodeVipKey(k)))).size).toBe(keys.length);
      // One IPv6 backend, index 9 (1-3 are the IPv4 table's), filling the IPv6 VIPs' table.
      await lb.updateMap(MAPS.backends, [{ key: Buffer.from(encodeIndex(9)), value: Buffer.from(encodeBackend({ address: "fd00::11", port: 0, mac: "02:00:00:00:00:66" })) }]);
      await lb.updateMap(MAPS.table, Array.from({ length: M }, (_, i) => ({ key: Buffer.from(encodeIndex(M + i)), value: Buffer.from(encodeIndex(9)) })));
      for (const k of keys) {
        const v6 = isV6(k.address);
        await writeSlot(encodeVipKey(k), encodeVipSlot("one", encodeVipKey(k), encodeVip({ ...value, tableOffset: v6 ? M : 0 })));
      }
      expect(await lb.dumpMap(MAPS.vips)).toEqual([]);
      for (const k of keys) {
        const f: Flow = { src: isV6(k.address) ? "2001:db8:c::7" : "192.0.2.7", dst: k.address, sport: 40000, dport: k.port, proto: k.protocol };
        if (!isV6(k.address)) {
          await expectBalanced(f);
          continue;
        }
        const out = await run(lb, frame(f));
        expect(out.retval, k.address).toBe(XDP.TX);
        expectFrame(out.dataOut, frame(f, { dmac: "02:00:00:00:00:66", smac: lbMac0 }));
      }
    });

    it("NONE is final: a key in lb_vips whose slot says NONE is passed, and counted as not a VIP", async () => {
      await writeVip(lb, vip, value, { index: false });
      await writeSlot(encodeVipKey(vip), encodeVipSlot("none"));
      await expectPassed(flow);
      expect((await stat(lb, "notVip")).packets).toBe(1);
    });

    it("ONE names the only key of its slot: another key there is passed without asking lb_vips", async () => {
      const other = collidingWith(vip);
      await writeVip(lb, other, value, { index: false }); // in lb_vips, but the slot below says otherwise
      await writeVip(lb, vip, value, { index: false });
      await writeSlot(encodeVipKey(vip), encodeVipSlot("one", encodeVipKey(vip), encodeVip(value)));
      await expectBalanced(flow);
      await expectPassed({ ...flow, dport: other.port });
    });

    it("two VIPs in one slot make it ASK, as the provider writes it: both balanced, through lb_vips", async () => {
      const other = collidingWith(vip);
      await writeVip(lb, vip, value);
      await writeVip(lb, other, { ...value, vipIndex: 1 });
      const slot = (await lb.dumpMap(MAPS.vipIndex)).find((e) => decodeIndex(e.key) === vipSlotOf(encodeVipKey(vip)))!;
      expect(slot.value.every((b) => b === 0), "the shared slot is ASK").toBe(true);
      await expectBalanced(flow);
      await expectBalanced({ ...flow, dport: other.port });
      await expectPassed({ ...flow, dport: 81 === other.port ? 82 : 81 });
    });
  });
});
