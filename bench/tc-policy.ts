/**
 * Cost per packet of the TC policy in the kernel (BPF_PROG_TEST_RUN), with
 * 1,024 rules (the most the maps hold) and 100,000 live flows, next to a TC
 * program that only returns TC_ACT_OK (the test-run harness's own cost) on
 * the same frames in the same run.
 *
 *   sudo npx tsx bench/tc-policy.ts [--repeat N] [--rounds N] [--flows N]
 *
 * The policy is stateful, ingress default deny: 900 ingress rules (random
 * allow and deny rules with port ranges and IPv4/IPv6 source prefixes, plus
 * "allow tcp 22" and "allow tcp 8080") and 124 egress rules, written by
 * planPolicy in one `bpftool batch` as the provider writes them. The flows
 * are written with the codec (established TCP, IPv4 and IPv6, last seen now).
 *
 * A repeated test run sends the same packet again and again, so a flow the
 * first run creates would turn every later run into a flow hit. The "new
 * flow" cases therefore run with the transitory TCP timeout (the timeout of
 * a flow before its reply) set to 0: each run finds the previous run's entry
 * expired, consults the rules and writes the flow again (before 2026-12: a
 * delete, an insert and a BPF timer armed; since: one update replacing the
 * entry, which allocates an LRU element as an insert into a free slot does).
 * Established flows use the established timeout and are unaffected.
 *
 * Each figure is the median of `rounds` runs of `repeat` packets. Results are
 * also written to .bench/tc-policy.json.
 */
import { cpus, release } from "node:os";
import { join } from "node:path";
import { batchText, type MapOperation } from "../provider/remote/mapOperations";
import { encodeFlowKey, encodeFlowValue, FLOW_FLAG, MAPS, PROGRAMS, TRIE_MAPS, u32Key } from "../provider/tcPolicy/codec";
import { desiredPolicy, observePolicy, planPolicy } from "../provider/tcPolicy/plan";
import { rulesOf, tcPolicySchema } from "../provider/tcPolicy/schema";
import { ethernet, ETH_P, arp, ipFrame, tcp } from "../test/kernel/packets";
import { buildObjects, kernelTestsUnavailable, loadObject, loadProgram, objectPath, TC, type LoadedObject, type LoadedProgram } from "../test/kernel/progRun";
import { seededRandom } from "../test/support/seededRandom";
import { numberOption, printTable, writeBenchRecord } from "./support";

const REPEAT = numberOption("repeat", 1_000_000);
const ROUNDS = numberOption("rounds", 5);
const FLOWS = numberOption("flows", 100_000);
const INGRESS_RULES = 900;
const EGRESS_RULES = 124;

export const HOST4 = "10.0.0.1";
export const HOST6 = "2001:db8:1::1";

const int = (rand: () => number, low: number, high: number) => low + Math.floor(rand() * (high - low + 1));
const hex4 = (rand: () => number) => int(rand, 0, 0xffff).toString(16);

/**
 * Rules that keep 100.64.0.0/10 and 2001:db8:64::/48 (where the benchmark's
 * new clients come from) and the flow peers out of every deny rule.
 */
export function randomRules(rand: () => number, n: number, peerSide: "from" | "to"): string[] {
  const rules = new Set<string>();
  while (rules.size < n) {
    const action = rand() < 0.7 ? "deny" : "allow";
    const protocol = rand() < 0.45 ? "tcp" : rand() < 0.85 ? "udp" : "icmp";
    let ports = "";
    if (protocol !== "icmp") {
      const low = int(rand, 1, 60_000);
      ports = rand() < 0.5 ? ` ${low}` : ` ${low}-${Math.min(65535, low + int(rand, 1, 5000))}`;
    }
    const cidr =
      rand() < 0.6
        ? `${int(rand, 11, 99)}.${int(rand, 0, 255)}.${int(rand, 0, 255)}.0/${int(rand, 8, 24)}`
        : `2001:db8:${int(rand, 0x100, 0xffff).toString(16)}:${hex4(rand)}::/${int(rand, 48, 64)}`;
    rules.add(`${action} ${protocol}${ports} ${peerSide} ${cidr}`);
  }
  return [...rules];
}

