/**
 * What a DenyList of E entries costs the controller, with no host in the stack:
 * the engine, the program (SDK) and the dynamic provider, driven by the real
 * `pulumi` CLI (file backend). This is the part of a fleet's one-entry `up` that
 * does not grow with hosts (issue 10); bench/fleet-scale.ts measures the rest.
 *
 * Two packages side by side, in one run: "before", a git ref packed as a user
 * installs it (default 3409409, whose DenyList keeps its entries keyed by entry),
 * and "after", this checkout. Each gets its own stack holding one DenyList of E
 * entries; then, round by round and interleaved (before, after, after, before,
 * ...): `up` adding one entry, `up` taking it out, and a no-change `preview`.
 * Per step: wall time, CPU of the CLI's whole process tree (a cgroup: CLI,
 * language host, program, provider) and its peak resident memory; after the
 * rounds, the exported state's bytes. Medians over the rounds.
 *
 * With `--consumers N`, the program also declares N resources that take the list's
 * `ref` as an XdpFirewall does (a dynamic resource that touches nothing): each step of
 * theirs checkpoints the whole state, as each host's firewall does, so this measures
 * the part of a fleet's controller cost that grows with hosts × state size, without hosts.
 *
 *   sudo npx vite-node bench/deny-list-engine.ts [--entries 100000] [--rounds 3] [--before 3409409] [--consumers 0]
 *
 * Projects go under $BPFLEET_E2E_DIR (default /tmp/bpfleet-e2e), cgroups are
 * fb-dl-*; both are removed at the end.
 */
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { execa } from "execa";
import { PulumiProject, packBpfleet, packRelease } from "../test/e2e/pulumiProject";
import { CpuGroup, cpuTotal, inGroup, median, sampleMemory } from "./fleetScaleAccounting";

const args = process.argv.slice(2);
const arg = (name: string, fallback: string) => (args.includes(`--${name}`) ? args[args.indexOf(`--${name}`) + 1]! : fallback);
const ENTRIES = Number(arg("entries", "100000"));
const ROUNDS = Number(arg("rounds", "3"));
const BEFORE = arg("before", "3409409");
const CONSUMERS = Number(arg("consumers", "0"));
if (!Number.isInteger(CONSUMERS) || CONSUMERS < 0 || CONSUMERS > 1000) throw new Error(`--consumers must be a whole number 0-1000, got ${arg("consumers", "0")}`);
const TOGGLED = "192.0.2.9/32";

const PROGRAM = `
import * as fs from "node:fs";
import * as pulumi from "@pulumi/pulumi";
import * as bpfleet from "bpfleet";

const config = new pulumi.Config();
const entries = fs.readFileSync(config.require("denyFile"), "utf8").split("\\n").filter(Boolean);
const feed = new bpfleet.DenyList("feed", { entries });
export const digest = feed.digest;
export const count = feed.count;

// Stand-ins for a fleet's firewalls (--consumers): each carries the list's ref and a
// host's worth of other inputs, and updates when the ref changes.
const consumer: pulumi.dynamic.ResourceProvider = {
  async create(inputs: any) { return { id: inputs.host, outs: inputs }; },
  async diff(_id: string, olds: any, news: any) { return { changes: JSON.stringify(olds.ref) !== JSON.stringify(news.ref) }; },
  async update(_id: string, _olds: any, news: any) { return { outs: news }; },
};
class Consumer extends pulumi.dynamic.Resource {
  constructor(name: string, args: any) { super(consumer, name, args); }
}
for (let i = 0; i < CONSUMERS; i++) new Consumer(\`fw-\${i}\`, { ref: feed.ref, host: \`10.0.\${i >> 8}.\${i & 255}\`, interface: "eth0", pad: "x".repeat(1024) });
`;

interface Step {
  wallS: number;
  cpuS: number;
  peakMiB: number;
}

/** E distinct /32s and /24s, as a threat feed mixes them. */
function entries(n: number): string[] {
  return Array.from({ length: n }, (_, i) => (i % 10 === 9 ? `100.${64 + ((i >> 16) & 63)}.${(i >> 8) & 255}.0/24` : `10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}/32`));
}

class Stack {
  private readonly group: CpuGroup;
  readonly steps = new Map<string, Step[]>();

  private constructor(
    readonly label: string,
    readonly project: PulumiProject,
  ) {
    this.group = new CpuGroup(`fb-dl-${label}`);
  }

  static async create(label: string, tarball: string): Promise<Stack> {
    const project = await PulumiProject.create(`bench-deny-list-${label}`, writeProgram(label), "denylistbench", tarball);
    const stack = new Stack(label, project);
    stack.writeList(false);
    await project.ok(["config", "set", "denyFile", join(project.dir, "deny.txt")]);
    return stack;
  }

