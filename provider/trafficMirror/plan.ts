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
 */
import type { MapOperation } from "../remote/bpfHost";
import {
  CONFIG_MAP,
  encodeConfig,
  encodeFilter,
  filterSlot,
  FILTERS_MAP,
  indexKey,
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
  /** The live set's filters, keyed by filterKey(). */
  filters: Record<string, MirrorFilter>;
}

export interface MirrorPlan {
  /** Into the inactive set, in key order. */
  filterWrites: { slot: number; filter: MirrorFilter }[];
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
    configWrites: [
      { ...current, setLength },
      { ...current, ...settings, setLength, activeSet: next },
    ],
  };
}

export function mirrorOperations(plan: MirrorPlan, mapPin: (map: string) => string): MapOperation[] {
  return [
    ...plan.filterWrites.map((w): MapOperation => ({ op: "update", map: mapPin(FILTERS_MAP), key: indexKey(w.slot), value: encodeFilter(w.filter) })),
    ...plan.configWrites.map((c): MapOperation => ({ op: "update", map: mapPin(CONFIG_MAP), key: indexKey(0), value: encodeConfig(c) })),
  ];
}
