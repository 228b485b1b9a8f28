/**
 * Cost per packet of the Maglev load balancer, measured in the kernel by
 * BPF_PROG_TEST_RUN, next to an XDP program that only returns XDP_PASS (the
 * harness's own cost), both run on the same frames in the same namespace.
 *
 *   sudo npx tsx bench/xdp-maglev.ts [--repeat N] [--rounds N]
 *
 * Setup: a private network namespace with a veth "lb0" (10.0.0.1/24,
 * fd00::1/64), forwarding on, permanent neighbours for the backends, so every
 * VIP hit does a real bpf_fib_lookup that succeeds and ends in XDP_TX (runs
 * pass lb0 as the ingress interface); the last two cases turn forwarding off
 * to show the cost without the FIB walk. One VIP per family, 100 backends,
 * M = 65537. The records carry a static MAC but not the next-hop cache (no
 * MTU), so these rows time the per-packet FIB path; bench/dataplane.ts has
 * the cached rows.
 *
 * Only DSR can be repeated: BPF_PROG_TEST_RUN runs the program again on the
 * frame the previous run left, and DSR rewrites only MAC addresses. A NAT run
 * would see its own output (addressed to a backend) from the second repeat on;
 * IPIP would stack headers until the headroom runs out.
 *
 * Each figure is the median of `rounds` runs of `repeat` packets. Results are
 * also written to .bench/xdp-maglev.json.
 */
import { cpus, release } from "node:os";
import { ETH_P, ethernet, ipv4, ipv6, tcp } from "../test/kernel/packets";
import {
  buildObjects, createNetns, kernelTestsUnavailable, loadProgram, objectPath, REPO_ROOT, runXdp, XDP, type LoadedProgram, type TestNetns,
} from "../test/kernel/progRun";
import { encodeBackend, encodeConfig, encodeIndex, encodeVip, encodeVipKey, MAPS, tableOperations } from "../provider/maglev/codec";
import { buildTable, diffTable } from "../provider/maglev/table";
import { numberOption, printTable, writeBenchRecord } from "./support";

const REPEAT = numberOption("repeat", 1_000_000);
const ROUNDS = numberOption("rounds", 5);
export const M = 65537;
export const N = 100;
export const VIP = { v4: "198.51.100.10", v6: "2001:db8:100::10" };

export function backendAddress(family: "v4" | "v6", i: number): string {
  return family === "v4" ? `10.0.${1 + (i >> 8)}.${i & 255}` : `fd00::1:${i.toString(16)}`;
}

async function configure(lb: LoadedProgram, ns: TestNetns, o: { flowTable: boolean; reverseNat: boolean }): Promise<void> {
  let offset = 0;
  let next = 1;
  for (const [vipIndex, family] of (["v4", "v6"] as const).entries()) {
    const ids = Array.from({ length: N }, (_, i) => backendAddress(family, i + 1));
    const index = new Map(ids.map((id) => [id, next++]));
    await lb.updateMap(MAPS.backends, ids.map((id) => ({ key: Buffer.from(encodeIndex(index.get(id)!)), value: Buffer.from(encodeBackend({ address: id, port: 80, mac: "02:00:00:00:00:01" })) })));
    const table = buildTable(ids.map((id) => ({ id })), M);
    const ops = tableOperations(diffTable(buildTable([], M), table), offset, (id) => index.get(id)!, lb.mapPin(MAPS.table));
    await lb.updateMap(MAPS.table, ops.map((op) => ({ key: Buffer.from(op.key), value: Buffer.from((op as { value: Uint8Array }).value) })));
    await lb.updateMap(MAPS.vips, [{
      key: Buffer.from(encodeVipKey({ address: VIP[family], port: 80, protocol: "tcp" })),
      value: Buffer.from(encodeVip({ vipIndex, tableOffset: offset, tableSize: M, mode: "dsr", flowTable: o.flowTable })),
    }]);
    offset += M;
    if (ns) {
      for (const id of ids) await ns.ip(family === "v4" ? "-4" : "-6", "neigh", "replace", id, "lladdr", "02:00:00:00:aa:01", "dev", "lb0", "nud", "permanent");
    }
  }
  await lb.updateMap(MAPS.config, [{ key: Buffer.from(encodeIndex(0)), value: Buffer.from(encodeConfig({ reverseNat: o.reverseNat })) }]);
}

export function frame(src: string, dst: string, dport = 80): Buffer {
  const seg = tcp({ srcPort: 40000, dstPort: dport, flags: { ack: true }, payload: Buffer.alloc(18) });
  const v6 = src.includes(":");
  return ethernet({
    dst: "02:00:00:00:00:aa",
    src: "02:00:00:00:00:fe",
    etherType: v6 ? ETH_P.IPV6 : ETH_P.IP,
    payload: v6 ? ipv6({ src, dst, payload: seg }) : ipv4({ src, dst, payload: seg }),
  });
}

async function median(prog: LoadedProgram, ns: TestNetns, ifindex: number, packet: Buffer, verdict: number): Promise<number> {
  const runs: number[] = [];
  for (let i = 0; i < ROUNDS; i++) {
    const r = await runXdp(prog, packet, { netns: ns, ingressIfindex: ifindex, repeat: REPEAT });
    if (r.retval !== verdict) throw new Error(`expected verdict ${verdict}, got ${r.retval}`);
    runs.push(r.durationNs);
  }
  runs.sort((a, b) => a - b);
  return runs[Math.floor(runs.length / 2)]!;
}

