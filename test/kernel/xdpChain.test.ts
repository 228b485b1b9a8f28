// The XDP chain (bpf/include/xdp_chain.h, bpf/xdp_dispatcher.bpf.c) in the
// running kernel, through BPF_PROG_TEST_RUN on the dispatcher: a firewall and
// a load balancer loaded against one pinned xdp_chain, each placed in a slot
// the way the provider places them (xdp_chain_next written first, then the
// slot). Verdicts and both programs' own counters show who saw each packet.
//
// Namespace (so bpf_fib_lookup answers what this file sets up):
//   lb0 10.0.0.1/24; clients 192.0.2.0/24 via 10.0.0.254; backend 10.0.0.11.
import { execFileSync } from "node:child_process";
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { ETH_P, ethernet, ipv4, tcp } from "./packets";
import { buildObjects, createNetns, kernelTestsUnavailable, loadProgram, objectPath, runXdp, XDP, type LoadedProgram, type TestNetns } from "./progRun";
import { batchText } from "../../provider/remote/mapOperations";
import { denyOperations, planDeny } from "../../provider/xdpFirewall/plan";
import { encodeBackend, encodeIndex, encodeVip, encodeVipKey, LB_STATS, MAPS, tableOperations, type LbStat } from "../../provider/maglev/codec";
import { buildTable, diffTable } from "../../provider/maglev/table";
import { sumCounters } from "../../provider/counters";

const unavailable = kernelTestsUnavailable();
if (unavailable) console.warn(`test/kernel/xdpChain: skipped: ${unavailable}`);

const GW = { address: "10.0.0.254", mac: "02:00:00:00:00:fe" };
const BACKEND = { address: "10.0.0.11", mac: "02:00:00:00:aa:11" };
const VIP = "198.51.100.10";
const ALLOWED = "192.0.2.7";
const DENIED = "192.0.2.66";
const M = 1009;

let ns: TestNetns;
let lbMac = "";
let lbIfindex = 0;
let dispatcher: LoadedProgram;
let firewall: LoadedProgram;
let balancer: LoadedProgram;

const chainPin = () => dispatcher.mapPin("xdp_chain");
const u32 = (n: number) => [n & 0xff, (n >> 8) & 0xff, (n >> 16) & 0xff, (n >>> 24) & 0xff].map(String);

/** As the provider does it: the member's xdp_chain_next first, then its slot. */
function place(member: LoadedProgram, slot: number): void {
  execFileSync("bpftool", ["map", "update", "pinned", member.mapPin("xdp_chain_next"), "key", ...u32(0), "value", ...u32(slot + 1)]);
  execFileSync("bpftool", ["map", "update", "pinned", chainPin(), "key", ...u32(slot), "value", "pinned", member.progPin]);
}

function clearChain(): void {
  for (let slot = 0; slot < 8; slot++) {
    try {
      execFileSync("bpftool", ["map", "delete", "pinned", chainPin(), "key", ...u32(slot)], { stdio: "ignore" });
    } catch {
      // an empty slot
    }
  }
  for (const member of [firewall, balancer]) {
    execFileSync("bpftool", ["map", "update", "pinned", member.mapPin("xdp_chain_next"), "key", ...u32(0), "value", ...u32(0)]);
  }
}

function frame(src: string, dst: string, dport = 80): Buffer {
  const payload = ipv4({ src, dst, payload: tcp({ srcPort: 40000, dstPort: dport, flags: { syn: true } }) });
  return ethernet({ dst: lbMac, src: GW.mac, etherType: ETH_P.IP, payload });
}

const run = (prog: LoadedProgram, f: Buffer) => runXdp(prog, f, { netns: ns, ingressIfindex: lbIfindex });

interface Seen {
  firewallPass: number;
  firewallDrop: number;
  vipPackets: number;
  notVip: number;
}