async function median(run: () => Promise<{ retval: number; durationNs: number }>, expect: number, label: string): Promise<number> {
  const runs: number[] = [];
  for (let i = 0; i < ROUNDS; i++) {
    const r = await run();
    if ((r.retval | 0) !== expect) throw new Error(`${label}: expected verdict ${expect}, got ${r.retval | 0}`);
    runs.push(r.durationNs);
  }
  runs.sort((a, b) => a - b);
  return runs[Math.floor(runs.length / 2)]!;
}

async function writePolicy(policy: LoadedObject, rules: { ingress: string[]; egress: string[] }, transitoryZero: boolean): Promise<void> {
  const inputs = tcPolicySchema.parse({
    host: { address: "192.0.2.1" },
    interface: "eth0",
    name: "bench",
    stateful: true,
    ingress: { default: "deny", rules: rules.ingress },
    egress: { default: "allow", rules: rules.egress },
    timeouts: { tcpEstablished: 3600, tcpTransitory: 3600, other: 3600 },
  });
  const desired = desiredPolicy(inputs, rulesOf(inputs));
  if (transitoryZero) desired.config.tcpTransitoryNs = 0n;
  const dump = async (map: string) => (await policy.dumpMap(map)).map((e) => ({ key: e.key, value: e.value }));
  const tries: Record<string, { key: Uint8Array; value: Uint8Array }[]> = {};
  for (const map of TRIE_MAPS) tries[map] = await dump(map);
  const observed = observePolicy({ rules: await dump(MAPS.rules), tries, config: await policy.lookup(MAPS.config, Buffer.from(u32Key(0))) });
  const plan = planPolicy(desired, observed, (m) => policy.mapPin(m));
  await policy.batchText(batchText(plan.operations));
}

export interface Flow {
  peer: string;
  peerPort: number;
  localPort: number;
}

export function makeFlows(n: number): Flow[] {
  const rand = seededRandom(3);
  const flows: Flow[] = [];
  const seen = new Set<string>();
  while (flows.length < n) {
    const v6 = rand() < 0.3;
    // Peers from 172.16.0.0/12 and 2001:db8:f000::/36: no rule names them.
    const peer = v6 ? `2001:db8:f${hex4(rand).padStart(3, "0").slice(-3)}:${hex4(rand)}::${hex4(rand)}` : `172.${int(rand, 16, 31)}.${int(rand, 0, 255)}.${int(rand, 1, 254)}`;
    const flow = { peer, peerPort: rand() < 0.5 ? 443 : int(rand, 1, 65535), localPort: int(rand, 32768, 60999) };
    const id = `${flow.peer} ${flow.peerPort} ${flow.localPort}`;
    if (!seen.has(id)) {
      seen.add(id);
      flows.push(flow);
    }
  }
  return flows;
}

async function writeFlows(policy: LoadedObject, flows: Flow[]): Promise<void> {
  const now = process.hrtime.bigint(); // CLOCK_MONOTONIC, bpf_ktime_get_ns()'s clock
  const value = encodeFlowValue({ lastSeenNs: now, state: "established", flags: FLOW_FLAG.originEgress | FLOW_FLAG.seenEgress | FLOW_FLAG.seenIngress });
  const pin = policy.mapPin(MAPS.flows);
  const operations: MapOperation[] = flows.map((f) => {
    const v6 = f.peer.includes(":");
    const key = encodeFlowKey({ family: v6 ? 6 : 4, protocol: 6, local: v6 ? HOST6 : HOST4, remote: f.peer, localPort: f.localPort, remotePort: f.peerPort });
    return { op: "update", map: pin, key, value };
  });
  await policy.batchText(batchText(operations));
}

