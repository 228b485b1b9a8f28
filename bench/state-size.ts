/**
 * Bytes of Pulumi state per host and per deny entry: examples/quickstart with
 * 10,000 deny entries on a 1-host and a 10-host lab fleet, state exported by the
 * real CLI, next to the same stacks with 10 entries (the per-host baseline).
 *
 *   sudo npx vite-node bench/state-size.ts [--entries N] [--hosts 1,10]
 */
import { writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { PulumiProject } from "../test/e2e/pulumiProject";
import { createLab } from "../test/lab/lab";

const args = process.argv.slice(2);
const arg = (name: string, fallback: string) => (args.includes(`--${name}`) ? args[args.indexOf(`--${name}`) + 1]! : fallback);
const ENTRIES = Number(arg("entries", "10000"));
const HOSTS = arg("hosts", "1,10").split(",").map(Number);

function denyList(n: number): string[] {
  return Array.from({ length: n }, (_, i) => `100.${64 + ((i >> 16) & 63)}.${(i >> 8) & 255}.${i & 255}`);
}

async function stateBytes(project: PulumiProject, entries: number): Promise<number> {
  const file = join(project.dir, "deny.txt");
  writeFileSync(file, denyList(entries).join("\n"));
  await project.ok(["config", "set", "denyFile", file]);
  await project.ok(["up", "--yes", "--skip-preview"]);
  return Buffer.byteLength((await project.exportState()).replace(/\s+/g, ""));
}

async function main(): Promise<void> {
  console.log(`\nPulumi state size (pulumi stack export, whitespace removed), examples/quickstart`);
  console.log(["hosts", "state, 10 entries", `state, ${ENTRIES} entries`, "bytes/host", "bytes/entry/host"].map((h) => h.padStart(22)).join(""));
  for (const hosts of HOSTS) {
    const lab = await createLab(`bst${hosts}`, { hosts, clients: 1 });
    const project = await PulumiProject.create(`bench-state-${hosts}`, resolve(__dirname, "../examples/quickstart/index.ts"));
    try {
      await project.ok(["config", "set", "labFile", lab.jsonPath]);
      const small = await stateBytes(project, 10);
      const large = await stateBytes(project, ENTRIES);
      const perEntry = (large - small) / hosts / (ENTRIES - 10);
      console.log([hosts, small, large, Math.round(small / hosts), perEntry.toFixed(1)].map((c) => String(c).padStart(22)).join(""));
    } finally {
      await project.pulumi(["destroy", "--yes", "--skip-preview"]);
      project.remove();
      await lab.destroy();
    }
  }
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
