/**
 * The single-shot regime (issue 12): BPF_PROG_TEST_RUN with repeat 1, `calls`
 * times on the same frame, interquartile mean of the kernel's per-call
 * durations. For programs whose output cannot be fed back to them (NAT
 * rewrites the destination, IPIP grows the frame), which `repeat N` would do.
 * Compare only with an empty program timed the same way: the per-call setup
 * is most of an empty program's figure (~80 ns against ~22 with repeat 1e6).
 *
 * bench/single_shot.c makes the calls; it is built here with the system gcc
 * into /tmp, once per source version.
 */
import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { LoadedProgram, RunResult, TestNetns } from "../test/kernel/progRun";

const SOURCE = join(__dirname, "single_shot.c");

let binary: string | undefined;
function singleShotBinary(): string {
  if (binary) return binary;
  const source = readFileSync(SOURCE);
  const path = join(tmpdir(), `bpfleet-single-shot-${createHash("sha256").update(source).digest("hex").slice(0, 16)}`);
  if (!existsSync(path)) execFileSync("gcc", ["-O2", "-Wall", "-Werror", "-o", path, SOURCE], { stdio: "inherit" });
  binary = path;
  return path;
}

export interface SingleShotOptions {
  calls: number;
  netns?: TestNetns;
  /** struct xdp_md ingress_ifindex (XDP only); 0: none given. */
  ingressIfindex?: number;
}

/** `calls` runs of repeat 1; durationNs is the interquartile mean. Throws when the verdict is not the same every call. */
export async function runSingleShot(prog: LoadedProgram, frame: Buffer, opts: SingleShotOptions): Promise<RunResult> {
  const dir = mkdtempSync(join(tmpdir(), "bpfleet-single-shot-run-"));
  try {
    writeFileSync(join(dir, "in"), frame);
    let ctx = "-";
    if (opts.ingressIfindex) {
      const c = Buffer.alloc(24);
      c.writeUInt32LE(frame.length, 4); // data_end
      c.writeUInt32LE(opts.ingressIfindex, 12);
      writeFileSync((ctx = join(dir, "ctx")), c);
    }
    const argv = [singleShotBinary(), prog.progPin, join(dir, "in"), ctx, String(opts.calls)];
    const stdout = opts.netns ? await opts.netns.exec(argv, "single-shot BPF_PROG_TEST_RUN") : execFileSync(argv[0]!, argv.slice(1), { encoding: "utf8" });
    const r = JSON.parse(stdout) as { retval: number; otherRetvals: number; iqmNs: number };
    if (r.otherRetvals > 0) throw new Error(`single-shot run: ${r.otherRetvals} of ${opts.calls} calls returned another verdict than the first (${r.retval})`);
    return { retval: r.retval, durationNs: r.iqmNs, dataOut: Buffer.alloc(0) };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
