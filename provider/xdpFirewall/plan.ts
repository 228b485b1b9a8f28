/** Pure planning: the map writes that turn what a host has into what the program declares. */
import type { MapOperation } from "../remote/bpfHost";
import { DENY_VALUE, encodeDenyEntry } from "./codec";

export interface DenyPlan {
  add: string[];
  remove: string[];
}

export function planDeny(desired: Iterable<string>, observed: Iterable<string>): DenyPlan {
  const want = new Set(desired);
  const have = new Set(observed);
  return {
    add: [...want].filter((entry) => !have.has(entry)),
    remove: [...have].filter((entry) => !want.has(entry)),
  };
}

/**
 * Additions before removals: while the batch runs, the firewall denies at least
 * the intersection of old and new, never less.
 */
export function denyOperations(plan: DenyPlan, mapPin: (map: string) => string): MapOperation[] {
  return [
    ...plan.add.map((entry): MapOperation => {
      const { map, key } = encodeDenyEntry(entry);
      return { op: "update", map: mapPin(map), key, value: DENY_VALUE };
    }),
    ...plan.remove.map((entry): MapOperation => {
      const { map, key } = encodeDenyEntry(entry);
      return { op: "delete", map: mapPin(map), key };
    }),
  ];
}
