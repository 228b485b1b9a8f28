// The SDK's Args types are derived from the provider's zod schemas (sdk/inputs.ts).
// They must accept exactly what the hand-written interfaces they replaced did
// (test/unit/sdkArgsBefore.ts), so no user program changes: each pair below is
// checked both ways by `npx tsc -p tsconfig.test.json`, keys included, and the
// doc comments users see on hover are read back through the compiler.
import { execFileSync } from "node:child_process";
import { resolve } from "node:path";
import ts from "typescript";
import { describe, expect, it } from "vitest";
import type * as sdk from "../../sdk";
import type * as before from "./sdkArgsBefore";

/** true when A and B accept the same values and name the same properties; a type error otherwise. */
type Same<A, B> = [A] extends [B] ? ([B] extends [A] ? ([keyof A] extends [keyof B] ? ([keyof B] extends [keyof A] ? true : false) : false) : false) : false;
function same<A, B>(verdict: Same<A, B>): Same<A, B> {
  return verdict;
}

export const proofs = [
  same<sdk.SshEndpointArgs, before.SshEndpointArgs>(true),
  same<sdk.HostArgs, before.HostArgs>(true),
  // denyList (issue 10) is the one input added since: every earlier program still type-checks.
  same<Omit<sdk.XdpFirewallArgs, "denyList">, before.XdpFirewallArgs>(true),
  same<sdk.TcPolicyRuleArgs, before.TcPolicyRuleArgs>(true),
  // ruleSet (a TcRuleSet, issue 10) is added since, in the same way.
  same<Omit<sdk.TcPolicyDirectionArgs, "ruleSet">, before.TcPolicyDirectionArgs>(true),
  same<sdk.TcPolicyTimeoutsArgs, before.TcPolicyTimeoutsArgs>(true),
  same<sdk.TcPolicyArgs, before.TcPolicyArgs>(true),
  same<sdk.TrafficMirrorFilterArgs, before.TrafficMirrorFilterArgs>(true),
  same<sdk.TrafficMirrorFilter, before.TrafficMirrorFilter>(true),
  same<sdk.VxlanTunnelArgs, before.VxlanTunnelArgs>(true),
  same<sdk.GretapTunnelArgs, before.GretapTunnelArgs>(true),
  same<sdk.TrafficMirrorTargetArgs, before.TrafficMirrorTargetArgs>(true),
  // filterSet (a MirrorFilterSet, issue 10) is added since, in the same way.
  same<Omit<sdk.TrafficMirrorArgs, "filterSet">, before.TrafficMirrorArgs>(true),
  same<sdk.MaglevVipArgs, before.MaglevVipArgs>(true),
  same<sdk.MaglevBackendArgs, before.MaglevBackendArgs>(true),
  // backendSet (a MaglevBackendSet, issue 10) is added since, and `backends` became optional
  // (a set may take its place; check refuses neither and both): every earlier program still type-checks.
  same<Omit<sdk.MaglevServiceArgs, "backendSet" | "backends">, Omit<before.MaglevServiceArgs, "backends">>(true),
  same<NonNullable<sdk.MaglevServiceArgs["backends"]>, before.MaglevServiceArgs["backends"]>(true),
  same<sdk.HealthGateTargetArgs, before.HealthGateTargetArgs>(true),
  same<sdk.CounterCheckArgs, before.CounterCheckArgs>(true),
  same<sdk.HealthGateArgs, before.HealthGateArgs>(true),
  same<sdk.ExpectationArgs, before.ExpectationArgs>(true),
];

const ROOT = resolve(__dirname, "../..");

/** Each property of an exported SDK type with the doc comment an editor shows on hover. */
function hoverDocs(typeNames: readonly string[]): Map<string, Map<string, string>> {
  const entry = resolve(ROOT, "sdk/index.ts");
  const program = ts.createProgram([entry], { strict: true, skipLibCheck: true, module: ts.ModuleKind.CommonJS, target: ts.ScriptTarget.ES2022, types: ["node"] });
  const checker = program.getTypeChecker();
  const exports = checker.getExportsOfModule(checker.getSymbolAtLocation(program.getSourceFile(entry)!)!);
  const docs = new Map<string, Map<string, string>>();
  for (const name of typeNames) {
    const symbol = exports.find((e) => e.name === name)!;
    const type = checker.getDeclaredTypeOfSymbol(symbol.flags & ts.SymbolFlags.Alias ? checker.getAliasedSymbol(symbol) : symbol);
    docs.set(name, new Map(type.getProperties().map((p) => [p.name, ts.displayPartsToString(p.getDocumentationComment(checker))])));
  }
  return docs;
}

describe("the SDK's derived Args types", () => {
  it("are the hand-written ones they replaced (the proofs above type-check)", () => {
    expect(proofs.every((p) => p === true)).toBe(true);
  });

  it("type-check the programs in examples/ (tsconfig.examples.json)", { timeout: 120_000 }, () => {
    // Throws with tsc's diagnostics when an example no longer compiles.
    execFileSync("npx", ["tsc", "-p", "tsconfig.examples.json"], { cwd: ROOT, encoding: "utf8" });
  });

  it("show every input's doc comment on hover, written once in the schema", { timeout: 60_000 }, () => {
    const names = ["XdpFirewallArgs", "TcPolicyArgs", "TrafficMirrorArgs", "MaglevServiceArgs", "HostArgs", "TcPolicyDirectionArgs", "TcPolicyRuleArgs", "TrafficMirrorFilterArgs", "VxlanTunnelArgs", "GretapTunnelArgs", "MaglevVipArgs", "MaglevBackendArgs", "HealthGateArgs", "HealthGateTargetArgs", "CounterCheckArgs"] as const;
    const docs = hoverDocs(names);
    const undocumented = [...docs].flatMap(([type, props]) => [...props].filter(([, doc]) => doc.trim() === "").map(([prop]) => `${type}.${prop}`));
    expect(undocumented).toEqual([]);
    expect(docs.get("XdpFirewallArgs")!.get("deny")).toContain("262,144 IPv4 prefixes");
    expect(docs.get("HostArgs")!.get("privateKey")).toContain('config.requireSecret("sshKey")');
  });
});
