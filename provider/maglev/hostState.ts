/**
 * What a MaglevService's pins hold on the host, read in as few round trips as
 * bpftool allows: the VIPs, backend records, lb_config, the table marker and
 * lb_vip_index in one dump; counters and (for `read`) every table slot in one batch of
 * lookups, the program and its counters totals in one more.
 */
import { applyMapOperations, dumpMaps, lookupMapEntries, type MapLookup, type MapOperation } from "../remote/mapOperations";
import type { PinLayout } from "../remote/pins";
import { programState } from "../remote/resourceSurvey";
import type { XdpAttachment } from "../remote/xdpAttach";
import { dispatcherDir, hookPosition, placedAttachment, type XdpPlacement } from "../remote/xdpHook";
import type { SshSession } from "../remote/ssh";
import { sumCounters } from "../counters";
import { decodeBackend, decodeConfig, decodeIndex, decodeVip, decodeVipKey, encodeIndex, LB_STATS, MAPS, type BackendRecord, type VipValue } from "./codec";
import { restoreOperations, type TableImage } from "./plan";
import { observedVipIndex } from "./vipIndex";
import { vipKey, type Counter, type Vip } from "./schema";

/** Our own one-entry array beside the object's maps: the digest of the tables the last complete batch wrote. */
export const MARKER = "table_digest";

export const mapPin = (layout: PinLayout) => (map: string) => `${layout.maps}/${map}`;
export const markerPin = (layout: PinLayout) => `${layout.dir}/${MARKER}`;

export interface ObservedMaps {
  vips: Map<string, VipValue>;
  vipAddresses: Map<string, Vip>;
  backends: Map<number, BackendRecord>;
  reverseNat: boolean;
  /** lb_config's IPIP tunnel source per family (absent: all zero, the FIB picks one per packet). */
  tunnelSources: { v4?: string; v6?: string };
  /** The marker's digest; undefined when the marker is missing or cleared. */
  marker: string | undefined;
  /** lb_vip_index's slots by slot number (empty when the map is not pinned: an object from before the index). */
  vipIndex: Map<number, Uint8Array>;
}

/** Entries of the dumped maps by pin and hex key (undefined: the map is missing): what a rollback restores. */
export type DumpedMaps = Map<string, Map<string, Uint8Array> | undefined>;

function hex(bytes: Uint8Array): string {
  return Buffer.from(bytes).toString("hex");
}

/** lb_vips, the lb_backends records that name a backend, lb_config, the marker and lb_vip_index, in one round trip. */
export async function observeMaps(session: SshSession, layout: PinLayout): Promise<ObservedMaps & { markerExists: boolean; dumps: DumpedMaps }> {
  const pin = mapPin(layout);
  const pins = [pin(MAPS.vips), pin(MAPS.backends), pin(MAPS.config), markerPin(layout), pin(MAPS.vipIndex)];
  const dumps = await dumpMaps(session, pins);
  const vips = new Map<string, VipValue>();
  const vipAddresses = new Map<string, Vip>();
  for (const entry of dumps.get(pins[0]!) ?? []) {
    const vip = decodeVipKey(entry.key);
    vips.set(vipKey(vip), decodeVip(entry.values[0]!));
    vipAddresses.set(vipKey(vip), vip);
  }
  const backends = new Map<number, BackendRecord>();
  for (const entry of dumps.get(pins[1]!) ?? []) {
    const record = decodeBackend(entry.values[0]!);
    const index = decodeIndex(entry.key);
    if (record && index !== 0) backends.set(index, record);
  }
  const config = dumps.get(pins[2]!)?.[0]?.values[0];
  const decoded = config ? decodeConfig(config) : undefined;
  const marker = dumps.get(pins[3]!);
  const digest = marker?.[0]?.values[0];
  return {
    vips,
    vipAddresses,
    backends,
    reverseNat: decoded?.reverseNat ?? false,
    tunnelSources: {
      ...(decoded?.tunnelSourceV4 !== undefined ? { v4: decoded.tunnelSourceV4 } : {}),
      ...(decoded?.tunnelSourceV6 !== undefined ? { v6: decoded.tunnelSourceV6 } : {}),
    },
    marker: digest && digest.some((b) => b !== 0) ? hex(digest) : undefined,
    vipIndex: observedVipIndex((dumps.get(pins[4]!) ?? []).map((e) => ({ key: e.key, value: e.values[0]! }))),
    markerExists: marker !== undefined,
    dumps: new Map([...dumps].map(([pin, entries]) => [pin, entries && new Map(entries.map((e) => [hex(e.key), e.values[0]!]))])),
  };
}

