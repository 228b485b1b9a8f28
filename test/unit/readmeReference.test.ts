// README.md's input tables are generated from the schemas' doc comments
// (scripts/readme-reference.ts), and its from-zero program and resource
// snippets compile against the SDK as they stand (test/e2e/readme.test.ts runs them).
import { execFileSync } from "node:child_process";
import { mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { describe, expect, it } from "vitest";
import { referenceTables, withReference } from "../../scripts/readme-reference";
import { README, readmeProgram, readmeSnippets } from "../support/readmeSnippets";

const ROOT = resolve(__dirname, "../..");

describe("README.md", () => {
  it("has the input tables the schemas' doc comments generate (else: npx tsx scripts/readme-reference.ts --write)", { timeout: 60_000 }, () => {
    const readme = readFileSync(README, "utf8");
    const tables = referenceTables();
    expect(tables.size).toBeGreaterThanOrEqual(14);
    expect(readme).toBe(withReference(readme, tables));
  });

  it("states each firewall map's real capacity", async () => {
    const { MAP_CAPACITY } = await import("../../provider/xdpFirewall/schema");
    const readme = readFileSync(README, "utf8");
    const figure = (n: number) => n.toLocaleString("en-US");
    expect(readme).toContain(`${figure(MAP_CAPACITY.deny_v4_exact)} IPv4 addresses (\`/32\`)`);
    expect(readme).toContain(`${figure(MAP_CAPACITY.deny_v6_exact)} IPv6 addresses (\`/128\`)`);
    expect(readme).toContain(`${figure(MAP_CAPACITY.deny_v4_prefix)} IPv4 prefixes and ${figure(MAP_CAPACITY.deny_v6_prefix)} IPv6 prefixes`);
  });

  it("shows a package.json with the @pulumi/pulumi bpfleet is built against", () => {
    const rootPackage = JSON.parse(readFileSync(join(ROOT, "package.json"), "utf8"));
    const snippet = JSON.parse(readmeSnippets().get("package.json")!);
    expect(snippet.dependencies["@pulumi/pulumi"]).toBe(rootPackage.dependencies["@pulumi/pulumi"]);
    expect(snippet.dependencies.bpfleet).toBe(`file:../bpfleet/bpfleet-${rootPackage.version}.tgz`);
  });

  it("has a from-zero program and resource snippets that type-check against the SDK", { timeout: 120_000 }, () => {
    typeChecks(readmeProgram(), "program");
  });

  // Not part of the program test/e2e/readme.test.ts runs (a second policy on the same
  // interface and priority would be refused): test/e2e/tcRuleSet.test.ts runs it.
  it("has a TcRuleSet snippet that type-checks with the from-zero project's index.ts", { timeout: 120_000 }, () => {
    const snippets = readmeSnippets();
    typeChecks(`${snippets.get("index.ts")!}\n${snippets.get("TcRuleSet")!}`, "ruleset");
  });

  // Likewise (a second balancer on the same interface and VIPs would be refused):
  // test/e2e/maglevBackendSet.test.ts runs it.
  it("has a MaglevBackendSet snippet that type-checks with the from-zero project's index.ts", { timeout: 120_000 }, () => {
    const snippets = readmeSnippets();
    typeChecks(`${snippets.get("index.ts")!}\n${snippets.get("MaglevBackendSet")!}`, "backendset");
  });

  // Likewise (a second mirror at the same priority on the same interface would be
  // refused): test/e2e/mirrorFilterSet.test.ts runs it.
  it("has a MirrorFilterSet snippet that type-checks with the from-zero project's index.ts", { timeout: 120_000 }, () => {
    const snippets = readmeSnippets();
    typeChecks(`${snippets.get("index.ts")!}\n${snippets.get("MirrorFilterSet")!}`, "filterset");
  });

  function typeChecks(program: string, label: string): void {
    const dir = join(tmpdir(), `bpfleet-readme-${label}-${process.pid}`);
    mkdirSync(dir, { recursive: true });
    try {
      writeFileSync(join(dir, "index.ts"), program);
      // Strict, so the snippets also compile in a project whose tsconfig.json asks for it
      // (the README's project has none; test/e2e/readme.test.ts runs it so).
      const options = { compilerOptions: { noEmit: true, strict: true, skipLibCheck: true, module: "commonjs", moduleResolution: "node", target: "ES2022", types: ["node"], typeRoots: [join(ROOT, "node_modules/@types")], baseUrl: ROOT, paths: { bpfleet: ["./sdk/index.ts"], "*": ["./node_modules/*"] } }, files: [join(dir, "index.ts")] };
      writeFileSync(join(dir, "tsconfig.json"), JSON.stringify(options));
      try {
        execFileSync(join(ROOT, "node_modules/.bin/tsc"), ["-p", join(dir, "tsconfig.json")], { cwd: ROOT, encoding: "utf8" });
      } catch (err) {
        throw new Error(`README snippets do not type-check:\n${(err as { stdout?: string }).stdout ?? err}`);
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }
});
