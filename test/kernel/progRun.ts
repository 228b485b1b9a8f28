/**
 * Loads a BPF object into a private bpffs directory with bpftool and runs
 * crafted packets through it with BPF_PROG_TEST_RUN (`bpftool prog run`).
 *
 * The same bpftool commands the provider runs on a host: `prog load ... pinmaps`,
 * `map update`/`batch file`, `map lookup`. Every load owns a fresh directory
 * /sys/fs/bpf/bpfleet-ktest-<pid>-<random>/; close() removes it, a process exit
 * handler removes what close() did not, and the next load sweeps directories
 * whose process is gone (a SIGKILLed run).
 */
import { execFile, execFileSync } from "node:child_process";
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statfsSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { promisify } from "node:util";

const run = promisify(execFile);

export const REPO_ROOT = resolve(__dirname, "../..");
export const OBJ_DIR = join(REPO_ROOT, "bpf/obj");
export const BPFFS = "/sys/fs/bpf";
const BPF_FS_MAGIC = 0xcafe4a11;
const DIR_PREFIX = "bpfleet-ktest-";

export const XDP = { ABORTED: 0, DROP: 1, PASS: 2, TX: 3, REDIRECT: 4 } as const;

export function isRoot(): boolean {
  return typeof process.getuid === "function" && process.getuid() === 0;
}

/** Why kernel tests cannot run here, or undefined when they can. */
export function kernelTestsUnavailable(): string | undefined {
  if (!isRoot()) return "kernel tests need root (BPF_PROG_LOAD, bpffs pins): run them as root";
  return undefined;
}

async function sh(argv: string[], what: string): Promise<string> {
  try {
    const { stdout } = await run(argv[0]!, argv.slice(1), { maxBuffer: 256 * 1024 * 1024 });
    return stdout;
  } catch (e) {
    const err = e as { stderr?: string; stdout?: string; message: string };
    throw new Error(
      `${what} failed: ${argv.join(" ")}\n${(err.stderr || err.stdout || err.message).trim()}`,
    );
  }
}

/** Runs `make -C bpf` so tests always see objects built from the current sources. */
export async function buildObjects(): Promise<void> {
  await sh(["make", "-s", "-C", join(REPO_ROOT, "bpf")], "building BPF objects");
}

export function objectPath(name: string): string {
  return join(OBJ_DIR, `${name}.bpf.o`);
}

function ensureBpffs(): void {
  if (statfsSync(BPFFS).type === BPF_FS_MAGIC) return;
  // systemd mounts it at boot on most distributions; this VM boots without.
  // bpftool itself would mount here too when asked to pin below it.
  execFileSync("mount", ["-t", "bpf", "bpf", BPFFS], { stdio: "ignore" });
  if (statfsSync(BPFFS).type !== BPF_FS_MAGIC) throw new Error(`${BPFFS} is not a bpffs and mounting one failed`);
}

const liveDirs = new Set<string>();
process.once("exit", () => {
  for (const dir of liveDirs) rmSync(dir, { recursive: true, force: true });
});

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === "EPERM";
  }
}

/** Removes pin directories left by test processes that no longer exist. */
function sweepStaleDirs(): void {
  for (const name of readdirSync(BPFFS)) {
    const m = new RegExp(`^${DIR_PREFIX}(\\d+)-`).exec(name);
    if (m && !pidAlive(Number(m[1]))) rmSync(join(BPFFS, name), { recursive: true, force: true });
  }
}

export interface RunResult {
  /** The program's return value (an XDP action or a TC verdict). */
  retval: number;
  /** Average nanoseconds per run, as measured by the kernel. */
  durationNs: number;
  /** The packet as the program left it. */
  dataOut: Buffer;
}

export interface MapEntry {
  key: Buffer;
  value: Buffer;
}

export interface MapInfo {
  id: number;
  type: string;
  name: string;
  flags: number;
  bytes_key: number;
  bytes_value: number;
  max_entries: number;
}

export interface ProgInfo {
  id: number;
  type: string;
  name: string;
  tag: string;
  bytes_xlated: number;
  jited: boolean;
  map_ids: number[];
}

