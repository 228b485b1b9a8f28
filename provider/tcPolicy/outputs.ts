/**
 * A TcPolicy's outputs: what its maps and hooks hold, read from a host survey.
 */
import { findFilter } from "../remote/tc";
import { slotOf, tcHandle } from "../remote/tcHook";
import { MAPS, TRIE_MAPS } from "./codec";
import type { PolicyHostState } from "./hostState";
import { observePolicy, type ObservedPolicy } from "./plan";
import { countersOf, rawEntries, ruleHitsOf } from "./report";
import { DEFAULT_PRIORITY, DIRECTIONS, type Direction, type PolicyRule, type TcPolicyInputs, type TcPolicyOutputs } from "./schema";

export const KIND = "tc-policy";

/** The state of a TcPolicy: its outputs and where its filters sit. */
export interface TcPolicyState extends TcPolicyOutputs {
  /** Priority and handle of the policy's TC filters on both hooks (what `tc filter show` lists). */
  tcPriority: number;
  tcHandle: number;
  /** Whether the policy added the interface's clsact qdisc (removed on delete when no filter is left). */
  qdiscCreated: boolean;
}

type Placement = Pick<TcPolicyInputs, "interface" | "name" | "priority">;

/** Where the policy's filters go; state written before `priority` existed has none: its filters are at the default. */
export function placementOf(inputs: Placement): { interface: string; name: string; priority: number } {
  return { interface: inputs.interface, name: inputs.name, priority: inputs.priority ?? DEFAULT_PRIORITY };
}

export function observedFrom(host: PolicyHostState): ObservedPolicy {
  return observePolicy({
    rules: rawEntries(host.maps.get(MAPS.rules)),
    tries: Object.fromEntries(TRIE_MAPS.map((m) => [m, rawEntries(host.maps.get(m))])),
    config: host.maps.get(MAPS.config)?.[0]?.values[0],
  });
}

/** Both hooks run this policy's programs. */
export function attachedOn(host: PolicyHostState, inputs: Placement): boolean {
  return DIRECTIONS.every((d) => {
    const filter = findFilter(host.filters, slotOf(KIND, placementOf(inputs), d));
    return filter !== undefined && filter.programId !== undefined && filter.programId === host.programs[d]?.id;
  });
}

/**
 * A hook bound to a TcRuleSet reports only the rules that decided a packet: the set is
 * held once per fleet, and a count for each of its up to 1,024 rules in every host's
 * state would hold it once per host again.
 */
function hitsOfBound(policy: Pick<TcPolicyInputs, "ingress" | "egress">, hits: Record<Direction, Record<string, number>>): Record<Direction, Record<string, number>> {
  for (const d of DIRECTIONS) {
    if (policy[d].ruleSet) hits[d] = Object.fromEntries(Object.entries(hits[d]).filter(([, packets]) => packets > 0));
  }
  return hits;
}

export function outputsOf(
  inputs: TcPolicyInputs,
  policy: Pick<TcPolicyInputs, "ingress" | "egress" | "stateful" | "timeouts">,
  attached: boolean,
  host: PolicyHostState,
  rules: ReadonlyMap<number, PolicyRule>,
  objectSha256: string,
  qdiscCreated: boolean,
): TcPolicyState {
  const program = (d: Direction) => ({ id: host.programs[d]?.id ?? 0, tag: host.programs[d]?.tag ?? "" });
  return {
    ...inputs,
    ...policy,
    attached,
    objectSha256,
    programs: { ingress: program("ingress"), egress: program("egress") },
    counters: countersOf(host.maps.get(MAPS.stats)),
    ruleHits: hitsOfBound(policy, ruleHitsOf(host.maps.get(MAPS.hits), rules)),
    liveFlows: host.liveFlows ?? 0,
    tcPriority: inputs.priority ?? DEFAULT_PRIORITY,
    tcHandle: tcHandle(KIND, inputs.name),
    qdiscCreated,
    // Kept from the state until a create/update runs them again.
    expectResults: (inputs as Partial<TcPolicyOutputs>).expectResults ?? {},
  };
}
