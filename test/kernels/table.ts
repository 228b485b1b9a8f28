/**
 * The README's supported-kernels section, computed from a kernel matrix run
 * (test/kernels/matrix.sh writes test/kernels/results/<suite>.json).
 *
 *   npx tsx test/kernels/table.ts           prints the section
 *   npx tsx test/kernels/table.ts --write   puts it into README.md between the markers
 *
 * A resource is ✔ on a Debian release when, on that release's kernel and with its
 * own bpftool, the resource's preflight passes and its objects load and run a
 * packet; ✘ names the first thing that stops it. test/kernels/matrix.test.ts fails
 * when README.md says otherwise than the last run.
 */
import { readdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";

export interface ProgramRun { name: string; run: "ok" | "failed"; retval?: number; reason?: string }
export interface ObjectLoad { object: string; type: string; load: "ok" | "failed"; reason?: string; programs: ProgramRun[] }
export interface ToolResult {
  bpftool: string;
  version: string;
  features: { program_types: Record<string, boolean>; helpers: Record<string, string[] | null> } | null;
  loads: ObjectLoad[];
}
export interface SuiteResult { suite: string; kernel: string; seconds: number; results: ToolResult[] }

export const SUITES: Record<string, string> = { bullseye: "Debian 11", bookworm: "Debian 12", trixie: "Debian 13" };

/**
 * What each resource (and mode) needs: its objects, and what its preflight
 * checks in the host's `bpftool feature probe` (provider/*\/lifecycle.ts:
 * requireProgramType, requireHelpers).
 */
export interface Requirement { column: string; objects: string[]; programType: "xdp" | "sched_cls"; helpers: string[] }
export const REQUIREMENTS: Requirement[] = [
  { column: "XdpFirewall", objects: ["xdp_firewall"], programType: "xdp", helpers: [] },
  { column: "MaglevService", objects: ["xdp_maglev"], programType: "xdp", helpers: [] },
  { column: "XDP chain (firewall + LB)", objects: ["xdp_dispatcher", "xdp_firewall", "xdp_maglev"], programType: "xdp", helpers: [] },
  { column: "TrafficMirror", objects: ["tc_mirror"], programType: "sched_cls", helpers: [] },
  // provider/tcPolicy/lifecycle.ts's POLICY_HELPERS (no BPF timers since flows expire on lookup).
  { column: "TcPolicy", objects: ["tc_policy"], programType: "sched_cls", helpers: ["bpf_ktime_get_ns", "bpf_skb_pull_data"] },
];

export function readResults(dir: string): SuiteResult[] {
  const order = Object.keys(SUITES);
  return readdirSync(dir)
    .filter((f) => f.endsWith(".json"))
    .map((f) => JSON.parse(readFileSync(join(dir, f), "utf8")) as SuiteResult)
    .sort((a, b) => order.indexOf(a.suite) - order.indexOf(b.suite));
}

/** The preflight's verdict from the host's probe: undefined when it passes, else why not. */
export function preflightVerdict(tool: ToolResult, req: Requirement): string | undefined {
  if (!tool.features) return "bpftool feature probe failed";
  if (tool.features.program_types[`have_${req.programType}_prog_type`] === false) return `no ${req.programType} programs`;
  const available = tool.features.helpers[req.programType] ?? [];
  const missing = req.helpers.filter((h) => !available.includes(h));
  return missing.length ? `preflight refuses: no ${missing.join(", ")}` : undefined;
}

/** The first reason `objects` do not load and run with `tool`; undefined when all do. */
export function loadVerdict(tool: ToolResult, objects: string[]): string | undefined {
  for (const object of objects) {
    const load = tool.loads.find((l) => l.object === object);
    if (!load) return `${object}: not in bpf/obj`;
    if (load.load !== "ok") return `${object} does not load: ${shorten(load.reason ?? "")}`;
    const failed = load.programs.find((p) => p.run !== "ok");
    if (failed) return `${object}/${failed.name} does not run: ${shorten(failed.reason ?? "")}`;
    if (load.programs.length === 0) return `${object}: no programs`;
  }
  return undefined;
}

function shorten(reason: string): string {
  return reason.replace(/\|/g, "/").trim().slice(0, 160);
}

// Major.minor only: Debian's point releases must not make README disagree with a run.
const minor = (version: string) => version.match(/^v?\d+\.\d+/)?.[0] ?? version;

function kernelLabel(r: SuiteResult): string {
  return `${minor(r.kernel)} (${SUITES[r.suite] ?? r.suite})`;
}

export function renderSection(results: SuiteResult[]): string {
  const lines: string[] = [];
  lines.push("Each Debian release's own kernel and own `bpftool`, booted under qemu by `test/kernels/matrix.sh`; ✔: the resource's preflight passes and its programs load and run a packet (`BPF_PROG_TEST_RUN`); ✘: why not.");
  lines.push("");
  lines.push(`| kernel | bpftool | ${REQUIREMENTS.map((r) => r.column).join(" | ")} |`);
  lines.push(`|---|---|${REQUIREMENTS.map(() => "---").join("|")}|`);
  for (const r of results) {
    const own = r.results.find((t) => t.bpftool === r.suite);
    if (!own) continue;
    const cells = REQUIREMENTS.map((req) => {
      const refused = preflightVerdict(own, req);
      const broken = loadVerdict(own, req.objects);
      if (refused) return `✘ ${refused}`;
      return broken ? `✘ ${broken}` : "✔";
    });
    lines.push(`| ${kernelLabel(r)} | ${minor(own.version)} | ${cells.join(" | ")} |`);
  }
  lines.push("");
  lines.push("Every object with every bpftool on every kernel (load / one packet through each program):");
  lines.push("");
  const tools = [...new Set(results.flatMap((r) => r.results.map((t) => `${t.bpftool} ${minor(t.version)}`)))];
  lines.push(`| kernel | object | ${tools.join(" | ")} |`);
  lines.push(`|---|---|${tools.map(() => "---").join("|")}|`);
  const objects = [...new Set(results.flatMap((r) => r.results.flatMap((t) => t.loads.map((l) => l.object))))].sort();
  for (const r of results) {
    for (const object of objects) {
      const cells = tools.map((label) => {
        const tool = r.results.find((t) => `${t.bpftool} ${minor(t.version)}` === label);
        const load = tool?.loads.find((l) => l.object === object);
        if (!load) return "–";
        if (load.load !== "ok") return "✘ load";
        return load.programs.every((p) => p.run === "ok") ? "✔ ✔" : "✔ ✘ run";
      });
      lines.push(`| ${kernelLabel(r)} | ${object} | ${cells.join(" | ")} |`);
    }
  }
  const whys = new Set<string>();
  for (const r of results) {
    for (const tool of r.results) {
      for (const load of tool.loads) {
        const why = loadVerdict(tool, [load.object]);
        if (why) whys.add(`- ${kernelLabel(r)}, bpftool ${minor(tool.version)}: ${why}`);
      }
    }
  }
  if (whys.size) lines.push("", "Why ✘:", "", ...whys);
  return lines.join("\n");
}

export const BEGIN = "<!-- supported-kernels: generated by test/kernels/table.ts from a matrix run; do not edit -->";
export const END = "<!-- /supported-kernels -->";

/** README's generated section, or undefined when the markers are missing. */
export function readmeSection(readme: string): string | undefined {
  const start = readme.indexOf(BEGIN);
  const end = readme.indexOf(END);
  if (start < 0 || end < start) return undefined;
  return readme.slice(start + BEGIN.length, end).trim();
}

if (process.argv[1]?.endsWith("table.ts")) {
  const root = join(__dirname, "../..");
  const section = renderSection(readResults(process.env.KERNEL_RESULTS ?? join(__dirname, "results")));
  if (process.argv.includes("--write")) {
    const readmePath = join(root, "README.md");
    const readme = readFileSync(readmePath, "utf8");
    if (readmeSection(readme) === undefined) throw new Error(`README.md has no ${BEGIN} ... ${END} markers`);
    const start = readme.indexOf(BEGIN) + BEGIN.length;
    writeFileSync(readmePath, `${readme.slice(0, start)}\n${section}\n${readme.slice(readme.indexOf(END))}`);
  } else {
    console.log(section);
  }
}