const hex = (b: Buffer) => [...b].map((x) => x.toString(16).padStart(2, "0")).join(" ");

export class LoadedProgram {
  private closed = false;

  constructor(
    /** The private bpffs directory holding everything of this load. */
    readonly dir: string,
    private readonly workDir: string,
  ) {}

  get progPin(): string {
    return join(this.dir, "prog");
  }

  mapPin(name: string): string {
    return join(this.dir, "maps", name);
  }

  mapNames(): string[] {
    return readdirSync(join(this.dir, "maps")).sort();
  }

  async run(frame: Buffer, opts: { repeat?: number } = {}): Promise<RunResult> {
    const tag = `${process.hrtime.bigint()}`;
    const inFile = join(this.workDir, `in-${tag}`);
    const outFile = join(this.workDir, `out-${tag}`);
    writeFileSync(inFile, frame);
    try {
      const argv = ["bpftool", "-j", "prog", "run", "pinned", this.progPin, "data_in", inFile, "data_out", outFile];
      // Room for programs that grow the packet (encapsulation).
      argv.push("data_size_out", String(frame.length + 256));
      if (opts.repeat && opts.repeat > 1) argv.push("repeat", String(opts.repeat));
      const out = JSON.parse(await sh(argv, "BPF_PROG_TEST_RUN")) as { retval: number; duration: number };
      return { retval: out.retval, durationNs: out.duration, dataOut: readFileSync(outFile) };
    } finally {
      rmSync(inFile, { force: true });
      rmSync(outFile, { force: true });
    }
  }

  /** Writes entries in one `bpftool batch` call, as the provider does. */
  async updateMap(name: string, entries: MapEntry[]): Promise<void> {
    await this.batch(entries.map((e) => `map update pinned ${this.mapPin(name)} key hex ${hex(e.key)} value hex ${hex(e.value)}`));
  }

  async deleteFromMap(name: string, keys: Buffer[]): Promise<void> {
    await this.batch(keys.map((k) => `map delete pinned ${this.mapPin(name)} key hex ${hex(k)}`));
  }

  private async batch(lines: string[]): Promise<void> {
    if (lines.length === 0) return;
    await this.batchText(lines.join("\n") + "\n");
  }

  /** Runs a `bpftool batch` file (one command per line), as the provider sends it. */
  async batchText(text: string): Promise<void> {
    if (!text.trim()) return;
    const file = join(this.workDir, `batch-${process.hrtime.bigint()}`);
    writeFileSync(file, text);
    try {
      await sh(["bpftool", "batch", "file", file], "bpftool batch");
    } finally {
      rmSync(file, { force: true });
    }
  }

  /** Every entry of a (non-per-CPU) map, as raw bytes. */
  async dumpMap(name: string): Promise<MapEntry[]> {
    const out = JSON.parse(await sh(["bpftool", "-j", "map", "dump", "pinned", this.mapPin(name)], "map dump")) as {
      key: string[];
      value: string[];
    }[];
    const bytes = (h: string[]) => Buffer.from(h.map((x) => parseInt(x, 16)));
    return out.map((e) => ({ key: bytes(e.key), value: bytes(e.value) }));
  }

  /** The value of `key` on every possible CPU of a per-CPU map. */
  async lookupPerCpu(name: string, key: Buffer): Promise<Buffer[]> {
    const out = JSON.parse(
      await sh(["bpftool", "-j", "map", "lookup", "pinned", this.mapPin(name), "key", "hex", ...hex(key).split(" ")], "map lookup"),
    ) as { values: { cpu: number; value: string[] }[] };
    return out.values.map((v) => Buffer.from(v.value.map((x) => parseInt(x, 16))));
  }

  async mapInfo(name: string): Promise<MapInfo> {
    return JSON.parse(await sh(["bpftool", "-j", "map", "show", "pinned", this.mapPin(name)], "map show")) as MapInfo;
  }

