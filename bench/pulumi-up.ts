/**
 * Wall time of the real `pulumi` CLI running examples/quickstart on lab fleets of
 * 1, 10 and 30 hosts: the first `up`, an `up` that changes one deny entry, and a
 * `preview` with nothing to change. Same machine, same run, side by side.
 *
 *   sudo npx vite-node bench/pulumi-up.ts [--sizes 1,10,30]
 */
import { resolve } from "node:path";
import { createLab } from "../test/lab/lab";
import { PulumiProject } from "../test/e2e/pulumiProject";

const args = process.argv.slice(2);
const SIZES = (args[args.indexOf("--sizes") + 1] && args.includes("--sizes") ? args[args.indexOf("--sizes") + 1]! : "1,10,30").split(",").map(Number);

async function seconds(fn: () => Promise<unknown>): Promise<number> {
  const start = process.hrtime.bigint();
  await fn();
  return Number(process.hrtime.bigint() - start) / 1e9;
}

async function main(): Promise<void> {
  const rows: string[][] = [];
  for (const size of SIZES) {
    const lab = await createLab(`bup${size}`, { hosts: size, clients: 1 });
    const project = await PulumiProject.create(`bench-up-${size}`, resolve(__dirname, "../examples/quickstart/index.ts"));
    try {
      await project.ok(["config", "set", "labFile", lab.jsonPath]);
      await project.setList("deny", ["203.0.113.0/24", "2001:db8::/32"]);
      const first = await seconds(() => project.ok(["up", "--yes", "--skip-preview"]));
      await project.setList("deny", ["203.0.113.0/24", "2001:db8::/32", "198.51.100.7"]);
      const oneEntry = await seconds(() => project.ok(["up", "--yes", "--skip-preview"]));
      const noChange = await seconds(() => project.ok(["preview"]));
      const destroy = await seconds(() => project.ok(["destroy", "--yes", "--skip-preview"]));
      rows.push([String(size), first.toFixed(1), oneEntry.toFixed(1), noChange.toFixed(1), destroy.toFixed(1)]);
    } finally {
      await project.pulumi(["destroy", "--yes", "--skip-preview"]);
      await lab.destroy();
    }
  }
  console.log("\npulumi CLI wall time, seconds (examples/quickstart: one XdpFirewall per host)");
  console.log(["hosts", "first up", "up: 1 entry changed", "preview: no change", "destroy"].map((h) => h.padStart(20)).join(""));
  for (const row of rows) console.log(row.map((c) => c.padStart(20)).join(""));
  if (rows.length > 1) {
    const [a, b] = [rows[0]!, rows[rows.length - 1]!];
    console.log(`ratio ${b[0]} hosts / ${a[0]} host(s), one entry changed: ${(Number(b[2]) / Number(a[2])).toFixed(2)}x for ${Number(b[0]) / Number(a[0])}x the hosts`);
  }
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
