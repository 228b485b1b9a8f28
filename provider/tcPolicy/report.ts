/**
 * What `read` reports, from the maps as dumped: counters, packets per rule, and
 * the rules as loaded. A rule whose trie bits or deny bit no longer say what its
 * descriptor says (a hand edit, a half-applied batch) is reported under a marked
 * key, and trie bits that belong to no rule under a key of their own, so that
 * the next preview shows them as drift and the next update rewrites them.
 */
import type { MapEntry } from "../remote/mapOperations";
import { sumCounters } from "../counters";
import { decodeL4Key, MAPS, STAT, sumU64, TRIE_MAPS } from "./codec";
import { policyFromHost, trieContents, type ObservedPolicy, type RawEntry } from "./plan";
import { DIRECTIONS, ruleText, type Action, type Direction, type PolicyRule, type TcPolicyCounters, type TcPolicyInputs } from "./schema";

export const ALTERED = "(altered on the host)";

const u32At = (key: Uint8Array) => new DataView(key.buffer, key.byteOffset, key.byteLength).getUint32(0, true);

/** Single-valued entries (arrays and tries are not per-CPU) as observePolicy takes them. */
export function rawEntries(entries: readonly MapEntry[] | undefined): RawEntry[] {
  return (entries ?? []).map((e) => ({ key: e.key, value: e.values[0] ?? new Uint8Array() }));
}

export function countersOf(stats: readonly MapEntry[] | undefined): TcPolicyCounters {
  const byIndex = new Map((stats ?? []).map((e) => [u32At(e.key), sumCounters(e.values)]));
  const at = (index: number) => byIndex.get(index) ?? { packets: 0, bytes: 0 };
  return {
    ingressAllowedPackets: at(STAT.ingressAllowed).packets,
    ingressAllowedBytes: at(STAT.ingressAllowed).bytes,
    ingressDeniedPackets: at(STAT.ingressDenied).packets,
    ingressDeniedBytes: at(STAT.ingressDenied).bytes,
    egressAllowedPackets: at(STAT.egressAllowed).packets,
    egressAllowedBytes: at(STAT.egressAllowed).bytes,
    egressDeniedPackets: at(STAT.egressDenied).packets,
    egressDeniedBytes: at(STAT.egressDenied).bytes,
    flowsCreated: at(STAT.flowsCreated).packets,
    flowsExpired: at(STAT.flowsExpired).packets,
    flowsReset: at(STAT.flowsReset).packets,
  };
}

/** Packets decided by each rule, by direction and canonical text. */
export function ruleHitsOf(hits: readonly MapEntry[] | undefined, rules: ReadonlyMap<number, PolicyRule>): Record<Direction, Record<string, number>> {
  const byIndex = new Map((hits ?? []).map((e) => [u32At(e.key), sumU64(e.values)]));
  const out: Record<Direction, Record<string, number>> = { ingress: {}, egress: {} };
  for (const [index, rule] of [...rules].sort(([a], [b]) => a - b)) out[rule.direction][ruleText(rule)] = byIndex.get(index) ?? 0;
  return out;
}

/**
 * Rule indexes whose trie bits or deny bit differ from what the loaded
 * descriptors say, split into rules that have a descriptor and stray bits.
 */
export function driftedIndexes(observed: ObservedPolicy): { altered: Set<number>; stray: Map<number, Direction> } {
  const expected = trieContents([...observed.rules].map(([index, rule]) => ({ index, rule })));
  const differing = new Set<number>();
  const strayDirection = new Map<number, Direction>();
  for (const map of TRIE_MAPS) {
    const have = observed.tries.get(map) ?? new Map();
    const want = expected.get(map)!;
    for (const key of new Set([...have.keys(), ...want.keys()])) {
      const a: ReadonlySet<number> = have.get(key)?.rules ?? new Set();
      const b: ReadonlySet<number> = want.get(key)?.rules ?? new Set();
      for (const r of a) {
        if (b.has(r)) continue;
        differing.add(r);
        // A stray bit in a tcpol_l4 entry says which hook it acts on.
        if (map === MAPS.l4 && !strayDirection.has(r)) strayDirection.set(r, decodeL4Key(have.get(key)!.key).direction);
      }
      for (const r of b) if (!a.has(r)) differing.add(r);
    }
  }
  for (const [index, rule] of observed.rules) if (observed.config.denyRules.has(index) !== (rule.action === "deny")) differing.add(index);
  const altered = new Set<number>();
  const stray = new Map<number, Direction>();
  for (const index of differing) {
    if (observed.rules.has(index)) altered.add(index);
    else stray.set(index, strayDirection.get(index) ?? "ingress");
  }
  return { altered, stray };
}

/** The policy part of the inputs as the host has it, drift marked (see the top of this file). */
export function policyAsLoaded(observed: ObservedPolicy): Pick<TcPolicyInputs, "ingress" | "egress" | "stateful" | "timeouts"> {
  const policy = policyFromHost(observed);
  const { altered, stray } = driftedIndexes(observed);
  if (altered.size === 0 && stray.size === 0) return policy;
  const rules: Record<Direction, Record<string, Action>> = { ingress: {}, egress: {} };
  for (const [index, rule] of [...observed.rules].sort(([a], [b]) => a - b)) {
    rules[rule.direction][altered.has(index) ? `${ruleText(rule)} ${ALTERED}` : ruleText(rule)] = rule.action;
  }
  for (const [index, direction] of stray) {
    rules[direction][`rule #${index} (in the tries only, no descriptor)`] = observed.config.denyRules.has(index) ? "deny" : "allow";
  }
  const [ingress, egress] = DIRECTIONS.map((d) => ({ ...policy[d], rules: rules[d] }));
  return { ...policy, ingress: ingress!, egress: egress! };
}