  async progInfo(): Promise<ProgInfo> {
    return JSON.parse(await sh(["bpftool", "-j", "prog", "show", "pinned", this.progPin], "prog show")) as ProgInfo;
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    rmSync(this.dir, { recursive: true, force: true });
    rmSync(this.workDir, { recursive: true, force: true });
    liveDirs.delete(this.dir);
    liveDirs.delete(this.workDir);
  }
}

/**
 * Loads `object` (one program) pinned at <dir>/prog with its maps under
 * <dir>/maps/, exactly as `bpftool prog load OBJ PIN type TYPE pinmaps DIR`;
 * `reuse` names maps to take from other pins instead (`map name NAME pinned PIN`).
 * A verifier rejection throws with bpftool's output, verifier log included.
 */
export async function loadProgram(object: string, type = "xdp", reuse: Record<string, string> = {}): Promise<LoadedProgram> {
  if (!existsSync(object)) throw new Error(`${object} does not exist: run make -C bpf`);
  ensureBpffs();
  sweepStaleDirs();
  const dir = mkdtempSync(join(BPFFS, `${DIR_PREFIX}${process.pid}-`));
  const workDir = mkdtempSync(join(tmpdir(), `${DIR_PREFIX}${process.pid}-`));
  liveDirs.add(dir);
  liveDirs.add(workDir);
  const prog = new LoadedProgram(dir, workDir);
  try {
    await sh(
      [
        "bpftool", "prog", "load", object, prog.progPin, "type", type,
        ...Object.entries(reuse).flatMap(([name, pin]) => ["map", "name", name, "pinned", pin]),
        "pinmaps", join(dir, "maps"),
      ],
      `loading ${object}`,
    );
  } catch (e) {
    prog.close();
    throw e;
  }
  return prog;
}

/** Loads, hands the program to `fn`, and removes every pin afterwards, also on failure. */
export async function withProgram<T>(object: string, fn: (p: LoadedProgram) => Promise<T>, type = "xdp"): Promise<T> {
  const prog = await loadProgram(object, type);
  try {
    return await fn(prog);
  } finally {
    prog.close();
  }
}

/** Sums a per-CPU array of { u64 packets; u64 bytes } counters. */
export function sumCounters(perCpu: Buffer[]): { packets: bigint; bytes: bigint } {
  return perCpu.reduce(
    (acc, v) => ({ packets: acc.packets + v.readBigUInt64LE(0), bytes: acc.bytes + v.readBigUInt64LE(8) }),
    { packets: 0n, bytes: 0n },
  );
}

// ---------------------------------------------------------------- runs with a context, in a namespace

/**
 * A network namespace for test runs whose routes and neighbours the test
 * controls: BPF_PROG_TEST_RUN runs in the caller's namespace, and helpers such
 * as bpf_fib_lookup consult it. Named bpfleet-ktest-<pid>-<random>; close()
 * deletes it, a process exit handler deletes what close() did not, and the
 * next createNetns() sweeps namespaces whose process is gone.
 */
export class TestNetns {
  private closed = false;

  constructor(readonly name: string) {}

  get path(): string {
    return `/run/netns/${this.name}`;
  }

  /** Runs `argv` inside the namespace (network only: bpffs pins stay visible, unlike `ip netns exec`). */
  exec(argv: string[], what = argv.join(" ")): Promise<string> {
    return sh(["nsenter", `--net=${this.path}`, ...argv], what);
  }

  /** `ip -n <ns> ...` */
  ip(...args: string[]): Promise<string> {
    return sh(["ip", "-n", this.name, ...args], `ip ${args.join(" ")}`);
  }

  sysctl(key: string, value: string | number): Promise<string> {
    return this.exec(["sysctl", "-qw", `${key}=${value}`]);
  }

  async link(dev: string): Promise<{ ifindex: number; mac: string }> {
    const [info] = JSON.parse(await this.ip("-j", "link", "show", "dev", dev)) as { ifindex: number; address: string }[];
    if (!info) throw new Error(`no link ${dev} in ${this.name}`);
    return { ifindex: info.ifindex, mac: info.address };
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    deleteNetns(this.name);
    liveNetns.delete(this.name);
  }
}