async function main(): Promise<void> {
  const unavailable = kernelTestsUnavailable();
  if (unavailable) {
    console.error(`bench/tc-policy: ${unavailable}`);
    process.exit(2);
  }
  await buildObjects();
  const rand = seededRandom(1);
  const rules = {
    ingress: ["allow tcp 22", "allow tcp 8080", ...randomRules(rand, INGRESS_RULES - 2, "from")],
    egress: randomRules(rand, EGRESS_RULES, "to"),
  };
  const flows = makeFlows(FLOWS);

  const policy = await loadObject(objectPath("tc_policy"));
  const empty: LoadedProgram = await loadProgram(objectPath("empty_tc"), "tc");
  try {
    let t0 = process.hrtime.bigint();
    await writePolicy(policy, rules, false);
    const rulesMs = Number(process.hrtime.bigint() - t0) / 1e6;
    t0 = process.hrtime.bigint();
    await writeFlows(policy, flows);
    const flowsMs = Number(process.hrtime.bigint() - t0) / 1e6;
    const trieEntries = Object.fromEntries(await Promise.all(TRIE_MAPS.map(async (m) => [m, (await policy.dumpMap(m)).length] as const)));

    const v4Flow = flows.find((f) => !f.peer.includes(":"))!;
    const v6Flow = flows.find((f) => f.peer.includes(":"))!;
    const denyRule = rules.ingress.find((r) => r.startsWith("deny tcp") && r.includes(" from 1"))!;
    const [, , denyPorts, , denyCidr] = denyRule.split(" ");
    const deniedSource = denyCidr!.split("/")[0]!.replace(/\.0$/, ".9");
    const ack = { ack: true };
    const cases: { name: string; program: "ingress" | "egress"; frame: Buffer; verdict: number; newFlow?: boolean }[] = [
      { name: "established flow hit, IPv4 (ingress)", program: "ingress", frame: ipFrame({ src: v4Flow.peer, dst: HOST4, payload: tcp({ srcPort: v4Flow.peerPort, dstPort: v4Flow.localPort, flags: ack }) }), verdict: TC.UNSPEC },
      { name: "established flow hit, IPv6 (ingress)", program: "ingress", frame: ipFrame({ src: v6Flow.peer, dst: HOST6, payload: tcp({ srcPort: v6Flow.peerPort, dstPort: v6Flow.localPort, flags: ack }) }), verdict: TC.UNSPEC },
      { name: "established flow hit, IPv4 (egress)", program: "egress", frame: ipFrame({ src: HOST4, dst: v4Flow.peer, payload: tcp({ srcPort: v4Flow.localPort, dstPort: v4Flow.peerPort, flags: ack }) }), verdict: TC.UNSPEC },
      { name: "denied: no flow, no rule (default deny)", program: "ingress", frame: ipFrame({ src: "100.64.1.2", dst: HOST4, payload: tcp({ srcPort: 50000, dstPort: 9090 }) }), verdict: TC.SHOT },
      { name: `denied by a rule (${denyRule})`, program: "ingress", frame: ipFrame({ src: deniedSource, dst: HOST4, payload: tcp({ srcPort: 50000, dstPort: Number(denyPorts!.split("-")[0]) }) }), verdict: TC.SHOT },
      { name: "new allowed flow: inbound SYN to tcp/8080, IPv4", program: "ingress", frame: ipFrame({ src: "100.64.1.2", dst: HOST4, payload: tcp({ srcPort: 50000, dstPort: 8080 }) }), verdict: TC.UNSPEC, newFlow: true },
      { name: "new allowed flow: inbound SYN to tcp/8080, IPv6", program: "ingress", frame: ipFrame({ src: "2001:db8:64::2", dst: HOST6, payload: tcp({ srcPort: 50000, dstPort: 8080 }) }), verdict: TC.UNSPEC, newFlow: true },
      { name: "new flow: outbound SYN (egress)", program: "egress", frame: ipFrame({ src: HOST4, dst: "100.64.9.9", payload: tcp({ srcPort: 50001, dstPort: 443 }) }), verdict: TC.UNSPEC, newFlow: true },
      { name: "ARP (always passes, no lookup)", program: "ingress", frame: ethernet({ etherType: ETH_P.ARP, payload: arp({ op: "request", senderMac: "02:00:00:00:00:01", senderIp: "10.0.0.2", targetIp: HOST4 }) }), verdict: TC.UNSPEC },
    ];

    const rows: { case: string; verdict: string; policyNs: number; emptyNs: number; ratio: number; addedNs: number }[] = [];
    let transitoryZero = false;
    for (const c of cases) {
      if (!!c.newFlow !== transitoryZero) {
        transitoryZero = !!c.newFlow;
        await writePolicy(policy, rules, transitoryZero);
      }
      const emptyNs = await median(() => empty.run(c.frame, { repeat: REPEAT }), TC.OK, `empty: ${c.name}`);
      const policyNs = await median(() => policy.runProgram(PROGRAMS[c.program], c.frame, { repeat: REPEAT }), c.verdict, c.name);
      rows.push({ case: c.name, verdict: c.verdict === TC.SHOT ? "SHOT" : "UNSPEC", policyNs, emptyNs, ratio: policyNs / emptyNs, addedNs: policyNs - emptyNs });
    }

    // The flow table still holds what was written (LRU evicted nothing).
    for (const f of [flows[0]!, flows[Math.floor(FLOWS / 2)]!, flows[FLOWS - 1]!]) {
      const v6 = f.peer.includes(":");
      const key = encodeFlowKey({ family: v6 ? 6 : 4, protocol: 6, local: v6 ? HOST6 : HOST4, remote: f.peer, localPort: f.localPort, remotePort: f.peerPort });
      if (!(await policy.lookup(MAPS.flows, Buffer.from(key)))) throw new Error(`flow ${f.peer} vanished from the table during the run`);
    }

    const info = (await policy.programInfo(PROGRAMS.ingress)) as unknown as { bytes_jited?: number; bytes_xlated?: number };
    console.log(`kernel ${release()}, ${cpus()[0]?.model ?? "unknown CPU"}`);
    console.log(
      `policy: ${INGRESS_RULES} ingress + ${EGRESS_RULES} egress rules written in ${(rulesMs / 1000).toFixed(2)} s ` +
        `(trie entries: ${Object.entries(trieEntries).map(([m, n]) => `${m.replace("tcpol_", "")} ${n}`).join(", ")}); ` +
        `${FLOWS.toLocaleString("en")} established flows written in ${(flowsMs / 1000).toFixed(2)} s`,
    );
    console.log(`BPF_PROG_TEST_RUN, repeat ${REPEAT.toLocaleString("en")}, median of ${ROUNDS}; ingress program JIT size ${info.bytes_jited ?? "?"} bytes\n`);
    const header = ["case", "verdict", "policy ns/pkt", "empty TC ns/pkt", "ratio", "added ns"];
    const table = rows.map((r) => [r.case, r.verdict, String(r.policyNs), String(r.emptyNs), `${r.ratio.toFixed(2)}x`, String(r.addedNs)]);
    printTable(header, table, [0, 1]);

    writeBenchRecord("tc-policy", { kernel: release(), repeat: REPEAT, rounds: ROUNDS, rules: INGRESS_RULES + EGRESS_RULES, flows: FLOWS, trieEntries, rulesMs, flowsMs, rows });
  } finally {
    policy.close();
    empty.close();
  }
}

// Only when run as a script: bench/dataplane.ts imports the generators above.
if (require.main === module) {
  main().catch((e) => {
    console.error(e instanceof Error ? e.message : e);
    process.exit(1);
  });
}
