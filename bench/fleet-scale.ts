/**
 * Fleet scale (issue 10): one deny list of E entries on every host of an H-host
 * lab fleet, driven by the real `pulumi` CLI (file backend), next to the anchor
 * a user would compare it with: a parallel `ssh host bpftool batch file -` loop
 * applying the same one-entry change to the same pinned maps, on the same lab,
 * in the same run.
 *
 * For each hosts × entries cell and each program layout (`--layouts`), in order:
 * the first `up`; rounds of [anchor, `up` changing one entry, no-change
 * `preview`] (`--repeat` rounds; medians); `refresh`; `destroy`. Per step: wall
 * time, CPU of the CLI's whole process tree (CLI, language host, program, the
 * dynamic provider's node), that tree's peak resident memory, CPU each host
 * spent (its sshd and everything under it: a cgroup per host), SSH logins and
 * exec sessions per host (the host's sshd log). After the first `up`: exported
 * state bytes (`pulumi stack export | wc -c`) and the checkpoint file's size.
 *
 * On one machine the lab's hosts share its cores with the CLI: a wall time at
 * many hosts includes every host's CPU (100 hosts × 1.2 s of host CPU is a
 * minute of wall on 2 cores), and so does the anchor's. Compare the CPU
 * columns, and wall times only against the anchor of the same cell.
 *
 *   sudo npx vite-node bench/fleet-scale.ts [--hosts 1,10] [--entries 10,10000] [--repeat 1]
 *                                           [--layouts before,after] [--full] [--keep-going]
 *                                           [--before-package TGZ] [--after-package TGZ] [--lab-prefix fb]
 *                                           [--after-parallel N]
 *
 * Default grid: 1 and 10 hosts × 10 and 10,000 entries (about 10 minutes on 2
 * cores). `--full` is the issue's grid, 1/30/100 hosts × 10/10k/100k entries.
 * `--keep-going` records a failed cell and goes on with the next one.
 * Layouts: "before", an XdpFirewall per host holding the whole list (today's
 * layout); "after", one DenyList shared by every firewall (issue 10's
 * content-held-once design); "after-unguarded", the same without the lockout guard. Each layout's project installs bpfleet from
 * `--<layout>-package` (an `npm pack` tarball), by default this checkout's: to
 * compare releases, give "before" a tarball of the old code and "after" one of
 * the new, and both run on the same labs, cell by cell, in one run.
 * A layout may also be given as LABEL=LAYOUT, to compare two packages of one
 * layout: `--layouts main=after,branch=after --main-package A.tgz
 * --branch-package B.tgz` runs the DenyList program from each tarball.
 * `--<label>-parallel N` runs that label's CLI with PULUMI_PARALLEL=N (as
 * `--parallel N`): the engine's default is 4 resource operations per CPU, 8 on
 * 2 cores, while the anchor logs in to every host at once. `--layouts
 * p8=after,p100=after --p100-parallel 100` measures both in one run.
 * Labs are named <prefix><hosts> (`--lab-prefix`, default fb: fb1, fb10; give
 * another to run beside someone else's bench), cgroups fb-* (fb-<prefix>-* with
 * a prefix), projects under $BPFLEET_E2E_DIR
 * (default /tmp/bpfleet-e2e-fleetbench); all are removed at the end, on
 * failure and on Ctrl-C. Results also go to .bench/fleet-scale.json.
 */
