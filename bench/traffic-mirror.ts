/**
 * What mirroring costs.
 *
 * 1. ns per packet in the kernel (BPF_PROG_TEST_RUN) of tc_mirror with 64
 *    filters, for packets that match the first filter, the last one, or none,
 *    IPv4 and IPv6, next to an empty TC program on the same frames in the same
 *    run. A matching packet's figure includes the copy: bpf_clone_redirect to
 *    a veth in the root namespace.
 * 2. Bulk TCP throughput between two lab namespaces, with the mirror on h1's
 *    eth0 in both directions copying every packet (to a local veth, and
 *    through a VXLAN tunnel to h2), copying nothing (64 filters, none
 *    matching), and detached, as ratios to the last. The setups take turns
 *    transfer by transfer; each figure is the median of its transfers.
 *
 *   sudo npx vite-node bench/traffic-mirror.ts [--repeat N] [--rounds N] [--megabytes N] [--transfers N]
 *
 * Results are also written to .bench/traffic-mirror.json.
 */
import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { cpus, release } from "node:os";
import { checkInputs } from "../provider/dynamicAdapter";
import { closeAllSessions } from "../provider/remote/ssh";
import { CONFIG_MAP, decodeConfig, STAT, STATS_MAP } from "../provider/trafficMirror/codec";
import { mirrorOperations, planMirror } from "../provider/trafficMirror/plan";
import { filterRecord, trafficMirrorSchema, type MirrorFilter, type TrafficMirrorInputs } from "../provider/trafficMirror/schema";
import { ipFrame, tcp, udp } from "../test/kernel/packets";
import { trafficMirrorKind as mirror } from "../provider/trafficMirror/lifecycle";
import { buildObjects, kernelTestsUnavailable, loadProgram, objectPath, sumCounters, type LoadedProgram } from "../test/kernel/progRun";
import { createLab, type Lab, type LabClient, type LabHost } from "../test/lab/lab";
import { sixtyFourFilters } from "./mirrorFilters";
import { numberOption, printTable, writeBenchRecord } from "./support";

const REPEAT = numberOption("repeat", 1_000_000);
const ROUNDS = numberOption("rounds", 5);
const MEGABYTES = numberOption("megabytes", 300);
const TRANSFERS = numberOption("transfers", 7);
const TC_ACT_UNSPEC = 0xffffffff;

// ---------------------------------------------------------------- 1. BPF_PROG_TEST_RUN

async function configure(prog: LoadedProgram, targetIfindex: number, filters: MirrorFilter[]): Promise<string[]> {
  const config = decodeConfig((await prog.dumpMap(CONFIG_MAP))[0]!.value);
  const record = filterRecord(filters);
  const plan = planMirror({ targetIfindex, sampleRate: 1, filters: record }, { config, filters: {} });
  for (const op of mirrorOperations(plan, (m) => m)) {
    if (op.op === "update") await prog.updateMap(op.map, [{ key: Buffer.from(op.key), value: Buffer.from(op.value) }]);
  }
  return Object.keys(record);
}

async function median(prog: LoadedProgram, frame: Buffer): Promise<number> {
  const runs: number[] = [];
  for (let i = 0; i < ROUNDS; i++) {
    const r = await prog.run(frame, { repeat: REPEAT });
    if (r.retval !== TC_ACT_UNSPEC && r.retval !== 0) throw new Error(`unexpected verdict ${r.retval}`);
    runs.push(r.durationNs);
  }
  runs.sort((a, b) => a - b);
  return runs[Math.floor(runs.length / 2)]!;
}

async function mirroredCount(prog: LoadedProgram): Promise<bigint> {
  return sumCounters(await prog.lookupPerCpu(STATS_MAP, Buffer.from([STAT.MIRRORED, 0, 0, 0]))).packets;
}

interface KernelRow {
  case: string;
  mirrored: boolean;
  mirrorNs: number;
  emptyNs: number;
  addedNs: number;
}

