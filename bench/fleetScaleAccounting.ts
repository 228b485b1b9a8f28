// What bench/fleet-scale.ts measures around each step, and how: CPU of a
// process tree through a cpuacct cgroup (v1) or a cgroup v2 directory, the
// tree's resident memory by sampling /proc, and SSH logins and exec sessions
// from a lab host's sshd log (LogLevel VERBOSE, test/lab/lab.sh).
//
// Why cgroups: the Pulumi CLI starts the language host, the program's node and
// the dynamic provider's node; sshd forks a process per connection and per
// session. getrusage only sees children that were waited for, and a cgroup
// catches every descendant, reaped or not, with nothing to parse.
import { existsSync, mkdirSync, openSync, readFileSync, readSync, closeSync, rmdirSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";

type CgroupFlavour = { version: 1; root: string } | { version: 2; root: string };

function cgroupFlavour(): CgroupFlavour {
  // cgroup v1 with cpuacct (accounting only: moving a process there does not change how it is scheduled).
  if (existsSync("/sys/fs/cgroup/cpuacct/cgroup.procs")) return { version: 1, root: "/sys/fs/cgroup/cpuacct" };
  if (existsSync("/sys/fs/cgroup/cgroup.controllers")) return { version: 2, root: "/sys/fs/cgroup" };
  throw new Error("bench/fleet-scale needs cgroup accounting: neither /sys/fs/cgroup/cpuacct (cgroup v1) nor a cgroup v2 mount at /sys/fs/cgroup was found");
}

/** CPU seconds a cgroup has used so far (user and system, as the kernel accounts them). */
export interface CpuUsage {
  user: number;
  system: number;
}

export const cpuTotal = (u: CpuUsage): number => u.user + u.system;

/**
 * A cgroup that only accounts: every process moved into it, and whatever those
 * processes start, is charged to it. Made under the hierarchy's root with a
 * name of ours (`fb-...`) and removed by `remove()` once empty.
 */
export class CpuGroup {
  private static flavour: CgroupFlavour | undefined;
  readonly dir: string;

  constructor(readonly name: string) {
    if (!/^fb-[a-z0-9-]+$/.test(name)) throw new Error(`cgroup name ${name} must start with fb- and use [a-z0-9-]`);
    CpuGroup.flavour ??= cgroupFlavour();
    this.dir = join(CpuGroup.flavour.root, name);
    mkdirSync(this.dir, { recursive: true });
  }

  /** Moves a running process (not its existing children; new ones follow it). */
  add(pid: number): void {
    writeFileSync(join(this.dir, "cgroup.procs"), String(pid));
  }

  pids(): number[] {
    try {
      return readFileSync(join(this.dir, "cgroup.procs"), "utf8").split("\n").filter(Boolean).map(Number);
    } catch {
      return [];
    }
  }

  usage(): CpuUsage {
    if (CpuGroup.flavour!.version === 1) {
      const ns = (file: string) => Number(readFileSync(join(this.dir, file), "utf8").trim()) / 1e9;
      return { user: ns("cpuacct.usage_user"), system: ns("cpuacct.usage_sys") };
    }
    const stat = Object.fromEntries(
      readFileSync(join(this.dir, "cpu.stat"), "utf8")
        .split("\n")
        .filter(Boolean)
        .map((l) => l.split(" ") as [string, string]),
    );
    return { user: Number(stat.user_usec) / 1e6, system: Number(stat.system_usec) / 1e6 };
  }

  /** SIGKILLs what is left in the group: only processes this bench started are ever in it. */
  killAll(): void {
    for (const pid of this.pids()) {
      try {
        process.kill(pid, "SIGKILL");
      } catch {
        // gone already
      }
    }
  }

  /** Removes the group; its processes must have exited (a lab's sshds are gone after `lab.sh down`). */
  remove(): void {
    for (let attempt = 0; attempt < 50; attempt++) {
      try {
        rmdirSync(this.dir);
        return;
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === "ENOENT") return;
        if (attempt === 49) throw err;
        // A killed process leaves the group only once the kernel has reaped it.
        Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 100);
      }
    }
  }
}

/** `sh -c` prefix that puts the shell into `group` and then execs argv, so the whole tree is charged to it from the first instruction. */
export function inGroup(group: CpuGroup, file: string, args: readonly string[]): [string, string[]] {
  return ["sh", ["-c", 'echo $$ > "$0/cgroup.procs" && exec "$@"', group.dir, file, ...args]];
}

export interface MemoryPeak {
  /** Peak of the summed resident set of every process in the group at one moment (bytes). */
  treeRss: number;
  /** The largest single process's own peak (VmHWM, bytes) and its command name. */
  processRss: number;
  processName: string;
}

function statusFields(pid: number): { name: string; rss: number; hwm: number } | undefined {
  try {
    const status = readFileSync(`/proc/${pid}/status`, "utf8");
    const kb = (field: string) => Number(status.match(new RegExp(`^${field}:\\s+(\\d+) kB`, "m"))?.[1] ?? 0) * 1024;
    return { name: status.match(/^Name:\s+(.*)$/m)?.[1] ?? "?", rss: kb("VmRSS"), hwm: kb("VmHWM") };
  } catch {
    return undefined; // exited between listing and reading
  }
}

/**
 * Samples the group's processes every `intervalMs` until stopped. VmHWM is the
 * kernel's own per-process peak, so the largest process's figure is exact as of
 * its last sample; the tree's sum is as good as the sampling interval.
 */
export function sampleMemory(group: CpuGroup, intervalMs = 200): { stop(): MemoryPeak } {
  const peak: MemoryPeak = { treeRss: 0, processRss: 0, processName: "-" };
  const sample = () => {
    let sum = 0;
    for (const pid of group.pids()) {
      const s = statusFields(pid);
      if (!s) continue;
      sum += s.rss;
      if (s.hwm > peak.processRss) {
        peak.processRss = s.hwm;
        peak.processName = s.name;
      }
    }
    peak.treeRss = Math.max(peak.treeRss, sum);
  };
  const timer = setInterval(sample, intervalMs);
  return {
    stop() {
      sample();
      clearInterval(timer);
      return peak;
    },
  };
}

/** Logins and exec sessions an sshd logged (LogLevel VERBOSE) since `mark()`. */
export class SshdLog {
  private offset = 0;

  constructor(readonly path: string) {}

  mark(): void {
    this.offset = existsSync(this.path) ? statSync(this.path).size : 0;
  }

  /** "Accepted publickey for" is one login; "Starting session:" one exec, shell or subsystem channel (a round trip). */
  countSinceMark(): { logins: number; sessions: number } {
    const size = statSync(this.path).size;
    const length = size - this.offset;
    const buffer = Buffer.alloc(Math.max(0, length));
    const fd = openSync(this.path, "r");
    try {
      readSync(fd, buffer, 0, length, this.offset);
    } finally {
      closeSync(fd);
    }
    const text = buffer.toString("utf8");
    return { logins: text.match(/Accepted publickey for /g)?.length ?? 0, sessions: text.match(/Starting session: /g)?.length ?? 0 };
  }
}

export function median(values: readonly number[]): number {
  if (values.length === 0) return NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}