/**
 * Puts back what a failed batch of `operations` changed (plan.ts
 * restoreOperations), from the maps as `before` held them. lb_vips and
 * lb_vip_index are read again first, in one dump: bpftool batch stops at a
 * delete of a key that is not there, so only the new VIPs the batch did write
 * are deleted; and an index slot is moved only by writes that change its state
 * byte alone, which needs the bytes the batch left in it.
 */
export async function restoreMaps(session: SshSession, layout: PinLayout, operations: readonly MapOperation[], before: DumpedMaps, tables: TableImage | undefined): Promise<void> {
  const vips = mapPin(layout)(MAPS.vips);
  const vipIndex = mapPin(layout)(MAPS.vipIndex);
  const now = await dumpMaps(session, [vips, vipIndex]);
  const present = new Set((now.get(vips) ?? []).map((e) => `${vips} ${hex(e.key)}`));
  const currentIndex = observedVipIndex((now.get(vipIndex) ?? []).map((e) => ({ key: e.key, value: e.values[0]! })));
  const undo = restoreOperations(operations, before, tables, mapPin(layout), markerPin(layout), currentIndex).filter((o) => o.op === "update" || present.has(`${o.map} ${hex(o.key)}`));
  await applyMapOperations(session, undo);
}

export async function createMarker(session: SshSession, layout: PinLayout): Promise<void> {
  await session.run(["bpftool", "map", "create", markerPin(layout), "type", "array", "key", "4", "value", "32", "entries", "1", "name", "lb_tbl_digest"]);
}

/** Counter lookups for the VIPs and backends in use, and the slots of `regions`, in one round trip. */
export async function readCountersAndTables(
  session: SshSession,
  layout: PinLayout,
  vipIndexes: Record<string, number>,
  backendIndexes: Record<string, number>,
  regions: readonly { offset: number; size: number }[],
): Promise<{ vips: Record<string, Counter>; backends: Record<string, Counter>; tables: TableImage }> {
  const pin = mapPin(layout);
  const vipKeys = Object.keys(vipIndexes);
  const backendIds = Object.keys(backendIndexes);
  const lookups: MapLookup[] = [
    ...vipKeys.map((k) => ({ map: pin(MAPS.vipStats), key: encodeIndex(vipIndexes[k]!) })),
    ...backendIds.map((id) => ({ map: pin(MAPS.backendStats), key: encodeIndex(backendIndexes[id]!) })),
  ];
  for (const { offset, size } of regions) {
    for (let s = 0; s < size; s++) lookups.push({ map: pin(MAPS.table), key: encodeIndex(offset + s) });
  }
  const values = await lookupMapEntries(session, lookups);
  const vips = Object.fromEntries(vipKeys.map((k, i) => [k, sumCounters(values[i]!)]));
  const backends = Object.fromEntries(backendIds.map((id, i) => [id, sumCounters(values[vipKeys.length + i]!)]));
  const tables: TableImage = new Map();
  let at = vipKeys.length + backendIds.length;
  for (const { offset, size } of regions) {
    const slots = new Uint32Array(size);
    for (let s = 0; s < size; s++) slots[s] = decodeIndex(values[at++]![0]!);
    tables.set(offset, slots);
  }
  return { vips, backends, tables };
}

export interface ObservedProgram {
  programId: number;
  programTag: string;
  attachment: XdpAttachment | undefined;
  totals: Record<string, Counter>;
}

/** The attachment counts only where `placement` wants the program: alone, or in its chain slot. */
export async function observeProgram(session: SshSession, layout: PinLayout, placement: XdpPlacement): Promise<ObservedProgram | undefined> {
  const state = await programState(session, placement.iface, layout, MAPS.stats, dispatcherDir(placement.iface));
  if (!state.program) return undefined;
  const totals: Record<string, Counter> = {};
  for (const entry of state.stats) {
    const name = LB_STATS[decodeIndex(entry.key)];
    if (name) totals[name] = sumCounters(entry.values);
  }
  return {
    programId: state.program.id,
    programTag: state.program.tag,
    attachment: placedAttachment(hookPosition(state.xdp, state.chain, [state.program.id]), placement),
    totals,
  };
}