import { execFileSync } from "node:child_process";
import { existsSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { execa } from "execa";
import { batchText } from "../provider/remote/mapOperations";
import { denyOperations, planDeny } from "../provider/xdpFirewall/plan";
import type { PulumiProject } from "../test/e2e/pulumiProject";
import { createLab, LAB_SH, type Lab } from "../test/lab/lab";
import { CpuGroup, cpuTotal, inGroup, median, sampleMemory, SshdLog, type CpuUsage, type MemoryPeak } from "./fleetScaleAccounting";
import { loadAverage, numberList, numberOption, option, printTable, REPO_ROOT, writeBenchRecord } from "./support";

const FULL = process.argv.includes("--full");
const KEEP_GOING = process.argv.includes("--keep-going");
const HOSTS = numberList("hosts", FULL ? "1,30,100" : "1,10");
const ENTRIES = numberList("entries", FULL ? "10,10000,100000" : "10,10000");
const REPEAT = numberOption("repeat", 1);
/** The anchor is cheap: run it this many times per round and take the median. */
const ANCHOR_REPEAT = 3;
const STEP_TIMEOUT_MS = numberOption("step-timeout", 3600) * 1000;

/** The entry the measured one-entry `up`s add and remove in turn, and the anchor's own (added, measured, then taken out again). */
const TOGGLED_ENTRY = "192.0.2.9/32";
const ANCHOR_ENTRY = "192.0.2.77/32";
const PIN_ROOT = "/sys/fs/bpf/bpfleet/xdp-firewall";

/**
 * The Pulumi programs compared. "before": today's layout, an XdpFirewall per
 * host each holding the whole list (as examples/quickstart, minus its
 * `denied` output, which prints every entry of every host and would measure
 * that output rather than the layout; the issue's own figures show it alone
 * costs ~200 s at 100k).
 */
const PROGRAMS: Record<string, string> = {
  before: `
import * as fs from "node:fs";
import * as pulumi from "@pulumi/pulumi";
import * as bpfleet from "bpfleet";

const config = new pulumi.Config();
const lab = JSON.parse(fs.readFileSync(config.require("labFile"), "utf8"));
const privateKey = pulumi.secret(fs.readFileSync(lab.privateKeyPath, "utf8"));
// One entry a line: stack config reaches the program in an environment variable (128 KiB at most).
const deny = fs.readFileSync(config.require("denyFile"), "utf8").split("\\n").filter(Boolean);

const firewalls = (lab.hosts as { name: string; address: string; port: number; hostKey: string; interface: string }[]).map(
  (h) => new bpfleet.XdpFirewall(\`fw-\${h.name}\`, { host: { address: h.address, port: h.port, user: "root", hostKey: h.hostKey, privateKey }, interface: h.interface, deny }),
);
export const entries = firewalls.map((fw) => fw.deny.apply((d) => Object.keys(d).length));
`,
  after: `
import * as fs from "node:fs";
import * as pulumi from "@pulumi/pulumi";
import * as bpfleet from "bpfleet";

const config = new pulumi.Config();
const lab = JSON.parse(fs.readFileSync(config.require("labFile"), "utf8"));
const privateKey = pulumi.secret(fs.readFileSync(lab.privateKeyPath, "utf8"));
const entries = fs.readFileSync(config.require("denyFile"), "utf8").split("\\n").filter(Boolean);
// The entries are held once, in this resource's state; each firewall carries the list's name, digest and count.
const feed = new bpfleet.DenyList("feed", { entries });

const firewalls = (lab.hosts as { name: string; address: string; port: number; hostKey: string; interface: string }[]).map(
  (h) => new bpfleet.XdpFirewall(\`fw-\${h.name}\`, { host: { address: h.address, port: h.port, user: "root", hostKey: h.hostKey, privateKey }, interface: h.interface, denyList: feed }),
);
export const feedDigest = feed.digest;
export const applied = firewalls.map((fw) => fw.denyList.apply((l) => l?.count));
`,
};
/**
 * "after-unguarded": the DenyList layout with the lockout guard off. The lab's
 * firewalls sit on the interface that carries the management session, where the
 * guard is armed for every change (a fresh login proves the path, and carries the
 * read-back); this measures the update of a firewall on a data interface, which
 * needs no proof.
 */
PROGRAMS["after-unguarded"] = PROGRAMS.after!.replace("interface: h.interface, denyList: feed }", "interface: h.interface, denyList: feed, lockoutGuard: false }");
if (PROGRAMS["after-unguarded"] === PROGRAMS.after) throw new Error("after-unguarded: the after program changed shape");
const LAYOUTS = option("layouts", "before").split(",").map((l) => l.split("=")[0]!);
/** A layout's program: its own, or LAYOUT's for a label given as LABEL=LAYOUT. */
const LAYOUT_PROGRAM = new Map(option("layouts", "before").split(",").map((l) => [l.split("=")[0]!, l.split("=")[1] ?? l] as const));
for (const [label, layout] of LAYOUT_PROGRAM) {
  if (!PROGRAMS[layout]) throw new Error(`--layouts: unknown layout ${layout}; known: ${Object.keys(PROGRAMS).join(", ")}`);
  if (!/^[a-z0-9-]+$/.test(label)) throw new Error(`--layouts: label ${label} must be [a-z0-9-]`);
}
if (new Set(LAYOUTS).size !== LAYOUTS.length) throw new Error("--layouts: each label once");
const programOf = (layout: string): string => PROGRAMS[LAYOUT_PROGRAM.get(layout)!]!;
const LAB_PREFIX = option("lab-prefix", "fb");
if (!/^[a-z]{1,4}$/.test(LAB_PREFIX)) throw new Error("--lab-prefix: 1-4 letters a-z (lab names are at most 7 characters)");
/** cgroup names: fb-* as before for the default prefix, fb-<prefix>-* otherwise. */
const GROUP_PREFIX = LAB_PREFIX === "fb" ? "fb" : `fb-${LAB_PREFIX}`;

/** E distinct exact IPv4 addresses in 100.64.0.0/10, away from the lab's subnet and from the toggled entries. */
function denyList(n: number): string[] {
  return Array.from({ length: n }, (_, i) => `100.${64 + ((i >> 16) & 63)}.${(i >> 8) & 255}.${i & 255}/32`);
}

// ---------------------------------------------------------------- accounting

interface HostAccounting {
  group: CpuGroup;
  log: SshdLog;
}

/** One measured step, reduced to what the table shows (raw per-host figures kept for the JSON record). */
interface Sample {
  wall: number;
  cpu: CpuUsage;
  memory: MemoryPeak;
  hostCpu: number[];
  logins: number[];
  sessions: number[];
}

let cliGroup: CpuGroup | undefined;
let anchorGroup: CpuGroup | undefined;
const hostGroups: CpuGroup[] = [];
/** Project directories, registered before they are made (a Ctrl-C during `npm install` leaves one half made). */
const projectDirs: string[] = [];
const labs: string[] = [];

async function measure(group: CpuGroup, hosts: readonly HostAccounting[], fn: () => Promise<void>): Promise<Sample> {
  const cpu0 = group.usage();
  const host0 = hosts.map((h) => cpuTotal(h.group.usage()));
  for (const h of hosts) h.log.mark();
  const memory = sampleMemory(group);
  const start = process.hrtime.bigint();
  let peak: MemoryPeak;
  try {
    await fn();
  } finally {
    peak = memory.stop();
  }
  const wall = Number(process.hrtime.bigint() - start) / 1e9;
  // Sessions end (and their processes exit) a moment after the client closes.
  await new Promise((r) => setTimeout(r, 300));
  const cpu1 = group.usage();
  const counts = hosts.map((h) => h.log.countSinceMark());
  return {
    wall,
    cpu: { user: cpu1.user - cpu0.user, system: cpu1.system - cpu0.system },
    memory: peak,
    hostCpu: hosts.map((h, i) => cpuTotal(h.group.usage()) - host0[i]!),
    logins: counts.map((c) => c.logins),
    sessions: counts.map((c) => c.sessions),
  };
}

/** The engine's parallelism per project, from `--<label>-parallel` (the CLI's own default when absent). */
const PARALLEL = new Map<PulumiProject, string>();

async function pulumi(project: PulumiProject, args: string[]): Promise<string> {
  const [file, argv] = inGroup(cliGroup!, "pulumi", [...args, "--non-interactive"]);
  const parallel = PARALLEL.get(project);
  const env = parallel ? { ...project.env, PULUMI_PARALLEL: parallel } : project.env;
  const r = await execa(file, argv, { cwd: project.dir, env, reject: false, all: true, timeout: STEP_TIMEOUT_MS });
  if (r.exitCode !== 0) throw new Error(`pulumi ${args.join(" ")} failed (exit ${r.exitCode}${r.timedOut ? ", timed out" : ""}):\n${String(r.all).slice(-4000)}`);
  return r.stdout;
}

// ---------------------------------------------------------------- the anchor

/**
 * The same one-entry change, written by hand: the provider's own planner gives
 * the map writes (index words and the record), bpftool batch applies them on
 * every host at once over plain ssh. Measured adding ANCHOR_ENTRY; the removal
 * that follows puts the maps back before Pulumi runs again and is not measured.
 */
async function anchor(lab: Lab, hosts: readonly HostAccounting[], current: readonly string[]): Promise<Sample> {
  const pins = await Promise.all(
    lab.hosts.map(async (h) => {
      const dirs = (await lab.inHost(h, ["ls", "-1", PIN_ROOT])).stdout.split("\n").filter(Boolean);
      if (dirs.length !== 1) throw new Error(`anchor: expected one firewall under ${PIN_ROOT} on ${h.name}, found ${dirs.length}: ${dirs.join(" ")}`);
      return `${PIN_ROOT}/${dirs[0]}/maps`;
    }),
  );
  const PLACEHOLDER = "@MAPS@";
  const withEntry = [...current, ANCHOR_ENTRY];
  const add = batchText(denyOperations(planDeny(withEntry, current), (m) => `${PLACEHOLDER}/${m}`));
  const remove = batchText(denyOperations(planDeny(current, withEntry), (m) => `${PLACEHOLDER}/${m}`));
  // ssh2 (the provider) negotiates curve25519; OpenSSH's default post-quantum kex costs both ends ~0.2 s more per login.
  const sshOptions = ["-o", "KexAlgorithms=curve25519-sha256"];
  const sample = await measure(anchorGroup!, hosts, async () => {
    await Promise.all(
      lab.hosts.map(async (h, i) => {
        const [file, argv] = inGroup(anchorGroup!, "ssh", [...sshOptions, ...lab.sshArgs(h), "bpftool batch file -"]);
        await execa(file, argv, { input: add.replaceAll(PLACEHOLDER, pins[i]!) });
      }),
    );
  });
  await Promise.all(lab.hosts.map((h, i) => lab.inHost(h, ["bpftool", "batch", "file", "-"], { input: remove.replaceAll(PLACEHOLDER, pins[i]!) })));
  return sample;
}

// ---------------------------------------------------------------- one cell

interface Cell {
  layout: string;
  hosts: number;
  entries: number;
  stateExportBytes?: number;
  stateFileBytes?: number;
  steps: Record<string, Sample[]>;
  error?: string;
}

const STEPS = ["anchor", "first up", "up, 1 entry", "preview, no change", "refresh", "destroy"] as const;

function checkpointBytes(project: PulumiProject): number {
  const dir = join(project.dir, ".state", ".pulumi", "stacks");
  let total = 0;
  const walk = (d: string) => {
    for (const e of readdirSync(d, { withFileTypes: true })) {
      if (e.isDirectory()) walk(join(d, e.name));
      else if (/^dev\.json(\.gz)?$/.test(e.name)) total += statSync(join(d, e.name)).size;
    }
  };
  walk(dir);
  return total;
}

async function runCell(project: PulumiProject, lab: Lab, hosts: readonly HostAccounting[], layout: string, entries: number): Promise<Cell> {
  const cell: Cell = { layout, hosts: lab.hosts.length, entries, steps: Object.fromEntries(STEPS.map((s) => [s, []])) };
  const base = denyList(entries);
  const denyFile = join(project.dir, "deny.txt");
  const writeDeny = (list: readonly string[]) => writeFileSync(denyFile, `${list.join("\n")}\n`);
  const step = async (name: (typeof STEPS)[number], args: string[]) => {
    cell.steps[name]!.push(await measure(cliGroup!, hosts, async () => void (await pulumi(project, args))));
    console.log(`  ${layout} ${cell.hosts}x${entries} ${name}: ${cell.steps[name]!.at(-1)!.wall.toFixed(1)} s`);
  };
  let destroyed = false;
  try {
    await pulumi(project, ["config", "set", "labFile", lab.jsonPath]);
    await pulumi(project, ["config", "set", "denyFile", denyFile]);
    writeDeny(base);
    await step("first up", ["up", "--yes", "--skip-preview"]);
    cell.stateExportBytes = Buffer.byteLength(await pulumi(project, ["stack", "export"]));
    cell.stateFileBytes = checkpointBytes(project);

    let current = base;
    for (let round = 0; round < REPEAT; round++) {
      for (let a = 0; a < ANCHOR_REPEAT; a++) cell.steps.anchor!.push(await anchor(lab, hosts, current));
      console.log(`  ${layout} ${cell.hosts}x${entries} anchor: ${median(cell.steps.anchor!.map((s) => s.wall)).toFixed(2)} s`);
      current = round % 2 === 0 ? [...base, TOGGLED_ENTRY] : base;
      writeDeny(current);
      await step("up, 1 entry", ["up", "--yes", "--skip-preview"]);
      await step("preview, no change", ["preview"]);
    }
    await step("refresh", ["refresh", "--yes", "--skip-preview"]);
    await step("destroy", ["destroy", "--yes", "--skip-preview"]);
    destroyed = true;
  } catch (err) {
    cell.error = (err as Error).message;
    if (!KEEP_GOING) throw err;
    console.error(`  ${layout} ${cell.hosts}x${entries} failed; going on (--keep-going):\n${cell.error}`);
  } finally {
    if (!destroyed) await pulumi(project, ["destroy", "--yes", "--skip-preview"]).catch((e) => console.error(`cleanup destroy failed (the lab goes anyway): ${(e as Error).message}`));
    // The file backend keeps every checkpoint in history/ and backups/: tens of MB per update at scale.
    for (const d of ["history", "backups"]) rmSync(join(project.dir, ".state", ".pulumi", d), { recursive: true, force: true });
  }
  return cell;
}

// ---------------------------------------------------------------- report

const mb = (bytes: number) => (bytes / 1048576).toFixed(0);
const s1 = (n: number) => (n >= 10 ? n.toFixed(1) : n.toFixed(2));
const ratio = (n: number, d: number) => (d > 0 ? `${(n / d).toFixed(1)}x` : "-");
const perHost = (values: number[]) => {
  const m = median(values);
  const max = Math.max(...values);
  return max > m * 1.2 && max - m > 0.05 ? `${s1(m)} (max ${s1(max)})` : s1(m);
};
const count = (values: number[]) => {
  const m = median(values);
  const max = Math.max(...values);
  return max !== m ? `${m} (max ${max})` : String(m);
};

/** A step's samples reduced by medians (figure by figure). */
function reduce(samples: Sample[]) {
  return {
    wall: median(samples.map((s) => s.wall)),
    cpu: median(samples.map((s) => cpuTotal(s.cpu))),
    treeRss: median(samples.map((s) => s.memory.treeRss)),
    processRss: median(samples.map((s) => s.memory.processRss)),
    processName: samples.at(-1)!.memory.processName,
    hostCpu: samples[0]!.hostCpu.map((_, i) => median(samples.map((s) => s.hostCpu[i]!))),
    logins: samples[0]!.logins.map((_, i) => median(samples.map((s) => s.logins[i]!))),
    sessions: samples[0]!.sessions.map((_, i) => median(samples.map((s) => s.sessions[i]!))),
  };
}

function report(cells: Cell[]): void {
  const header = ["layout", "hosts", "entries", "step", "wall s", "x anchor", "CPU s", "tree RSS MB", "largest MB", "host CPU s/host", "x anchor", "logins/host", "execs/host"];
  const rows: string[][] = [];
  for (const c of cells) {
    if (!c.steps.anchor!.length) continue;
    const a = reduce(c.steps.anchor!);
    for (const name of STEPS) {
      const samples = c.steps[name]!;
      if (!samples.length) continue;
      const r = reduce(samples);
      const isAnchor = name === "anchor";
      rows.push([
        c.layout,
        String(c.hosts),
        String(c.entries),
        isAnchor ? "anchor: ssh + bpftool batch" : name + (samples.length > 1 ? ` (median of ${samples.length})` : ""),
        s1(r.wall),
        isAnchor ? "1x" : ratio(r.wall, a.wall),
        s1(r.cpu),
        mb(r.treeRss),
        `${mb(r.processRss)} ${r.processName}`,
        perHost(r.hostCpu),
        isAnchor ? "1x" : ratio(median(r.hostCpu), median(a.hostCpu)),
        count(r.logins),
        count(r.sessions),
      ]);
    }
  }
  console.log("\nFleet scale: one XdpFirewall per host, the same deny list on every host (real pulumi CLI, file backend, lab hosts)");
  console.log("CPU s: the CLI's whole process tree (CLI, language host, program, dynamic provider; the anchor's ssh clients); tree RSS: peak of its summed resident memory;");
  console.log("largest: the largest single process's own peak (VmHWM). host CPU: each host's sshd and everything under it, median over hosts. x anchor: same cell, same run.");
  printTable(header, rows, [0, 3, 8]);

  console.log("\nExported state (pulumi stack export | wc -c) and checkpoint file, after the first up");
  printTable(
    ["layout", "hosts", "entries", "export bytes", "bytes/host", "bytes/entry/host", "checkpoint file bytes"],
    cells
      .filter((c) => c.stateExportBytes !== undefined)
      .map((c) => [c.layout, String(c.hosts), String(c.entries), String(c.stateExportBytes), String(Math.round(c.stateExportBytes! / c.hosts)), (c.stateExportBytes! / c.hosts / c.entries).toFixed(1), String(c.stateFileBytes)]),
    [0],
  );

  // The targets, wherever the grid holds both sides of a comparison.
  const targets: string[] = [];
  for (const c of cells) {
    if (c.hosts === 1 || c.stateExportBytes === undefined) continue;
    const one = cells.find((o) => o.layout === c.layout && o.entries === c.entries && o.hosts === 1 && o.stateExportBytes !== undefined);
    const up = c.steps["up, 1 entry"]!;
    if (up.length && c.steps.anchor!.length) targets.push(`${c.layout} ${c.hosts}x${c.entries}: one-entry up / anchor ${ratio(reduce(up).wall, reduce(c.steps.anchor!).wall)} (target <= 3x)`);
    if (!one) continue;
    targets.push(`${c.layout} ${c.hosts}x${c.entries} / 1x${c.entries}: exported state ${ratio(c.stateExportBytes, one.stateExportBytes!)} (target <= 1.5x)`);
    const [big, small] = [c.steps["up, 1 entry"]!, one.steps["up, 1 entry"]!];
    if (big.length && small.length) targets.push(`${c.layout} ${c.hosts}x${c.entries} / 1x${c.entries}: CLI tree peak RSS in a one-entry up ${ratio(reduce(big).treeRss, reduce(small).treeRss)} (target <= 2x)`);
  }
  if (targets.length) console.log(`\nIssue 10's targets, as measured:\n  ${targets.join("\n  ")}`);
  for (const c of cells.filter((c) => c.error)) console.log(`\nFAILED ${c.layout} ${c.hosts}x${c.entries}: ${c.error!.split("\n")[0]}`);
}

// ---------------------------------------------------------------- cleanup

/** Synchronous, so it also runs from 'exit' and signal handlers: kill what we started, then remove labs, projects and cgroups. */
function cleanupSync(): void {
  cliGroup?.killAll();
  anchorGroup?.killAll();
  for (const name of labs.splice(0)) {
    try {
      execFileSync(LAB_SH, ["down", name], { stdio: "ignore", timeout: 120_000 });
    } catch {
      console.error(`lab ${name} could not be removed: run test/lab/lab.sh down ${name}`);
    }
  }
  for (const dir of projectDirs.splice(0)) rmSync(dir, { recursive: true, force: true });
  for (const g of [cliGroup, anchorGroup, ...hostGroups.splice(0)]) {
    try {
      g?.remove();
    } catch (err) {
      console.error(`cgroup ${g?.dir} could not be removed: ${(err as Error).message}`);
    }
  }
  cliGroup = anchorGroup = undefined;
}

function installCleanup(): void {
  process.on("exit", cleanupSync);
  for (const sig of ["SIGINT", "SIGTERM", "SIGHUP"] as const) {
    process.on(sig, () => {
      console.error(`\n${sig}: removing the bench's labs, stacks and cgroups`);
      cleanupSync();
      process.exit(130);
    });
  }
}

// ---------------------------------------------------------------- main

/**
 * The layout's project: bpfleet from `--<layout>-package` when given (the same
 * files test/e2e/pulumiProject's create writes, with that tarball), else from
 * this checkout's own `npm pack`.
 */
async function layoutProject(Project: typeof PulumiProject, layout: string): Promise<PulumiProject> {
  const name = `fleet-scale-${layout}`;
  const tarball = option(`${layout}-package`, "");
  if (!tarball) return Project.fromSource(name, programOf(layout), "fleetscale");
  if (!existsSync(tarball)) throw new Error(`--${layout}-package: ${tarball} does not exist (an npm pack tarball of bpfleet)`);
  const root = JSON.parse(readFileSync(join(REPO_ROOT, "package.json"), "utf8"));
  const packageJson = {
    name,
    private: true,
    dependencies: { bpfleet: `file:${resolve(tarball)}`, "@pulumi/pulumi": root.dependencies["@pulumi/pulumi"] },
    devDependencies: { "ts-node": root.devDependencies["ts-node"], typescript: root.devDependencies.typescript, "@types/node": root.devDependencies["@types/node"] },
  };
  const tsconfig = { compilerOptions: { strict: true, target: "ES2022", module: "commonjs", moduleResolution: "node", esModuleInterop: true, skipLibCheck: true } };
  return Project.fromFiles(name, {
    "Pulumi.yaml": "name: fleetscale\nruntime:\n  name: nodejs\n  options:\n    typescript: true\n",
    "package.json": JSON.stringify(packageJson, null, 2),
    "tsconfig.json": JSON.stringify(tsconfig, null, 2),
    "index.ts": programOf(layout),
  });
}

function pssOf(pid: number): number {
  try {
    return Number(readFileSync(`/proc/${pid}/smaps_rollup`, "utf8").match(/^Pss:\s+(\d+) kB/m)![1]) * 1024;
  } catch {
    return 0;
  }
}

async function main(): Promise<void> {
  if (process.getuid?.() !== 0) throw new Error("run as root (lab hosts are network namespaces; accounting uses cgroups)");
  // Our own packed tarball and project directories, not another run's (test/e2e/pulumiProject reads this at import).
  process.env.BPFLEET_E2E_DIR ??= "/tmp/bpfleet-e2e-fleetbench";
  const { PulumiProject } = await import("../test/e2e/pulumiProject");
  installCleanup();
  cliGroup = new CpuGroup(`${GROUP_PREFIX}-cli`);
  anchorGroup = new CpuGroup(`${GROUP_PREFIX}-anchor`);
  const loadBefore = loadAverage();
  console.log(`fleet-scale: hosts ${HOSTS.join(",")} x entries ${ENTRIES.join(",")}, layouts ${LAYOUTS.join(",")}, ${REPEAT} round(s); load average ${loadBefore}`);

  const layoutProjects = new Map<string, PulumiProject>();
  for (const layout of LAYOUTS) {
    const dir = join(process.env.BPFLEET_E2E_DIR, `fleet-scale-${layout}`);
    projectDirs.push(dir, `${dir}.program.ts`);
    const project = await layoutProject(PulumiProject, layout);
    layoutProjects.set(layout, project);
    const parallel = option(`${layout}-parallel`, "");
    if (parallel && !/^[1-9][0-9]*$/.test(parallel)) throw new Error(`--${layout}-parallel: ${parallel} is not a positive whole number`);
    if (parallel) PARALLEL.set(project, parallel);
  }

  const cells: Cell[] = [];
  const labCosts: { hosts: number; seconds: number; sshdPss: number }[] = [];
  for (const hostCount of HOSTS) {
    const name = `${LAB_PREFIX}${hostCount}`;
    labs.push(name);
    const t0 = process.hrtime.bigint();
    const lab = await createLab(name, { hosts: hostCount });
    const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
    labCosts.push({ hosts: hostCount, seconds, sshdPss: lab.hosts.reduce((sum, h) => sum + pssOf(h.sshdPid), 0) });
    console.log(`lab ${name}: ${hostCount} hosts up in ${seconds.toFixed(1)} s`);
    const hosts: HostAccounting[] = lab.hosts.map((h) => {
      const group = new CpuGroup(`${GROUP_PREFIX}-${name}-${h.name}`);
      hostGroups.push(group);
      group.add(h.sshdPid);
      return { group, log: new SshdLog(join(lab.dir, h.name, "sshd.log")) };
    });
    try {
      for (const entries of ENTRIES) {
        for (const layout of LAYOUTS) cells.push(await runCell(layoutProjects.get(layout)!, lab, hosts, layout, entries));
      }
    } finally {
      await lab.destroy();
      labs.splice(labs.indexOf(name), 1);
      for (const g of hostGroups.splice(0)) g.remove();
    }
  }
  const loadAfter = loadAverage();

  report(cells);
  // sshd's own memory only: the kernel's share (namespaces, veths) shows only in MemAvailable, which other work on a shared machine drowns.
  console.log("\nLab cost (test/lab/lab.sh up, no clients)");
  printTable(
    ["hosts", "up s", "s/host", "sshd PSS MB/host"],
    labCosts.map((l) => [String(l.hosts), l.seconds.toFixed(1), (l.seconds / l.hosts).toFixed(2), (l.sshdPss / l.hosts / 1048576).toFixed(1)]),
    [],
  );
  console.log(`\nload average before: ${loadBefore}; after: ${loadAfter}`);
  console.log(`record: ${writeBenchRecord("fleet-scale", { hosts: HOSTS, entries: ENTRIES, layouts: LAYOUTS, repeat: REPEAT, loadBefore, loadAfter, labCosts, cells })}`);
  cleanupSync();
  if (cells.some((c) => c.error)) process.exitCode = 1;
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