const liveNetns = new Set<string>();
process.once("exit", () => {
  for (const name of liveNetns) deleteNetns(name);
});

function deleteNetns(name: string): void {
  try {
    execFileSync("ip", ["netns", "delete", name], { stdio: "ignore" });
  } catch {
    // already gone
  }
}

function sweepStaleNetns(): void {
  let names: string[] = [];
  try {
    names = readdirSync("/run/netns");
  } catch {
    return;
  }
  for (const name of names) {
    const m = new RegExp(`^${DIR_PREFIX}(\\d+)-`).exec(name);
    if (m && !pidAlive(Number(m[1]))) deleteNetns(name);
  }
}

export async function createNetns(): Promise<TestNetns> {
  sweepStaleNetns();
  const name = `${DIR_PREFIX}${process.pid}-${Math.random().toString(36).slice(2, 8)}`;
  await sh(["ip", "netns", "add", name], "creating a network namespace");
  liveNetns.add(name);
  const ns = new TestNetns(name);
  await ns.ip("link", "set", "lo", "up");
  return ns;
}

export interface XdpRunOptions {
  repeat?: number;
  /** Run inside this namespace (bpf_fib_lookup sees its routes and neighbours). */
  netns?: TestNetns;
  /** struct xdp_md ingress_ifindex; 0 (default) means the namespace's loopback. */
  ingressIfindex?: number;
  rxQueueIndex?: number;
}

/**
 * BPF_PROG_TEST_RUN of an XDP program with a context (struct xdp_md: data,
 * data_end, data_meta, ingress_ifindex, rx_queue_index, egress_ifindex), so
 * the program sees a real ingress interface.
 */
