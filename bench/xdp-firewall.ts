/**
 * Cost per packet of the XDP firewall with realistic deny lists, measured in
 * the kernel by BPF_PROG_TEST_RUN, next to an XDP program that only returns
 * XDP_PASS (the test-run harness's own cost).
 *
 *   sudo npx tsx bench/xdp-firewall.ts [--repeat N] [--rounds N]
 *
 * Deny lists: 100,000 exact IPv4 + 10,000 IPv4 prefixes (/12–/28), and the same
 * for IPv6 (prefixes /24–/64), all written with `bpftool batch file` as the
 * provider writes them. Each figure is the median of `rounds` runs of `repeat`
 * packets. Results are also written to .bench/xdp-firewall.json.
 */
import { cpus, release } from "node:os";
import { join } from "node:path";
import { ETH_P, arp, ethernet, ipFrame, udp } from "../test/kernel/packets";
import { buildObjects, kernelTestsUnavailable, loadProgram, objectPath, XDP, type LoadedProgram } from "../test/kernel/progRun";
import { seededRandom } from "../test/support/seededRandom";
import { numberOption, printTable, writeBenchRecord } from "./support";

const REPEAT = numberOption("repeat", 1_000_000);
const ROUNDS = numberOption("rounds", 5);
const EXACT = 100_000;
const PREFIXES = 10_000;


export const randomBytes = (rand: () => number, n: number) => Buffer.from(Array.from({ length: n }, () => Math.floor(rand() * 256)));
const toV4 = (b: Buffer) => [...b].join(".");
const toV6 = (b: Buffer) => Array.from({ length: 8 }, (_, i) => b.readUInt16BE(i * 2).toString(16)).join(":");

export function maskTo(bytes: Buffer, len: number): Buffer {
  const out = Buffer.from(bytes);
  for (let i = 0; i < out.length; i++) {
    const keep = Math.max(0, Math.min(8, len - i * 8));
    out[i]! &= (0xff << (8 - keep)) & 0xff;
  }
  return out;
}

interface Family {
  name: "IPv4" | "IPv6";
  width: number;
  exact: Buffer[];
  prefixes: { addr: Buffer; len: number }[];
  fmt: (b: Buffer) => string;
}

function makeFamily(name: "IPv4" | "IPv6", seed: number, lenRange: [number, number]): Family {
  const rand = seededRandom(seed);
  const width = name === "IPv4" ? 4 : 16;
  const exact = new Map<string, Buffer>();
  while (exact.size < EXACT) {
    const b = randomBytes(rand, width);
    exact.set(b.toString("hex"), b);
  }
  const prefixes = new Map<string, { addr: Buffer; len: number }>();
  while (prefixes.size < PREFIXES) {
    const len = lenRange[0] + Math.floor(rand() * (lenRange[1] - lenRange[0] + 1));
    const addr = maskTo(randomBytes(rand, width), len);
    prefixes.set(`${addr.toString("hex")}/${len}`, { addr, len });
  }
  return { name, width, exact: [...exact.values()], prefixes: [...prefixes.values()], fmt: name === "IPv4" ? toV4 : toV6 };
}

function covered(f: Family, addr: Buffer): boolean {
  const hex = addr.toString("hex");
  return f.exact.some((e) => e.toString("hex") === hex) || f.prefixes.some((p) => maskTo(addr, p.len).equals(p.addr));
}

/** Sources for the three cases, checked against the tables in JavaScript. */
function probes(f: Family): { exactHit: string; prefixHit: string; miss: string } {
  const rand = seededRandom(99);
  const exactHit = f.exact[EXACT >> 1]!;
  // The longest prefix in the table: the deepest walk down the trie.
  const deepest = f.prefixes.reduce((a, b) => (b.len > a.len ? b : a));
  let prefixHit = Buffer.from(deepest.addr);
  prefixHit[f.width - 1]! |= 1;
  let miss = randomBytes(rand, f.width);
  while (covered(f, miss)) miss = randomBytes(rand, f.width);
  if (f.exact.some((e) => e.equals(prefixHit))) prefixHit = Buffer.from(deepest.addr);
  return { exactHit: f.fmt(exactHit), prefixHit: f.fmt(prefixHit), miss: f.fmt(miss) };
}

async function fill(fw: LoadedProgram, f: Family): Promise<void> {
  const v = f.name === "IPv4" ? "v4" : "v6";
  const value = Buffer.from([1]);
  await fw.updateMap(`deny_${v}_exact`, f.exact.map((key) => ({ key, value })));
  await fw.updateMap(
    `deny_${v}_prefix`,
    f.prefixes.map((p) => {
      const len = Buffer.alloc(4);
      len.writeUInt32LE(p.len, 0);
      return { key: Buffer.concat([len, p.addr]), value };
    }),
  );
}

