/**
 * A TcPolicy hook bound to a TcRuleSet (issue 10): the policy's inputs and state carry
 * the set's name, digest and count, not its rules. The rules themselves come from the
 * versions this deployment's rule sets registered by digest (sharedContent.ts) or,
 * when the set is not part of the deployment (`up --target`), from the host's own
 * maps when they hold that very version. The host records the rules it applied
 * (appliedSets.ts, one `<direction> <rule>` a line, ruleId's form), which `refresh`
 * judges drift against.
 */
import { boundRefAsRead } from "../boundList";
import { registeredContent } from "../sharedContent";
import type { SharedListRef } from "../sharedList";
import { DIRECTIONS, type Action, type Direction, type DirectionPolicy, type TcPolicyInputs } from "./schema";

type Policy = Pick<TcPolicyInputs, "ingress" | "egress">;

/** A rule set's lines as a hook's rules (canonical text → action, the text's first word). */
export function ruleRecordOf(lines: readonly string[]): Record<string, Action> {
  return Object.fromEntries(lines.map((line) => [line, line.slice(0, line.indexOf(" ")) as Action]));
}

/** The hooks whose rules come from a rule set. */
export function boundDirections(policy: Policy): Direction[] {
  return DIRECTIONS.filter((d) => policy[d].ruleSet !== undefined);
}

/**
 * The inputs with each bound hook's rules filled in from `find` (the rule set's
 * canonical lines by digest), or undefined when some version is not found.
 */
export function withRuleSets<P extends Policy>(inputs: P, find: (direction: Direction, ref: SharedListRef) => readonly string[] | undefined = (_d, ref) => registeredContent(ref.digest)): P | undefined {
  const resolved = { ...inputs };
  for (const direction of boundDirections(inputs)) {
    const lines = find(direction, inputs[direction].ruleSet!);
    if (!lines) return undefined;
    resolved[direction] = { ...inputs[direction], rules: ruleRecordOf(lines) } as P[Direction];
  }
  return resolved;
}

/** What the host records as applied for the bound hooks: `<direction> <rule>` lines. */
export function appliedLines(resolved: Policy): string[] {
  return boundDirections(resolved).flatMap((d) => Object.keys(resolved[d].rules).map((text) => `${d} ${text}`));
}

/** One hook's lines of an applied copy, without the direction. */
export function appliedRulesOf(applied: readonly string[], direction: Direction): string[] {
  const prefix = `${direction} `;
  return applied.filter((line) => line.startsWith(prefix)).map((line) => line.slice(prefix.length));
}

/**
 * A bound hook as `refresh` reports it: no rules, the set's digest and count as the
 * host recorded them (the maps' own when it records nothing), and the difference
 * between the maps and that record (stray and missing rules, nothing else).
 */
export function boundAsRead(loaded: DirectionPolicy, ref: SharedListRef, recorded: readonly string[] | undefined): DirectionPolicy {
  const read = boundRefAsRead(ref, Object.keys(loaded.rules), recorded);
  return { default: loaded.default, rules: {}, ruleSet: read.ref, ...(read.drift ? { drift: read.drift } : {}) };
}
