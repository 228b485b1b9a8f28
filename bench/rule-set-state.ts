/**
 * Bytes of Pulumi state for N hosts whose TcPolicy applies the same ~1,000 rules
 * (issue 10): each policy with its rules inline ("before": the rules, and a hit count
 * per rule, in every policy's state) against one TcRuleSet bound by every policy
 * ("after"), on the same lab in one run, the real CLI, `pulumi stack export` with
 * whitespace removed (as bench/state-size.ts counts).
 *
 *   sudo npx vite-node bench/rule-set-state.ts [--rules 1000] [--hosts 1,5]
 */
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { PulumiProject } from "../test/e2e/pulumiProject";
import { createLab } from "../test/lab/lab";
import { printTable } from "./support";

const args = process.argv.slice(2);
const arg = (name: string, fallback: string) => (args.includes(`--${name}`) ? args[args.indexOf(`--${name}`) + 1]! : fallback);
const RULES = Number(arg("rules", "1000"));
const HOSTS = arg("hosts", "1,5").split(",").map(Number);

const PROGRAM = `import * as fs from "node:fs";
import * as pulumi from "@pulumi/pulumi";
import * as bpfleet from "bpfleet";

const config = new pulumi.Config();
const lab = JSON.parse(fs.readFileSync(config.require("labFile"), "utf8")) as { privateKeyPath: string; hosts: { name: string; address: string; hostKey: string }[] };
const privateKey = pulumi.secret(fs.readFileSync(lab.privateKeyPath, "utf8"));
const rules = fs.readFileSync(config.require("rulesFile"), "utf8").split("\\n").filter(Boolean);
const shared = config.require("layout") === "shared" ? new bpfleet.TcRuleSet("rules", { rules }) : undefined;
for (const h of lab.hosts) {
  new bpfleet.TcPolicy(\`policy-\${h.name}\`, {
    host: { address: h.address, hostKey: h.hostKey, privateKey },
    interface: "eth0",
    stateful: true,
    ingress: shared ? { default: "deny", ruleSet: shared } : { default: "deny", rules },
  });
}
`;

/** "allow tcp 22" and RULES - 1 more single-port rules. */
function rules(n: number): string[] {
  return ["allow tcp 22", ...Array.from({ length: n - 1 }, (_, i) => `allow tcp ${10_000 + i}`)];
}

async function stateBytes(project: PulumiProject, layout: "inline" | "shared"): Promise<number> {
  await project.ok(["config", "set", "layout", layout]);
  await project.ok(["up", "--yes", "--skip-preview"]);
  const bytes = Buffer.byteLength((await project.exportState()).replace(/\s+/g, ""));
  await project.ok(["destroy", "--yes", "--skip-preview"]);
  return bytes;
}

async function main(): Promise<void> {
  const rows: string[][] = [];
  for (const hosts of HOSTS) {
    const lab = await createLab(`brs${hosts}`, { hosts, clients: 0 });
    const project = await PulumiProject.fromSource(`bench-rule-set-${hosts}`, PROGRAM);
    try {
      const file = join(project.dir, "rules.txt");
      writeFileSync(file, rules(RULES).join("\n"));
      await project.ok(["config", "set", "labFile", lab.jsonPath]);
      await project.ok(["config", "set", "rulesFile", file]);
      const before = await stateBytes(project, "inline");
      const after = await stateBytes(project, "shared");
      rows.push([String(hosts), String(before), String(after), String(Math.round(before / hosts)), (after / before).toFixed(3)]);
    } finally {
      await project.pulumi(["destroy", "--yes", "--skip-preview"]);
      project.remove();
      await lab.destroy();
    }
  }
  console.log(`\nPulumi state bytes (stack export, whitespace removed), TcPolicy on every host, ${RULES} rules:`);
  printTable(["hosts", "before: rules inline", "after: one TcRuleSet", "before per host", "after/before"], rows);
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
