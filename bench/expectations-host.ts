/**
 * The host's side of packet expectations alone (issue 14), without SSH or a lab:
 * the one exec an update adds (sh/expect-probe.sh: frames on stdin, a probe copy
 * loaded, one bpftool batch of prog runs, the copy removed) for 1, 10 and 100
 * expectations against an XdpFirewall and a TcPolicy loaded here, interleaved,
 * medians. Over SSH an update adds this plus one round trip.
 *
 *   sudo npx tsx bench/expectations-host.ts [--rounds N]
 */
import { execFileSync, spawnSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { join } from "node:path";
import { packagedObject } from "../provider/objects";
import { parseExpectationText, type ExpectKind } from "../provider/expect/grammar";
import { runExpectations, type ProbeTarget } from "../provider/expect/hostRun";
import { SHARED_MAPS } from "../provider/expect/probe";
import type { ExecOptions, ExecResult, SshSession } from "../provider/remote/ssh";

const args = process.argv.slice(2);
const ROUNDS = Number(args.includes("--rounds") ? args[args.indexOf("--rounds") + 1] : 7);

const local = {
  label: "local",
  async runScript(script: string, argv: readonly string[], options: ExecOptions = {}): Promise<ExecResult> {
    const r = spawnSync("sh", ["-c", script, "bpfleet", ...argv], { input: options.stdin, maxBuffer: 64 << 20 });
    if (r.status !== 0) throw new Error(r.stderr.toString());
    return { code: 0, stdout: r.stdout.toString(), stderr: r.stderr.toString() };
  },
} as unknown as SshSession;

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

function load(object: string, loadall: boolean): string {
  const dir = mkdtempSync(join("/sys/fs/bpf", "bpfleet-bench-"));
  const type = loadall ? "classifier" : "xdp";
  execFileSync("bpftool", ["prog", loadall ? "loadall" : "load", packagedObject(object).path, join(dir, loadall ? "progs" : "prog"), "type", type, "pinmaps", join(dir, "maps")]);
  return dir;
}

async function main(): Promise<void> {
  const fw = load("xdp_firewall", false);
  const tc = load("tc_policy", true);
  try {
    const cases: { name: string; kind: ExpectKind; target: ProbeTarget; text: (i: number) => string }[] = [
      { name: "XdpFirewall", kind: "xdpFirewall", target: { type: "xdp", iface: "lo", members: [{ object: packagedObject("xdp_firewall"), liveDir: fw, shared: SHARED_MAPS.xdpFirewall }] }, text: (i) => `tcp 10.9.${i >> 8}.${i & 255}:40000 > 10.0.0.7:80 syn: pass` },
      { name: "TcPolicy", kind: "tcPolicy", target: { type: "tc", iface: "lo", members: [{ object: packagedObject("tc_policy"), liveDir: tc, shared: SHARED_MAPS.tcPolicy }] }, text: (i) => `ingress tcp 10.9.${i >> 8}.${i & 255}:40000 > 10.0.0.7:80 syn: pass` },
    ];
    for (const c of cases) {
      const times = new Map<number, number[]>([[1, []], [10, []], [100, []]]);
      for (let round = 0; round < ROUNDS; round++) {
        for (const n of round % 2 ? [100, 10, 1] : [1, 10, 100]) {
          const es = Array.from({ length: n }, (_, i) => parseExpectationText(c.kind, c.text(i)));
          const start = process.hrtime.bigint();
          const results = await runExpectations(local, c.target, es, undefined, (o) => o.path);
          times.get(n)!.push(Number(process.hrtime.bigint() - start) / 1e6);
          if (Object.values(results).filter((r) => r.met).length !== n) throw new Error(`${c.name} ${n}: not all met`);
        }
      }
      for (const [n, t] of times) console.log(`${c.name.padEnd(12)} ${String(n).padStart(3)} expectations: median ${median(t).toFixed(0).padStart(5)} ms (runs: ${t.map((x) => x.toFixed(0)).join(" ")})`);
    }
  } finally {
    for (const dir of [fw, tc]) rmSync(dir, { recursive: true, force: true });
  }
}

main().catch((err) => {
  console.error(err);
  process.exitCode = 1;
});