async function seen(): Promise<Seen> {
  const fw = async (index: number) => sumCounters(await firewall.lookupPerCpu("fw_stats", Buffer.from(encodeIndex(index)))).packets;
  const lb = async (name: LbStat) => sumCounters(await balancer.lookupPerCpu(MAPS.stats, Buffer.from(encodeIndex(LB_STATS.indexOf(name))))).packets;
  const vip = sumCounters(await balancer.lookupPerCpu(MAPS.vipStats, Buffer.from(encodeIndex(0)))).packets;
  return { firewallPass: Number(await fw(0)), firewallDrop: Number(await fw(1)), vipPackets: Number(vip), notVip: Number(await lb("notVip")) };
}

/** Runs `f` through the dispatcher; returns the verdict and who counted the packet. */
async function through(f: Buffer): Promise<{ verdict: number; dataOut: Buffer; delta: Seen }> {
  const before = await seen();
  const { retval, dataOut } = await run(dispatcher, f);
  const after = await seen();
  const delta = Object.fromEntries(Object.entries(after).map(([k, v]) => [k, v - before[k as keyof Seen]])) as unknown as Seen;
  return { verdict: retval, dataOut, delta };
}

const macOf = (out: Buffer) => [...out.subarray(0, 6)].map((b) => b.toString(16).padStart(2, "0")).join(":");

async function setUp(): Promise<void> {
  ns = await createNetns();
  await ns.ip("link", "add", "lb0", "type", "veth", "peer", "name", "lb0p");
  await ns.ip("link", "set", "lb0", "up");
  await ns.ip("link", "set", "lb0p", "up");
  await ns.ip("addr", "add", "10.0.0.1/24", "dev", "lb0");
  // bpf_fib_lookup answers "forwarding disabled" otherwise.
  await ns.sysctl("net.ipv4.conf.all.forwarding", 1);
  await ns.ip("route", "add", "192.0.2.0/24", "via", GW.address);
  for (const n of [GW, BACKEND]) await ns.ip("neigh", "replace", n.address, "lladdr", n.mac, "dev", "lb0", "nud", "permanent");
  ({ ifindex: lbIfindex, mac: lbMac } = await ns.link("lb0"));

  dispatcher = await loadProgram(objectPath("xdp_dispatcher"));
  firewall = await loadProgram(objectPath("xdp_firewall"), "xdp", { xdp_chain: chainPin() });
  balancer = await loadProgram(objectPath("xdp_maglev"), "xdp", { xdp_chain: chainPin() });

  // Through the provider's plan: the record and the index the program looks up.
  await firewall.batchText(batchText(denyOperations(planDeny([`${DENIED}/32`], []), (m) => firewall.mapPin(m))));

  const id = `${BACKEND.address}:80`;
  const table = buildTable([{ id }], M);
  await balancer.updateMap(MAPS.backends, [{ key: Buffer.from(encodeIndex(1)), value: Buffer.from(encodeBackend({ address: BACKEND.address, port: 80 })) }]);
  const slots = tableOperations(diffTable(buildTable([], M), table), 0, () => 1, balancer.mapPin(MAPS.table));
  await balancer.updateMap(MAPS.table, slots.map((o) => ({ key: Buffer.from(o.key), value: Buffer.from((o as { value: Uint8Array }).value) })));
  await balancer.updateMap(MAPS.vips, [{
    key: Buffer.from(encodeVipKey({ address: VIP, port: 80, protocol: "tcp" })),
    value: Buffer.from(encodeVip({ vipIndex: 0, tableOffset: 0, tableSize: M, mode: "dsr", flowTable: false })),
  }]);
}

