// The kernel matrix (test/kernels/matrix.sh): Debian 11/12/13's kernels under qemu,
// every object in bpf/obj loaded with the machine's and each Debian release's
// bpftool, one packet through every program. Runs the matrix first when its
// results are missing or older than bpf/obj (a run takes minutes per kernel).
import { spawn } from "node:child_process";
import { existsSync, readdirSync, readFileSync, statSync } from "node:fs";
import { join } from "node:path";
import { beforeAll, describe, expect, it } from "vitest";
import { parseMapDump } from "../../provider/remote/mapOperations";
import { loadVerdict, preflightVerdict, readmeSection, readResults, renderSection, REQUIREMENTS, SUITES, type SuiteResult } from "./table";

const root = join(__dirname, "../..");
const resultsDir = process.env.KERNEL_RESULTS ?? join(__dirname, "results");

function stale(): boolean {
  const objects = readdirSync(join(root, "bpf/obj")).filter((f) => f.endsWith(".bpf.o"));
  const newest = Math.max(...objects.map((f) => statSync(join(root, "bpf/obj", f)).mtimeMs));
  return Object.keys(SUITES).some((s) => {
    const file = join(resultsDir, `${s}.json`);
    return !existsSync(file) || statSync(file).mtimeMs < newest;
  });
}

let results: SuiteResult[] = [];
beforeAll(async () => {
  if (process.getuid?.() !== 0) throw new Error("the kernel matrix boots qemu guests that load BPF: run as root");
  if (stale()) {
    // Asynchronously: a worker blocked for minutes loses its RPC link to vitest.
    const matrix = spawn("bash", [join(__dirname, "matrix.sh")], { stdio: "inherit", env: { ...process.env, KERNEL_RESULTS: resultsDir } });
    const code = await new Promise<number | null>((resolve) => matrix.on("exit", resolve));
    if (code !== 0) throw new Error(`test/kernels/matrix.sh failed (exit ${code}); its output is above`);
  }
  results = readResults(resultsDir);
}, 3_600_000);

// Objects every kernel from 5.10 must load and run with every bpftool from Debian 11's.
const EVERYWHERE = ["xdp_firewall", "xdp_maglev", "xdp_dispatcher", "tc_mirror", "empty_xdp", "empty_tc"];

describe("kernel matrix", () => {
  it("ran every Debian kernel with the machine's and every release's bpftool", () => {
    expect(results.map((r) => r.suite)).toEqual(Object.keys(SUITES));
    for (const r of results) expect(r.results.map((t) => t.bpftool).sort(), r.kernel).toEqual(["bookworm", "bullseye", "machine", "trixie"]);
  });

  it("loads, and runs one packet through, the XDP objects and the mirror on every kernel with every bpftool", () => {
    const failures: string[] = [];
    for (const r of results) {
      for (const tool of r.results) {
        const why = loadVerdict(tool, EVERYWHERE);
        if (why) failures.push(`${r.kernel} / bpftool ${tool.bpftool} ${tool.version}: ${why}`);
      }
    }
    expect(failures).toEqual([]);
  });

  it("loads every object with the machine's bpftool and each release's own on Debian 12 and 13's kernels", () => {
    const failures: string[] = [];
    for (const r of results.filter((x) => x.suite !== "bullseye")) {
      for (const tool of r.results.filter((t) => t.bpftool === "machine" || t.bpftool === r.suite)) {
        const why = loadVerdict(tool, tool.loads.map((l) => l.object));
        if (why) failures.push(`${r.kernel} / bpftool ${tool.bpftool}: ${why}`);
      }
    }
    expect(failures).toEqual([]);
  });

  it("never half-works: wherever a resource's preflight passes (own or machine bpftool), its programs load and run", () => {
    const failures: string[] = [];
    for (const r of results) {
      for (const tool of r.results.filter((t) => t.bpftool === "machine" || t.bpftool === r.suite)) {
        for (const req of REQUIREMENTS) {
          if (preflightVerdict(tool, req)) continue;
          const why = loadVerdict(tool, req.objects);
          if (why) failures.push(`${req.column} on ${r.kernel} / bpftool ${tool.bpftool}: preflight passes but ${why}`);
        }
      }
    }
    expect(failures).toEqual([]);
  });

  // shapes.sh: a firewall attached (generic XDP) and a mirror filter on a veth, one
  // deny entry written and the dispatcher's chain slot 0 set, through `bpftool batch`.
  it("every bpftool prints the JSON the provider parses: net show, prog show, map dump, batch lookups", () => {
    for (const r of results) {
      const shapes = (r as SuiteResult & { shapes?: Record<string, Record<string, string>> }).shapes ?? {};
      expect(Object.keys(shapes).sort(), r.kernel).toEqual(["bookworm", "bullseye", "machine", "trixie"]);
      for (const [tool, out] of Object.entries(shapes)) {
        const where = `${r.kernel} / bpftool ${tool}`;
        expect(out["batch-update"], where).toMatch(/processed 2 commands/);
        const prog = JSON.parse(out.prog!) as { id: number; name: string; tag: string };
        expect(prog.name, where).toBe("xdp_firewall");
        expect(prog.tag, where).toMatch(/^[0-9a-f]{16}$/);
        // xdpAttachment (xdpAttach.ts) and xdpHook.ts's hook_id read [0].xdp[0].{mode,id}.
        const net = JSON.parse(out.net!) as { xdp?: { mode: string; id: number }[]; tc?: { kind: string; id: number }[] }[];
        expect(net[0]?.xdp?.[0], where).toMatchObject({ mode: "generic", id: prog.id });
        expect(out.net, where).toMatch(/"xdp":\[\{[^\]]*"id":\d+/);
        expect(net[0]?.tc?.[0]?.kind, where).toBe("clsact/ingress");
        expect(parseMapDump(out["dump-hash"]!).map((e) => [[...e.key], e.values.map((v) => [...v])]), where).toEqual([[[10, 0, 0, 1], [[1]]]]);
        const stats = parseMapDump(out["dump-percpu"]!);
        expect(stats[0]?.values.length, where).toBe(2); // one per CPU: -smp 2
        const chain = JSON.parse(out["dump-progarray"]!) as { formatted?: { key: number; value: number } }[];
        expect(chain[0]?.formatted, where).toEqual({ key: 0, value: prog.id });
        const lookups = JSON.parse(out["batch-lookup"]!) as { output: { value?: string[]; values?: unknown[] } | null }[];
        expect(lookups.map((l) => (l.output?.values ? "percpu" : l.output?.value ? "value" : "none")), where).toEqual(["percpu", "value"]);
      }
    }
  });

  it("README's supported-kernels table is this run's", () => {
    const readme = readFileSync(join(root, "README.md"), "utf8");
    expect(readmeSection(readme), "regenerate it: npx tsx test/kernels/table.ts --write").toBe(renderSection(results));
  });
});
