/**
 * Wall time of the real `pulumi` CLI rolling examples/fleet (an XdpFirewall per
 * host, a canary wave then waves of `waveSize`, a HealthGate after each wave) out
 * over lab fleets of 1, 10 and 30 hosts. Per fleet size, in the same run, side by
 * side:
 *   - the first `up` (reported on its own: it loads and attaches every program);
 *   (a) an `up` adding one deny entry on every host, through every wave and gate,
 *       with the example's gate checks (ping probe, pass counter over 1 s);
 *   (b) the same change with those checks turned off in stack config
 *       (`counterWindowSeconds: 0`; the example has no setting that removes the
 *       probe, so it becomes `/bin/true`). The gates still run, one after each
 *       wave, checking pins and attachment: (a) - (b) is what the checks cost;
 *   (c) a `preview` with nothing to change.
 * Results are also written to .bench/fleet-rollout.json.
 *
 *   sudo npx vite-node bench/fleet-rollout.ts [--hosts 1,10,30] [--canary 1] [--wave-size 5]
 */
import { resolve } from "node:path";
import { PulumiProject } from "../test/e2e/pulumiProject";
import { createLab } from "../test/lab/lab";
import { loadAverage, numberList, option, printTable, seconds, writeBenchRecord } from "./support";

const HOSTS = numberList("hosts", "1,10,30");
const CANARY = Number(option("canary", "1"));
const WAVE_SIZE = Number(option("wave-size", "5"));

const BASE_DENY = ["203.0.113.0/24"];
const GATED_ENTRY = "198.51.100.7";
const UNGATED_ENTRY = "198.51.100.8";

interface Row {
  hosts: number;
  waves: number;
  firstUp: number;
  /** (a) */
  upGated: number;
  /** (b) */
  upChecksOff: number;
  /** (c) */
  previewNoChange: number;
  /** Resources `pulumi up` reported updated in (a) and (b): every firewall and every gate. */
  updatedGated: number | undefined;
  updatedChecksOff: number | undefined;
  /** The unmeasured `up` in between that turns the checks off (every gate's inputs change). */
  checksOffReconfigure: number;
  destroy: number;
}

/** The "~ N updated" count of a `pulumi up` summary. */
function updatedCount(output: string): number | undefined {
  const match = output.match(/~\s+(\d+)\s+updated/);
  return match ? Number(match[1]) : undefined;
}

async function measure(hosts: number): Promise<Row> {
  const lab = await createLab(`bfr${hosts}`, { hosts, clients: 1 });
  let project: PulumiProject | undefined;
  try {
    project = await PulumiProject.create(`bench-fleet-${hosts}`, resolve(__dirname, "../examples/fleet/index.ts"), "bpfleet-fleet");
    const p = project;
    await p.ok(["config", "set", "labFile", lab.jsonPath]);
    // The fleet refuses a canary or wave larger than itself.
    await p.ok(["config", "set", "--type", "int", "canary", String(Math.min(CANARY, hosts))]);
    await p.ok(["config", "set", "--type", "int", "waveSize", String(Math.min(WAVE_SIZE, hosts))]);
    await p.setList("deny", BASE_DENY);
    const firstUp = await seconds(() => p.ok(["up", "--yes", "--skip-preview"]));
    const waves = (JSON.parse((await p.ok(["stack", "output", "waves", "--json"])).stdout) as string[][]).length;

    await p.setList("deny", [...BASE_DENY, GATED_ENTRY]);
    let gated = "";
    const upGated = await seconds(async () => (gated = (await p.ok(["up", "--yes", "--skip-preview"])).stdout));

    await p.ok(["config", "set", "--type", "int", "counterWindowSeconds", "0"]);
    await p.setList("probe", ["/bin/true"]);
    const checksOffReconfigure = await seconds(() => p.ok(["up", "--yes", "--skip-preview"]));

    await p.setList("deny", [...BASE_DENY, GATED_ENTRY, UNGATED_ENTRY]);
    let checksOff = "";
    const upChecksOff = await seconds(async () => (checksOff = (await p.ok(["up", "--yes", "--skip-preview"])).stdout));

    const previewNoChange = await seconds(() => p.ok(["preview"]));
    const destroy = await seconds(() => p.ok(["destroy", "--yes", "--skip-preview"]));
    return {
      hosts,
      waves,
      firstUp,
      upGated,
      upChecksOff,
      previewNoChange,
      updatedGated: updatedCount(gated),
      updatedChecksOff: updatedCount(checksOff),
      checksOffReconfigure,
      destroy,
    };
  } finally {
    if (project) {
      const destroyed = await project.pulumi(["destroy", "--yes", "--skip-preview"]);
      if (destroyed.exitCode !== 0) console.error(`pulumi destroy of ${project.dir} failed (exit ${destroyed.exitCode}); the lab goes anyway:\n${destroyed.all}`);
      project.remove();
    }
    await lab.destroy();
  }
}

function report(rows: Row[]): void {
  const s = (n: number) => n.toFixed(1);
  const perHost = (n: number, hosts: number) => (n / hosts).toFixed(2);
  const header = ["hosts", "waves", "first up", "(a) up, gated", "(b) up, checks off", "(a)-(b)", "(c) preview", "(a)/host", "(b)/host", "(c)/host", "updated (a)/(b)"];
  const table = rows.map((r) => [
    String(r.hosts),
    String(r.waves),
    s(r.firstUp),
    s(r.upGated),
    s(r.upChecksOff),
    s(r.upGated - r.upChecksOff),
    s(r.previewNoChange),
    perHost(r.upGated, r.hosts),
    perHost(r.upChecksOff, r.hosts),
    perHost(r.previewNoChange, r.hosts),
    `${r.updatedGated ?? "?"}/${r.updatedChecksOff ?? "?"}`,
  ]);
  console.log(`\npulumi CLI wall time, seconds (examples/fleet: XdpFirewall per host, canary ${CANARY}, waves of ${WAVE_SIZE}, a HealthGate after each wave)`);
  console.log("(a) one deny entry added on every host, gate checks on (ping probe, pass counter over 1 s); (b) the same with counterWindowSeconds 0 and probe /bin/true; (c) nothing to change");
  printTable(header, table, []);
  if (rows.length > 1) {
    const base = rows[0]!;
    for (const r of rows.slice(1)) {
      const x = (n: number, d: number) => `${(n / d).toFixed(2)}x`;
      console.log(
        `${r.hosts} hosts / ${base.hosts} (${x(r.hosts, base.hosts)} the hosts, ${x(r.waves, base.waves)} the waves): ` +
          `(a) ${x(r.upGated, base.upGated)}, (b) ${x(r.upChecksOff, base.upChecksOff)}, (c) ${x(r.previewNoChange, base.previewNoChange)}, first up ${x(r.firstUp, base.firstUp)}`,
      );
    }
  }
}

async function main(): Promise<void> {
  const loadBefore = loadAverage();
  console.log(`load average before: ${loadBefore}`);
  const rows: Row[] = [];
  for (const hosts of HOSTS) {
    rows.push(await measure(hosts));
    console.log(`${hosts} host(s) done, load average ${loadAverage()}`);
  }
  const loadAfter = loadAverage();
  report(rows);
  console.log(`load average before: ${loadBefore}; after: ${loadAfter}`);
  writeBenchRecord("fleet-rollout", { canary: CANARY, waveSize: WAVE_SIZE, loadBefore, loadAfter, rows });
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