describe.skipIf(unavailable !== undefined)("xdp chain: dispatcher, firewall and load balancer on one hook", { timeout: 60_000 }, () => {
  beforeAll(async () => {
    await buildObjects();
    await setUp();
  }, 60_000);
  afterAll(() => {
    for (const p of [firewall, balancer, dispatcher]) p?.close();
    ns?.close();
  });
  beforeEach(clearChain);
  afterEach(clearChain);

  it("the dispatcher passes everything while its chain is empty", async () => {
    const { verdict, delta } = await through(frame(DENIED, VIP));
    expect(verdict).toBe(XDP.PASS);
    expect(delta).toEqual({ firewallPass: 0, firewallDrop: 0, vipPackets: 0, notVip: 0 });
  });

  it("the dispatcher's only map is the chain the members are loaded against", async () => {
    expect(dispatcher.mapNames()).toEqual(["xdp_chain"]);
    const info = JSON.parse(execFileSync("bpftool", ["-j", "map", "show", "pinned", chainPin()]).toString()) as { id: number };
    const idOf = (prog: LoadedProgram) => JSON.parse(execFileSync("bpftool", ["-j", "map", "show", "pinned", prog.mapPin("xdp_chain")]).toString()).id;
    expect([idOf(firewall), idOf(balancer)]).toEqual([info.id, info.id]);
  });

  describe("firewall in slot 0, load balancer in slot 1 (the classic deployment)", () => {
    beforeEach(() => {
      place(firewall, 0);
      place(balancer, 1);
    });

    it("a denied client's VIP packet is dropped by the firewall and never reaches the balancer", async () => {
      const { verdict, delta } = await through(frame(DENIED, VIP));
      expect(verdict).toBe(XDP.DROP);
      expect(delta).toEqual({ firewallPass: 0, firewallDrop: 1, vipPackets: 0, notVip: 0 });
    });

    it("an allowed client's VIP packet passes the firewall and is balanced to the backend (XDP_TX towards its MAC)", async () => {
      const { verdict, dataOut, delta } = await through(frame(ALLOWED, VIP));
      expect(verdict).toBe(XDP.TX);
      expect(macOf(dataOut)).toBe(BACKEND.mac);
      expect(delta).toEqual({ firewallPass: 1, firewallDrop: 0, vipPackets: 1, notVip: 0 });
    });

    it("an allowed packet for no VIP passes both and reaches the stack", async () => {
      const { verdict, delta } = await through(frame(ALLOWED, "10.0.0.1", 22));
      expect(verdict).toBe(XDP.PASS);
      expect(delta).toEqual({ firewallPass: 1, firewallDrop: 0, vipPackets: 0, notVip: 1 });
    });
  });

  it("slots are priorities: with the balancer first, a denied client's VIP packet is balanced before the firewall could drop it", async () => {
    place(balancer, 0);
    place(firewall, 3);
    const vip = await through(frame(DENIED, VIP));
    expect(vip.verdict).toBe(XDP.TX);
    expect(vip.delta).toEqual({ firewallPass: 0, firewallDrop: 0, vipPackets: 1, notVip: 0 });
    const other = await through(frame(DENIED, "10.0.0.1", 22));
    expect(other.verdict).toBe(XDP.DROP);
    expect(other.delta).toEqual({ firewallPass: 0, firewallDrop: 1, vipPackets: 0, notVip: 1 });
  });

  it("a member that leaves its slot is skipped; the rest of the chain still runs", async () => {
    place(firewall, 0);
    place(balancer, 5);
    execFileSync("bpftool", ["map", "delete", "pinned", chainPin(), "key", ...u32(0)]);
    const { verdict, delta } = await through(frame(DENIED, VIP));
    expect(verdict).toBe(XDP.TX);
    expect(delta).toEqual({ firewallPass: 0, firewallDrop: 0, vipPackets: 1, notVip: 0 });
  });

  it("a member whose xdp_chain_next is 0 (attached alone) never continues into the chain", async () => {
    place(balancer, 1);
    const before = await seen();
    const { retval } = await run(firewall, frame(ALLOWED, VIP));
    expect(retval).toBe(XDP.PASS);
    expect((await seen()).vipPackets).toBe(before.vipPackets);
  });
});