  writeList(withToggled: boolean): void {
    const list = entries(ENTRIES);
    if (withToggled) list.push(TOGGLED);
    writeFileSync(join(this.project.dir, "deny.txt"), `${list.join("\n")}\n`);
  }

  /** Runs one CLI command with its whole process tree charged to this stack's cgroup. */
  async run(step: string, cliArgs: string[]): Promise<Step> {
    const before = this.group.usage();
    const memory = sampleMemory(this.group);
    const started = performance.now();
    const [file, argv] = inGroup(this.group, "pulumi", [...cliArgs, "--non-interactive"]);
    const result = await execa(file, argv, { cwd: this.project.dir, env: this.project.env, reject: false });
    const wallS = (performance.now() - started) / 1000;
    const peak = memory.stop();
    if (result.exitCode !== 0) throw new Error(`${this.label}: pulumi ${cliArgs.join(" ")} failed:\n${result.stdout}\n${result.stderr}`);
    const measured = { wallS, cpuS: cpuTotal(this.group.usage()) - cpuTotal(before), peakMiB: peak.treeRss / 2 ** 20 };
    this.steps.set(step, [...(this.steps.get(step) ?? []), measured]);
    return measured;
  }

  async stateBytes(): Promise<number> {
    return Buffer.byteLength(await this.project.exportState());
  }

  remove(): void {
    this.group.killAll();
    this.group.remove();
  }
}

function writeProgram(label: string): string {
  const file = join(process.env.BPFLEET_E2E_DIR ?? "/tmp/bpfleet-e2e", `bench-deny-list-${label}.program.ts`);
  writeFileSync(file, PROGRAM.replace("CONSUMERS", String(CONSUMERS)));
  return file;
}

async function main(): Promise<void> {
  console.log(`DenyList of ${ENTRIES} entries, ${CONSUMERS} consumer resource(s), no host: before = ${BEFORE}, after = this checkout; ${ROUNDS} round(s), interleaved; medians`);
  const [beforeTar, afterTar] = [(await packRelease(BEFORE)).tarball, await packBpfleet()];
  const stacks: Stack[] = [];
  try {
    stacks.push(await Stack.create("before", beforeTar), await Stack.create("after", afterTar));
    for (const s of stacks) await s.run("first up", ["up", "--yes", "--skip-preview"]);
    for (let round = 0; round < ROUNDS; round++) {
      // Alternate who goes first, so neither always runs on a warmer (or busier) machine.
      const order = round % 2 === 0 ? stacks : [...stacks].reverse();
      for (const s of order) {
        s.writeList(true);
        await s.run("up, one entry added", ["up", "--yes", "--skip-preview"]);
        await s.run("preview, no change", ["preview"]);
        s.writeList(false);
        await s.run("up, one entry removed", ["up", "--yes", "--skip-preview"]);
      }
    }
    const bytes = await Promise.all(stacks.map((s) => s.stateBytes()));
    const steps = [...stacks[0]!.steps.keys()];
    const cell = (v: number, unit: string) => `${v.toFixed(unit === "MiB" ? 0 : 1)} ${unit}`.padStart(10);
    console.log(`\n${"step".padEnd(24)}${"before wall".padStart(12)}${"cpu".padStart(10)}${"peak".padStart(10)}${"after wall".padStart(12)}${"cpu".padStart(10)}${"peak".padStart(10)}${"cpu after/before".padStart(18)}`);
    for (const step of steps) {
      const [b, a] = stacks.map((s) => {
        const runs = s.steps.get(step)!;
        return { wallS: median(runs.map((r) => r.wallS)), cpuS: median(runs.map((r) => r.cpuS)), peakMiB: median(runs.map((r) => r.peakMiB)) };
      });
      console.log(
        `${step.padEnd(24)}${cell(b!.wallS, "s").padStart(12)}${cell(b!.cpuS, "s")}${cell(b!.peakMiB, "MiB")}${cell(a!.wallS, "s").padStart(12)}${cell(a!.cpuS, "s")}${cell(a!.peakMiB, "MiB")}${(a!.cpuS / b!.cpuS).toFixed(2).padStart(18)}`,
      );
    }
    console.log(`${"exported state".padEnd(24)}${`${bytes[0]} B`.padStart(32)}${`${bytes[1]} B`.padStart(32)}${(bytes[1]! / bytes[0]!).toFixed(2).padStart(18)}`);
    for (const s of stacks) await s.run("destroy", ["destroy", "--yes", "--skip-preview"]);
  } finally {
    for (const s of stacks) s.remove();
  }
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