async function main(): Promise<void> {
  const unavailable = kernelTestsUnavailable();
  if (unavailable) {
    console.error(`bench/xdp-maglev: ${unavailable}`);
    process.exit(2);
  }
  await buildObjects();
  const ns = await createNetns();
  const plain = await loadProgram(objectPath("xdp_maglev"));
  const pinned = await loadProgram(objectPath("xdp_maglev"));
  const natOn = await loadProgram(objectPath("xdp_maglev"));
  const empty = await loadProgram(objectPath("empty_xdp"));
  try {
    await ns.ip("link", "add", "lb0", "type", "veth", "peer", "name", "lb0p");
    await ns.ip("link", "set", "lb0", "up");
    await ns.ip("link", "set", "lb0p", "up");
    await ns.ip("addr", "add", "10.0.0.1/16", "dev", "lb0");
    await ns.ip("-6", "addr", "add", "fd00::1/64", "dev", "lb0", "nodad");
    await ns.sysctl("net.ipv4.conf.all.forwarding", 1);
    await ns.sysctl("net.ipv6.conf.all.forwarding", 1);
    const { ifindex } = await ns.link("lb0");
    await configure(plain, ns, { flowTable: false, reverseNat: false });
    await configure(pinned, ns, { flowTable: true, reverseNat: false });
    await configure(natOn, ns, { flowTable: false, reverseNat: true });

    const cases: { name: string; prog: LoadedProgram; frame: Buffer; verdict: number; forwarding?: boolean }[] = [];
    for (const family of ["v4", "v6"] as const) {
      const client = family === "v4" ? "192.0.2.7" : "2001:db8:c::7";
      const F = family === "v4" ? "IPv4" : "IPv6";
      cases.push(
        { name: `${F} VIP hit, DSR, FIB -> XDP_TX`, prog: plain, frame: frame(client, VIP[family]), verdict: XDP.TX },
        { name: `${F} VIP hit, DSR, flow table on`, prog: pinned, frame: frame(client, VIP[family]), verdict: XDP.TX },
        { name: `${F} non-VIP (other port)`, prog: plain, frame: frame(client, VIP[family], 81), verdict: XDP.PASS },
        { name: `${F} non-VIP, reverse-NAT lookup on`, prog: natOn, frame: frame(client, VIP[family], 81), verdict: XDP.PASS },
      );
    }
    // Forwarding off: bpf_fib_lookup returns FWD_DISABLED at once and the
    // backend's static MAC is used, which isolates the cost of the FIB walk.
    for (const family of ["v4", "v6"] as const) {
      const client = family === "v4" ? "192.0.2.7" : "2001:db8:c::7";
      cases.push({ name: `${family === "v4" ? "IPv4" : "IPv6"} VIP hit, DSR, static MAC (no FIB)`, prog: plain, frame: frame(client, VIP[family]), verdict: XDP.TX, forwarding: false });
    }

    const rows: { case: string; verdict: string; lbNs: number; emptyNs: number; ratio: number; addedNs: number }[] = [];
    for (const c of cases) {
      if (c.forwarding === false) {
        await ns.sysctl("net.ipv4.conf.all.forwarding", 0);
        await ns.sysctl("net.ipv6.conf.all.forwarding", 0);
      }
      const emptyNs = await median(empty, ns, ifindex, c.frame, XDP.PASS);
      const lbNs = await median(c.prog, ns, ifindex, c.frame, c.verdict);
      rows.push({ case: c.name, verdict: c.verdict === XDP.TX ? "TX" : "PASS", lbNs, emptyNs, ratio: lbNs / emptyNs, addedNs: lbNs - emptyNs });
    }

    const info = (await plain.progInfo()) as unknown as { bytes_jited?: number; bytes_xlated?: number };
    console.log(`kernel ${release()}, ${cpus()[0]?.model ?? "unknown CPU"}`);
    console.log(`BPF_PROG_TEST_RUN in a private netns (ingress veth lb0), repeat ${REPEAT.toLocaleString("en")}, median of ${ROUNDS}`);
    console.log(`${N} backends per family, M = ${M}; xdp_maglev xlated ${info.bytes_xlated ?? "?"} B, JIT ${info.bytes_jited ?? "?"} B\n`);
    const header = ["case", "verdict", "maglev ns/pkt", "empty XDP ns/pkt", "ratio", "added ns"];
    const table = rows.map((r) => [r.case, r.verdict, String(r.lbNs), String(r.emptyNs), `${r.ratio.toFixed(2)}x`, String(r.addedNs)]);
    printTable(header, table, [0, 1]);

    writeBenchRecord("xdp-maglev", { repeat: REPEAT, rounds: ROUNDS, backends: N, size: M, rows });
  } finally {
    plain.close();
    pinned.close();
    natOn.close();
    empty.close();
    ns.close();
  }
}

// Only when run as a script: bench/dataplane.ts imports the generators above.
if (require.main === module) {
  main().catch((e) => {
    console.error(e instanceof Error ? e.message : e);
    process.exit(1);
  });
}