export async function runXdp(prog: LoadedProgram, frame: Buffer, opts: XdpRunOptions = {}): Promise<RunResult> {
  const dir = mkdtempSync(join(tmpdir(), `${DIR_PREFIX}${process.pid}-run-`));
  try {
    const inFile = join(dir, "in");
    const outFile = join(dir, "out");
    const ctxFile = join(dir, "ctx");
    writeFileSync(inFile, frame);
    const ctx = Buffer.alloc(24);
    ctx.writeUInt32LE(0, 0); // data
    ctx.writeUInt32LE(frame.length, 4); // data_end: the kernel wants the frame's length
    ctx.writeUInt32LE(0, 8); // data_meta
    ctx.writeUInt32LE(opts.ingressIfindex ?? 0, 12);
    ctx.writeUInt32LE(opts.rxQueueIndex ?? 0, 16);
    ctx.writeUInt32LE(0, 20); // egress_ifindex must be 0
    writeFileSync(ctxFile, ctx);
    const argv = ["bpftool", "-j", "prog", "run", "pinned", prog.progPin, "data_in", inFile, "data_out", outFile, "data_size_out", String(frame.length + 256)];
    if (opts.ingressIfindex) argv.push("ctx_in", ctxFile);
    if (opts.repeat && opts.repeat > 1) argv.push("repeat", String(opts.repeat));
    const stdout = opts.netns ? await opts.netns.exec(argv, "BPF_PROG_TEST_RUN") : await sh(argv, "BPF_PROG_TEST_RUN");
    const out = JSON.parse(stdout) as { retval: number; duration: number };
    return { retval: out.retval, durationNs: out.duration, dataOut: readFileSync(outFile) };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

// ---------------------------------------------------------------- objects with several programs

/** TC verdicts as BPF_PROG_TEST_RUN reports them through LoadedObject.runProgram (signed). */
export const TC = { UNSPEC: -1, OK: 0, SHOT: 2 } as const;

/**
 * An object whose programs share its maps (e.g. TC ingress and egress),
 * loaded with `bpftool prog loadall OBJ <dir>/progs type TYPE pinmaps <dir>/maps`:
 * each program is pinned at <dir>/progs/<function name>. The map helpers of
 * LoadedProgram apply; `run`/`progInfo` (single-program pin) do not.
 */
export class LoadedObject extends LoadedProgram {
  constructor(
    dir: string,
    private readonly scratchDir: string,
  ) {
    super(dir, scratchDir);
  }

  programPin(name: string): string {
    return join(this.dir, "progs", name);
  }

  programNames(): string[] {
    return readdirSync(join(this.dir, "progs")).sort();
  }

  /** Runs program `name`; retval is signed (TC_ACT_UNSPEC is -1, not 4294967295). */
  async runProgram(name: string, frame: Buffer, opts: { repeat?: number } = {}): Promise<RunResult> {
    const tag = `${process.hrtime.bigint()}`;
    const inFile = join(this.scratchDir, `in-${tag}`);
    const outFile = join(this.scratchDir, `out-${tag}`);
    writeFileSync(inFile, frame);
    try {
      const argv = ["bpftool", "-j", "prog", "run", "pinned", this.programPin(name), "data_in", inFile, "data_out", outFile];
      argv.push("data_size_out", String(frame.length + 256));
      if (opts.repeat && opts.repeat > 1) argv.push("repeat", String(opts.repeat));
      const out = JSON.parse(await sh(argv, "BPF_PROG_TEST_RUN")) as { retval: number; duration: number };
      return { retval: out.retval | 0, durationNs: out.duration, dataOut: readFileSync(outFile) };
    } finally {
      rmSync(inFile, { force: true });
      rmSync(outFile, { force: true });
    }
  }

  async programInfo(name: string): Promise<ProgInfo> {
    return JSON.parse(await sh(["bpftool", "-j", "prog", "show", "pinned", this.programPin(name)], "prog show")) as ProgInfo;
  }

  /** The value of `key` in a (non-per-CPU) map, or undefined when absent. */
  async lookup(name: string, key: Buffer): Promise<Buffer | undefined> {
    try {
      const out = JSON.parse(
        await sh(["bpftool", "-j", "map", "lookup", "pinned", this.mapPin(name), "key", "hex", ...hex(key).split(" ")], "map lookup"),
      ) as { value: string[] };
      return Buffer.from(out.value.map((x) => parseInt(x, 16)));
    } catch (e) {
      if (/No such file or directory|not found/i.test((e as Error).message)) return undefined;
      throw e;
    }
  }
}

/**
 * Loads every program of `object` into a fresh private directory. With
 * `reuseMapsOf`, each map is the one already pinned there (as the provider
 * reuses maps on an upgrade), so both loads share state.
 */
export async function loadObject(
  object: string,
  opts: {
    type?: string;
    reuseMapsOf?: LoadedObject;
    /** With reuseMapsOf: reuse only these maps; the others are fresh (a copy of the program against scratch maps). */
    reuseOnly?: readonly string[];
  } = {},
): Promise<LoadedObject> {
  if (!existsSync(object)) throw new Error(`${object} does not exist: run make -C bpf`);
  ensureBpffs();
  sweepStaleDirs();
  const dir = mkdtempSync(join(BPFFS, `${DIR_PREFIX}${process.pid}-`));
  const workDir = mkdtempSync(join(tmpdir(), `${DIR_PREFIX}${process.pid}-`));
  liveDirs.add(dir);
  liveDirs.add(workDir);
  const loaded = new LoadedObject(dir, workDir);
  const reuse = opts.reuseMapsOf
    ? opts.reuseMapsOf
        .mapNames()
        .filter((name) => !opts.reuseOnly || opts.reuseOnly.includes(name))
        .flatMap((name) => ["map", "name", name, "pinned", opts.reuseMapsOf!.mapPin(name)])
    : [];
  try {
    await sh(
      ["bpftool", "prog", "loadall", object, join(dir, "progs"), "type", opts.type ?? "tc", ...reuse, "pinmaps", join(dir, "maps")],
      `loading ${object}`,
    );
  } catch (e) {
    loaded.close();
    throw e;
  }
  return loaded;
}

/** Loads all programs, hands the object to `fn`, and removes every pin afterwards, also on failure. */
export async function withObject<T>(object: string, fn: (o: LoadedObject) => Promise<T>, opts: { type?: string } = {}): Promise<T> {
  const loaded = await loadObject(object, opts);
  try {
    return await fn(loaded);
  } finally {
    loaded.close();
  }
}