async function kernelBench(): Promise<{ rows: KernelRow[]; jitBytes: number | undefined }> {
  const veth = `bfmb${process.pid % 100000}`;
  const del = () => {
    try {
      execFileSync("ip", ["link", "del", `${veth}a`], { stdio: "ignore" });
    } catch {
      // gone
    }
  };
  del();
  execFileSync("ip", ["link", "add", `${veth}a`, "type", "veth", "peer", "name", `${veth}b`]);
  process.once("exit", del);
  const mirrorProg = await loadProgram(objectPath("tc_mirror"), "tc");
  const allProg = await loadProgram(objectPath("tc_mirror"), "tc");
  const empty = await loadProgram(objectPath("empty_tc"), "tc");
  try {
    for (const dev of [`${veth}a`, `${veth}b`]) {
      execFileSync("sysctl", ["-qw", `net.ipv6.conf.${dev}.disable_ipv6=1`]);
      execFileSync("ip", ["link", "set", dev, "up"]);
    }
    const ifindex = Number(readFileSync(`/sys/class/net/${veth}a/ifindex`, "utf8"));
    const keys = await configure(mirrorProg, ifindex, sixtyFourFilters());
    await configure(allProg, ifindex, []);
    if (keys.length !== 64) throw new Error(`expected 64 filters, got ${keys.length}`);
    // The first key is 10.0.0.0/16 → 192.0.2.0/24 port 8000; the last an IPv6 UDP filter.
    const first = keys[0]!;
    const last = keys[63]!;
    const lastSource = /src net (\S+)\/48/.exec(last)![1]!;
    const lastPort = Number(/dst port (\d+)/.exec(last)![1]);
    const payload = Buffer.alloc(64, 0x61);
    const cases: { name: string; frame: Buffer; mirrored: boolean; prog: LoadedProgram }[] = [
      { name: `IPv4 TCP, matches filter 1 of 64 (${first})`, frame: ipFrame({ src: "10.0.0.1", dst: "192.0.2.1", payload: tcp({ srcPort: 40000, dstPort: 8000, payload }) }), mirrored: true, prog: mirrorProg },
      { name: `IPv6 UDP, matches filter 64 of 64 (${last})`, frame: ipFrame({ src: lastSource.replace(/::$/, "::1"), dst: "2001:db8:ffff::1", payload: udp({ srcPort: 40000, dstPort: lastPort, payload }) }), mirrored: true, prog: mirrorProg },
      { name: "IPv4 TCP, matches none of 64", frame: ipFrame({ src: "10.99.0.1", dst: "192.0.2.1", payload: tcp({ srcPort: 40000, dstPort: 8000, payload }) }), mirrored: false, prog: mirrorProg },
      { name: "IPv6 UDP, matches none of 64", frame: ipFrame({ src: "2001:db8:ffff::1", dst: "2001:db8:ffff::2", payload: udp({ srcPort: 40000, dstPort: 9000, payload }) }), mirrored: false, prog: mirrorProg },
      { name: "IPv4 TCP, no filters (mirror all)", frame: ipFrame({ src: "10.99.0.1", dst: "192.0.2.1", payload: tcp({ srcPort: 40000, dstPort: 8000, payload }) }), mirrored: true, prog: allProg },
    ];
    const rows: KernelRow[] = [];
    for (const c of cases) {
      const before = await mirroredCount(c.prog);
      await c.prog.run(c.frame);
      const copied = (await mirroredCount(c.prog)) > before;
      if (copied !== c.mirrored) throw new Error(`${c.name}: expected mirrored=${c.mirrored}`);
      const emptyNs = await median(empty, c.frame);
      const mirrorNs = await median(c.prog, c.frame);
      rows.push({ case: c.name, mirrored: c.mirrored, mirrorNs, emptyNs, addedNs: mirrorNs - emptyNs });
    }
    const info = (await mirrorProg.progInfo()) as unknown as { bytes_jited?: number };
    return { rows, jitBytes: info.bytes_jited };
  } finally {
    mirrorProg.close();
    allProg.close();
    empty.close();
    del();
  }
}

// ---------------------------------------------------------------- 2. lab throughput

interface ThroughputRow {
  setup: string;
  flow: string;
  mbitPerSecond: number;
  ratio: number;
  mirroredPackets: number;
}

async function transfer(lab: Lab, from: { host: LabHost } | { client: LabClient }, to: { host: LabHost } | { client: LabClient }, toAddress: string): Promise<number> {
  const run = (where: { host: LabHost } | { client: LabClient }, argv: string[]) =>
    "host" in where ? lab.inHost(where.host, argv) : lab.inClient(where.client, argv);
  const receiver = run(to, ["sh", "-c", "socat -u TCP-LISTEN:5001,reuseaddr STDOUT | wc -c"]);
  await new Promise((r) => setTimeout(r, 200));
  const start = process.hrtime.bigint();
  await run(from, ["sh", "-c", `dd if=/dev/zero bs=1M count=${MEGABYTES} 2>/dev/null | socat -u STDIN TCP:${toAddress}:5001`]);
  const received = Number(String((await receiver).stdout).trim());
  const seconds = Number(process.hrtime.bigint() - start) / 1e9;
  if (received !== MEGABYTES * 1024 * 1024) throw new Error(`received ${received} bytes, sent ${MEGABYTES} MiB`);
  return (received * 8) / seconds / 1e6;
}

