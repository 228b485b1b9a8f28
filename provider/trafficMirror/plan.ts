/**
 * Pure planning: the map writes that turn the mirror a host has into the one
 * the program declares.
 *
 * Filters live in two sets (bpf/include/tc_mirror.h). A new list is written
 * into the set the program is not reading, then that set's length, then
 * `active_set` flips to it. The config is one 40-byte array element copied
 * without a lock, so a packet may see some fields old and some new; each write
 * below changes only fields whose every old/new combination is valid: the
 * length of a set nobody reads, then the set index (a single aligned word)
 * together with target, sampling and tunnel guard, each valid on its own
 * (the old tunnel still exists until after the flip).
 *
 * The program matches with the classifier compiled from a set's records
 * (bpf/include/tc_mirror.h), written into the inactive set after its records
 * and before the flip. Every write before the flip lands in the set no packet
 * reads, the flip switches records and classifier together, so after any
 * prefix of the operations each packet is matched by exactly the old list or
 * exactly the new one: a filter in both never stops matching.
 */
import type { MapOperation } from "../remote/mapOperations";
import {
  classifierKey,
  compileClassifier,
  CONFIG_MAP,
  encodeConfig,
  encodeFilter,
  filterSlot,
  FILTERS_MAP,
  HEADS_MAP,
  indexKey,
  RANGE,
  RANGE6,
  RANGES_MAP,
  RANGES6_MAP,
  type MirrorConfig,
  type TunnelGuard,
} from "./codec";
import type { MirrorFilter } from "./schema";

export interface DesiredMirror {
  targetIfindex: number;
  sampleRate: number;
  guard?: TunnelGuard;
  /** Keyed by filterKey(), as check() leaves them. */
  filters: Record<string, MirrorFilter>;
}

export interface ObservedMirror {
  config: MirrorConfig;
  /** The live set's filters, keyed by filterKey(); those the classifier does not enforce as recorded are left out (classifierDrift). */
  filters: Record<string, MirrorFilter>;
}

export interface MirrorPlan {
  /** Into the inactive set, in key order. */
  filterWrites: { slot: number; filter: MirrorFilter }[];
  /** The set the filter writes go to, whose classifier is written after them; absent when the filters stay. */
  classifierSet?: 0 | 1;
  /** Written in this order, after the filters. */
  configWrites: MirrorConfig[];
}

function sameKeys(a: Record<string, unknown>, b: Record<string, unknown>): boolean {
  const ka = Object.keys(a);
  return ka.length === Object.keys(b).length && ka.every((k) => k in b);
}

function sameGuard(a: TunnelGuard | undefined, b: TunnelGuard | undefined): boolean {
  if (!a || !b) return !a && !b;
  return a.kind === b.kind && a.address === b.address && a.port === b.port;
}

/** 0 and 1 both mean "every matching packet". */
const effectiveRate = (rate: number) => Math.max(1, rate);

export function planMirror(desired: DesiredMirror, observed: ObservedMirror): MirrorPlan {
  const current = observed.config;
  const settingsChanged =
    current.targetIfindex !== desired.targetIfindex ||
    effectiveRate(current.sampleRate) !== effectiveRate(desired.sampleRate) ||
    !sameGuard(current.guard, desired.guard);
  const settings = { targetIfindex: desired.targetIfindex, sampleRate: desired.sampleRate, guard: desired.guard };

  if (sameKeys(desired.filters, observed.filters)) {
    return { filterWrites: [], configWrites: settingsChanged ? [{ ...current, ...settings }] : [] };
  }
  const next: 0 | 1 = current.activeSet === 0 ? 1 : 0;
  const keys = Object.keys(desired.filters).sort();
  const filterWrites = keys.map((key, index) => ({ slot: filterSlot(next, index), filter: desired.filters[key]! }));
  const setLength: [number, number] = [...current.setLength];
  setLength[next] = keys.length;
  return {
    filterWrites,
    classifierSet: next,
    configWrites: [
      { ...current, setLength },
      { ...current, ...settings, setLength, activeSet: next },
    ],
  };
}

/** The classifier of a set's filters (filter i = bit i), as map writes; each value fits a `bpftool batch` line (at most 4096 words). */
function classifierOperations(set: 0 | 1, filters: readonly MirrorFilter[], mapPin: (map: string) => string): MapOperation[] {
  const c = compileClassifier(filters);
  const update = (map: typeof HEADS_MAP | typeof RANGES_MAP | typeof RANGES6_MAP, field: number, value: Uint8Array): MapOperation => ({
    op: "update", map: mapPin(map), key: indexKey(classifierKey(map, set, field)), value,
  });
  return [
    ...Object.values(RANGE).map((f) => update(RANGES_MAP, f, c.ranges[f]!)),
    ...Object.values(RANGE6).map((f) => update(RANGES6_MAP, f, c.ranges6[f]!)),
    update(HEADS_MAP, 0, c.head),
  ];
}

export function mirrorOperations(plan: MirrorPlan, mapPin: (map: string) => string): MapOperation[] {
  return [
    ...plan.filterWrites.map((w): MapOperation => ({ op: "update", map: mapPin(FILTERS_MAP), key: indexKey(w.slot), value: encodeFilter(w.filter) })),
    ...(plan.classifierSet === undefined ? [] : classifierOperations(plan.classifierSet, plan.filterWrites.map((w) => w.filter), mapPin)),
    ...plan.configWrites.map((c): MapOperation => ({ op: "update", map: mapPin(CONFIG_MAP), key: indexKey(0), value: encodeConfig(c) })),
  ];
}
