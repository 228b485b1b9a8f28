/** Pure planning: the map writes that turn what a host has into what the program declares. */
import type { MapOperation } from "../remote/mapOperations";
import { DENY_VALUE, encodeDenyEntry } from "./codec";
import { buildIndex, indexOperations } from "./index";
import { sortedRecord } from "../validation";
import { contentDigest } from "../sharedContent";

export interface DenyPlan {
  readonly add: readonly string[];
  readonly remove: readonly string[];
  /** The whole sets: the index is written from them, not from the difference. */
  readonly desired: readonly string[];
  readonly observed: readonly string[];
}

/** A plan's lists are frozen: plans are shared between hosts (planBetween), and so are their digests (sharedContent.contentDigest). */
export function planDeny(desired: Iterable<string>, observed: Iterable<string>): DenyPlan {
  const want = new Set(desired);
  const have = new Set(observed);
  return {
    add: Object.freeze([...want].filter((entry) => !have.has(entry))),
    remove: Object.freeze([...have].filter((entry) => !want.has(entry))),
    desired: Object.freeze([...want]),
    observed: Object.freeze([...have]),
  };
}

/** The plan that undoes `plan` (the lockout guard's revert). */
export function invertPlan(plan: DenyPlan): DenyPlan {
  return { add: plan.remove, remove: plan.add, desired: plan.observed, observed: plan.desired };
}

/**
 * The index first (index.ts: detail, blocks, retired detail), then record
 * additions, then record removals: while the batch runs, the firewall denies at
 * least the intersection of old and new, never less (the records of shared entries
 * are there throughout, and every index write is safe on its own).
 *
 * Why the index before the records: bpftool batch stops at the first failed line,
 * and the next run plans from the records. Cut short among the index writes, the
 * records are still the old list, so the next run with the same list rewrites every
 * index word that differs between the old list and the new: the same words. Cut short
 * among the record writes, the index already is the new list's. (Records first would
 * leave added records whose index words were never written, and the next run, seeing
 * those records, would not write them either.)
 */
export function denyOperations(plan: DenyPlan, mapPin: (map: string) => string, unread = false): MapOperation[] {
  const record = (entry: string, op: "update" | "delete"): MapOperation => {
    const { map, key } = encodeDenyEntry(entry);
    return op === "update" ? { op, map: mapPin(map), key, value: DENY_VALUE } : { op, map: mapPin(map), key };
  };
  const changed = plan.add.length + plan.remove.length > 0;
  return [
    ...(changed ? indexWrites(plan.desired, plan.observed, unread).map((op) => ({ ...op, map: mapPin(op.map) })) : []),
    ...plan.add.map((entry) => record(entry, "update")),
    ...plan.remove.map((entry) => record(entry, "delete")),
  ];
}

/**
 * The index writes between two lists, by map name, remembered for the last few pairs
 * of lists. The hosts of a fleet move between the same two versions of a shared list,
 * and building two indexes (a 16M-bucket state array per family, the slots) costs
 * O(entries): about a second per host at 100k entries, which one provider process
 * paid host after host. Keyed by the lists' content digests; the writes are never
 * mutated, and each host gets its own copy with its own pins.
 */
const recentIndexWrites = new Map<string, MapOperation[]>();
const RECENT_INDEX_PAIRS = 4;

function indexWrites(desired: readonly string[], observed: readonly string[], unread: boolean): MapOperation[] {
  const key = `${contentDigest(desired)} ${contentDigest(observed)} ${unread}`;
  let writes = recentIndexWrites.get(key);
  if (!writes) {
    writes = indexOperations(buildIndex(desired), buildIndex(observed), (map) => map, unread);
    if (recentIndexWrites.size >= RECENT_INDEX_PAIRS) recentIndexWrites.delete(recentIndexWrites.keys().next().value!);
    recentIndexWrites.set(key, writes);
  }
  return writes;
}

/**
 * The index of `entries` written from nothing: for index maps that were just
 * created beside records that already hold `entries` (an upgrade from an object
 * without the index), before the new program is attached.
 */
export function indexFromScratch(entries: Iterable<string>, mapPin: (map: string) => string): MapOperation[] {
  return indexOperations(buildIndex(entries), buildIndex([]), mapPin, true);
}

/**
 * What a host's maps hold beyond the list it recorded as applied ("stray") and what
 * they lack ("missing"), keyed by entry in canonical order; undefined when they agree,
 * so a firewall without drift carries no `denyDrift` at all.
 */
export function driftOf(applied: Iterable<string>, inMaps: Iterable<string>): Record<string, "stray" | "missing"> | undefined {
  const plan = planDeny(applied, inMaps);
  if (plan.add.length + plan.remove.length === 0) return undefined;
  const missing = new Set(plan.add);
  const drift = sortedRecord<"stray" | "missing">([...plan.remove, ...plan.add], "stray");
  for (const entry of Object.keys(drift)) if (missing.has(entry)) drift[entry] = "missing";
  return drift;
}

/**
 * The plan between two lists, remembered by the arrays themselves: the registered
 * versions of a DenyList (sharedContent.ts) are the same arrays for every firewall
 * of a deployment, so the hosts that move between the same two versions share one
 * plan (0.1 s per host at 100k entries). Plans are never mutated.
 */
const plans = new WeakMap<readonly string[], WeakMap<readonly string[], DenyPlan>>();

export function planBetween(desired: readonly string[], observed: readonly string[]): DenyPlan {
  let byObserved = plans.get(desired);
  if (!byObserved) plans.set(desired, (byObserved = new WeakMap()));
  let plan = byObserved.get(observed);
  if (!plan) byObserved.set(observed, (plan = planDeny(desired, observed)));
  return plan;
}