async function labBench(): Promise<ThroughputRow[]> {
  const lab = await createLab("mirbnch", { hosts: 2, clients: 1 });
  const [h1, h2] = lab.hosts as [LabHost, LabHost];
  const c1 = lab.clients[0]!;
  const privateKey = readFileSync(lab.privateKeyPath, "utf8");
  const inputs = (patch: Record<string, unknown>) =>
    checkInputs(trafficMirrorSchema, {
      host: { address: h1.address, hostKey: h1.hostKey },
      credentials: { privateKey },
      interface: "eth0",
      name: "bench",
      direction: "both",
      ...patch,
    }).inputs as TrafficMirrorInputs;
  try {
    await lab.inHost(h1, ["ip", "link", "add", "mir0", "type", "veth", "peer", "name", "mir0p"]);
    for (const dev of ["mir0", "mir0p"]) await lab.inHost(h1, ["ip", "link", "set", dev, "up"]);
    // The collector decapsulates (and drops) what it receives.
    await lab.inHost(h2, ["ip", "link", "add", "col0", "type", "vxlan", "id", "42", "dstport", "4789", "local", h2.address, "nolearning"]);
    await lab.inHost(h2, ["ip", "link", "set", "col0", "up"]);

    // One resource, switched between setups by in-place updates, so that the
    // setups take turns round by round and slow drift of this VM's speed
    // spreads over all of them instead of favouring one.
    const setups: { name: string; inputs: TrafficMirrorInputs }[] = [
      { name: "no mirror (program detached)", inputs: inputs({ direction: "none", filters: [], target: { interface: "mir0" } }) },
      { name: "mirror attached, 64 filters, none matching", inputs: inputs({ filters: sixtyFourFilters(), target: { interface: "mir0" } }) },
      { name: "mirror all packets -> local veth", inputs: inputs({ filters: [], target: { interface: "mir0" } }) },
      { name: "mirror all packets -> VXLAN to h2", inputs: inputs({ filters: [], target: { tunnel: { type: "vxlan", remote: h2.address, vni: 42 } } }) },
    ];
    const flows = [
      { name: "h1 -> c1 (data mirrored on egress)", from: { host: h1 }, to: { client: c1 }, address: c1.address },
      { name: "c1 -> h1 (data mirrored on ingress)", from: { client: c1 }, to: { host: h1 }, address: h1.address },
    ];
    const made = await mirror.create(setups[0]!.inputs);
    let outs = made.outs;
    const rows: ThroughputRow[] = [];
    try {
      for (const flow of flows) {
        const rates = setups.map((): number[] => []);
        const copies = setups.map(() => 0);
        await transfer(lab, flow.from, flow.to, flow.address); // warm-up
        for (let round = 0; round < TRANSFERS; round++) {
          for (const [i, setup] of setups.entries()) {
            outs = await mirror.update(made.id, outs, setup.inputs);
            rates[i]!.push(await transfer(lab, flow.from, flow.to, flow.address));
            const after = (await mirror.read(made.id, outs))!.outs.counters.mirroredPackets;
            copies[i]! += after - outs.counters.mirroredPackets;
          }
        }
        const medians = rates.map((r) => [...r].sort((a, b) => a - b)[Math.floor(r.length / 2)]!);
        for (const [i, setup] of setups.entries()) {
          rows.push({ setup: setup.name, flow: flow.name, mbitPerSecond: medians[i]!, ratio: medians[i]! / medians[0]!, mirroredPackets: copies[i]! });
        }
      }
    } finally {
      await mirror.delete(made.id, outs);
    }
    return rows;
  } finally {
    closeAllSessions();
    await lab.destroy();
  }
}

// ---------------------------------------------------------------- report

async function main(): Promise<void> {
  const unavailable = kernelTestsUnavailable();
  if (unavailable) {
    console.error(`bench/traffic-mirror: ${unavailable}`);
    process.exit(2);
  }
  await buildObjects();
  const kernel = await kernelBench();
  console.log(`kernel ${release()}, ${cpus()[0]?.model ?? "unknown CPU"}, ${cpus().length} CPUs`);
  console.log(`BPF_PROG_TEST_RUN, repeat ${REPEAT.toLocaleString("en")}, median of ${ROUNDS}; tc_mirror JIT size ${kernel.jitBytes ?? "?"} bytes`);
  console.log("A mirrored packet's time includes bpf_clone_redirect to a veth (the copy really leaves).\n");
  printTable(
    ["case (64 filters unless noted)", "copied", "tc_mirror ns/pkt", "empty TC ns/pkt", "added ns"],
    kernel.rows.map((r) => [r.case, r.mirrored ? "yes" : "no", String(r.mirrorNs), String(r.emptyNs), String(r.addedNs)]),
  );

  const lab = await labBench();
  console.log(`\nBulk TCP (socat, ${MEGABYTES} MiB per transfer, median of ${TRANSFERS}, setups interleaved) between lab namespaces; mirror on h1 eth0, both directions\n`);
  printTable(
    ["flow", "setup", "Mbit/s", "vs detached", "copies made"],
    lab.map((r) => [r.flow, r.setup, r.mbitPerSecond.toFixed(0), `${r.ratio.toFixed(2)}x`, String(r.mirroredPackets)]),
    [0, 1],
  );

  writeBenchRecord("traffic-mirror", { kernel: release(), repeat: REPEAT, rounds: ROUNDS, megabytes: MEGABYTES, transfers: TRANSFERS, kernelRows: kernel.rows, throughput: lab });
}

main().catch((e) => {
  console.error(e instanceof Error ? e.stack ?? e.message : e);
  process.exit(1);
});