async function median(prog: LoadedProgram, frame: Buffer, expect: number): Promise<number> {
  const runs: number[] = [];
  for (let i = 0; i < ROUNDS; i++) {
    const r = await prog.run(frame, { repeat: REPEAT });
    if (r.retval !== expect) throw new Error(`expected verdict ${expect}, got ${r.retval}`);
    runs.push(r.durationNs);
  }
  runs.sort((a, b) => a - b);
  return runs[Math.floor(runs.length / 2)]!;
}

async function main(): Promise<void> {
  const unavailable = kernelTestsUnavailable();
  if (unavailable) {
    console.error(`bench/xdp-firewall: ${unavailable}`);
    process.exit(2);
  }
  await buildObjects();
  const v4 = makeFamily("IPv4", 1, [12, 28]);
  const v6 = makeFamily("IPv6", 2, [24, 64]);

  const fw = await loadProgram(objectPath("xdp_firewall"));
  const empty = await loadProgram(objectPath("empty_xdp"));
  try {
    const t0 = process.hrtime.bigint();
    await fill(fw, v4);
    await fill(fw, v6);
    const fillMs = Number(process.hrtime.bigint() - t0) / 1e6;

    const payload = () => udp({ srcPort: 40000, dstPort: 53, payload: Buffer.alloc(18) });
    const cases: { name: string; frame: Buffer; verdict: number }[] = [];
    for (const f of [v4, v6]) {
      const p = probes(f);
      const dst = f.name === "IPv4" ? "10.255.255.254" : "2001:db8:ffff::1";
      cases.push(
        { name: `${f.name} exact hit`, frame: ipFrame({ src: p.exactHit, dst, payload: payload() }), verdict: XDP.DROP },
        { name: `${f.name} prefix hit`, frame: ipFrame({ src: p.prefixHit, dst, payload: payload() }), verdict: XDP.DROP },
        { name: `${f.name} miss`, frame: ipFrame({ src: p.miss, dst, payload: payload() }), verdict: XDP.PASS },
      );
    }
    cases.push({
      name: "ARP (no lookup)",
      frame: ethernet({ etherType: ETH_P.ARP, payload: arp({ op: "request", senderMac: "02:00:00:00:00:01", senderIp: "10.0.0.2", targetIp: "10.0.0.1" }) }),
      verdict: XDP.PASS,
    });

    const rows: { case: string; verdict: string; firewallNs: number; emptyNs: number; ratio: number; addedNs: number }[] = [];
    for (const c of cases) {
      const emptyNs = await median(empty, c.frame, XDP.PASS);
      const firewallNs = await median(fw, c.frame, c.verdict);
      rows.push({
        case: c.name,
        verdict: c.verdict === XDP.DROP ? "DROP" : "PASS",
        firewallNs,
        emptyNs,
        ratio: firewallNs / emptyNs,
        addedNs: firewallNs - emptyNs,
      });
    }

    const info = (await fw.progInfo()) as unknown as { bytes_jited?: number };
    console.log(`kernel ${release()}, ${cpus()[0]?.model ?? "unknown CPU"}`);
    console.log(
      `deny lists: ${EXACT.toLocaleString("en")} exact + ${PREFIXES.toLocaleString("en")} prefixes per family, written in ${(fillMs / 1000).toFixed(2)} s ` +
        `(${Math.round((2 * (EXACT + PREFIXES)) / (fillMs / 1000)).toLocaleString("en")} entries/s via bpftool batch)`,
    );
    console.log(`BPF_PROG_TEST_RUN, repeat ${REPEAT.toLocaleString("en")}, median of ${ROUNDS}; firewall JIT size ${info.bytes_jited ?? "?"} bytes\n`);
    const header = ["case", "verdict", "firewall ns/pkt", "empty XDP ns/pkt", "ratio", "added ns"];
    const table = rows.map((r) => [r.case, r.verdict, String(r.firewallNs), String(r.emptyNs), `${r.ratio.toFixed(2)}x`, String(r.addedNs)]);
    printTable(header, table, [0, 1]);

    writeBenchRecord("xdp-firewall", { repeat: REPEAT, rounds: ROUNDS, exact: EXACT, prefixes: PREFIXES, fillMs, rows });
  } finally {
    fw.close();
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
