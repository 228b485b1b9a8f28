/**
 * Pure planning for MaglevService: which backend index and counter slot each
 * backend and VIP gets, what every Maglev table must hold, and the one ordered
 * batch of map writes that takes the host from what it has to that.
 *
 * The order keeps DESIGN.md's promise that an update never points at nothing,
 * line by line, so a batch that stops half way still balances:
 *   1. the table marker is cleared (the tables are in flux);
 *   2. new backends' counters are zeroed and their records written, changed records rewritten;
 *   3. lb_config's reverse-NAT flag goes on if any VIP will be NAT;
 *   4. table slots that change are rewritten (a new VIP's whole table among them);
 *   5. lb_vip_index slots about to change say "ask lb_vips" (vipIndex.ts);
 *      new VIPs' counters are zeroed; new and changed VIP keys written;
 *   6. removed VIPs are deleted; the changed index slots get their new contents;
 *   7. slots no table uses any more are cleared;
 *   8. removed backends' records are cleared, now that no slot names them;
 *   9. lb_config gets its final value;
 *  10. the marker records the digest of the tables just written.
 * A removed backend's index is not handed out again until the allocator has
 * gone round all 4095 (lb_flows may still name it; a flow that finds a cleared
 * record falls back to the table).
 */
import { createHash } from "node:crypto";
import type { MapOperation } from "../remote/mapOperations";
import {
  decodeIndex, encodeBackend, encodeConfig, encodeIndex, encodeVip, encodeVipKey, LB_MAX_BACKENDS, LB_MAX_VIPS, LB_VIP_SLOTS, MAPS, SIZES, tableOperations,
  type BackendRecord, type LbMode, type VipValue,
} from "./codec";
import { backendKey, familyOf, TABLE_OFFSET, tableGroups, type Backend, type TableGroup, type Vip } from "./schema";
import { buildTable, diffTable, NO_BACKEND, type MaglevTable } from "./table";
import { vipIndexImage, vipIndexOperations } from "./vipIndex";

/** The slots of each table, as backend indexes (0: no backend), by offset in maglev_table. */
export type TableImage = Map<number, Uint32Array>;

export interface DesiredService {
  mode: LbMode;
  vips: Record<string, Vip>;
  backends: Record<string, Backend>;
  tableSize: number;
  connectionTable: boolean;
  /** The next-hop MAC each backend record should carry (undefined: FIB only). */
  macs: Record<string, string | undefined>;
  /**
   * The next-hop cache: for a backend whose MAC is its next hop on the
   * program's interface, that interface's MTU (the program then skips the
   * per-packet FIB lookup for packets that fit). Absent: the FIB first.
   */
  nextHopMtus?: Record<string, number | undefined>;
  /**
   * IPIP: lb_config's tunnel source per family, the address the host's routes
   * give every backend of that family (see neighbours.ts tunnelSources).
   * Absent: zero, and the program asks the FIB for one per packet.
   */
  tunnelSources?: { v4?: string; v6?: string };
}

export interface ObservedService {
  vips: Map<string, VipValue>;
  /** lb_backends entries that name a backend, by index. */
  backends: Map<number, BackendRecord>;
  reverseNat: boolean;
  /** lb_config's tunnel sources (absent: unknown or zero). */
  tunnelSources?: { v4?: string; v6?: string };
  /** What the tables hold, or undefined when not known: then every slot is written. */
  tables: TableImage | undefined;
  /** lb_vip_index's slots as read, by slot number; a slot missing here is taken as all zero (ASK). */
  vipIndex?: ReadonlyMap<number, Uint8Array>;
}

export interface Allocation {
  backendIndexes: Record<string, number>;
  nextBackendIndex: number;
  vipIndexes: Record<string, number>;
}

export interface ServicePlan {
  operations: MapOperation[];
  allocation: Allocation;
  tables: TableImage;
  tableDigest: string;
  summary: {
    backendsAdded: string[];
    backendsRewritten: string[];
    backendsRemoved: string[];
    vipsAdded: string[];
    vipsChanged: string[];
    vipsRemoved: string[];
    slotsWritten: number;
    slotsCleared: number;
  };
}

export class PlanError extends Error {}

const LAST_INDEX = LB_MAX_BACKENDS - 1;

/** The backend a record names, as the schema keys it (DSR and IPIP records carry port 0). */
export function recordKey(record: BackendRecord): string {
  return backendKey({ address: record.address, port: record.port === 0 ? undefined : record.port });
}

export function backendRecord(backend: Backend, mac: string | undefined, mtu?: number): BackendRecord {
  return { address: backend.address, port: backend.port ?? 0, ...(mac !== undefined ? { mac, ...(mtu !== undefined ? { mtu } : {}) } : {}) };
}

export function groupOf(mode: LbMode, vip: Vip): TableGroup {
  return mode === "ipip" ? "all" : familyOf(vip.address) === 4 ? "v4" : "v6";
}

/**
 * Backend indexes: a backend already on the host keeps its index; a new one
 * gets the next index, from where the last allocation stopped, that no record
 * on the host holds.
 */
export function allocateBackends(ids: readonly string[], observed: Map<number, BackendRecord>, nextIndex: number | undefined): { indexes: Record<string, number>; next: number } {
  const onHost = new Map<string, number>();
  for (const [index, record] of [...observed].sort((a, b) => a[0] - b[0])) {
    const key = recordKey(record);
    if (!onHost.has(key)) onHost.set(key, index);
  }
  const indexes: Record<string, number> = {};
  const taken = new Set<number>(observed.keys());
  for (const id of ids) {
    const index = onHost.get(id);
    if (index !== undefined) indexes[id] = index;
  }
  const highest = Math.max(0, ...observed.keys());
  let cursor = nextIndex !== undefined && nextIndex >= 1 && nextIndex <= LAST_INDEX ? nextIndex : (highest % LAST_INDEX) + 1;
  for (const id of ids) {
    if (indexes[id] !== undefined) continue;
    let tries = 0;
    while (taken.has(cursor)) {
      cursor = (cursor % LAST_INDEX) + 1;
      if (++tries > LAST_INDEX) {
        throw new PlanError(`no free backend index: the ${LAST_INDEX} records of lb_backends hold the backends being kept and those being removed; apply the removals and the additions in two steps`);
      }
    }
    indexes[id] = cursor;
    taken.add(cursor);
    cursor = (cursor % LAST_INDEX) + 1;
  }
  return { indexes, next: cursor };
}

/** VIP counter indexes: kept for VIPs on the host, the lowest free for new ones. */
export function allocateVips(keys: readonly string[], observed: Map<string, VipValue>): Record<string, number> {
  const indexes: Record<string, number> = {};
  const taken = new Set([...observed.values()].map((v) => v.vipIndex));
  const seen = new Set<number>();
  for (const key of keys) {
    const index = observed.get(key)?.vipIndex;
    if (index !== undefined && !seen.has(index)) {
      indexes[key] = index;
      seen.add(index);
    }
  }
  let cursor = 0;
  for (const key of keys) {
    if (indexes[key] !== undefined) continue;
    while (taken.has(cursor) || seen.has(cursor)) cursor++;
    if (cursor >= LB_MAX_VIPS) throw new PlanError(`no free VIP counter index (at most ${LB_MAX_VIPS} VIPs)`);
    indexes[key] = cursor;
    seen.add(cursor);
  }
  return indexes;
}

/** Every table the configuration needs, with the backend indexes its slots hold. */
export function tableImage(
  config: Pick<DesiredService, "mode" | "vips" | "backends" | "tableSize">,
  indexes: Record<string, number>,
): { image: TableImage; tables: Map<number, MaglevTable> } {
  const image: TableImage = new Map();
  const tables = new Map<number, MaglevTable>();
  for (const [group, ids] of tableGroups(config.mode, config.vips, config.backends)) {
    const table = buildTable(ids.map((id) => ({ id, weight: config.backends[id]!.weight })), config.tableSize);
    const byPosition = table.backends.map((id) => {
      const index = indexes[id];
      if (index === undefined) throw new PlanError(`backend ${id} has no index`);
      return index;
    });
    const slots = new Uint32Array(table.size);
    for (let s = 0; s < table.size; s++) {
      const b = table.slots[s]!;
      slots[s] = b === NO_BACKEND ? 0 : byPosition[b]!;
    }
    image.set(TABLE_OFFSET[group], slots);
    tables.set(TABLE_OFFSET[group], table);
  }
  return { image, tables };
}

/** sha256 over each table's offset, size and slots (u32 little-endian), tables by offset. */
export function tableDigest(image: TableImage): string {
  const hash = createHash("sha256");
  for (const offset of [...image.keys()].sort((a, b) => a - b)) {
    const slots = image.get(offset)!;
    hash.update(`${offset}:${slots.length};`);
    const bytes = Buffer.alloc(slots.length * 4);
    for (let i = 0; i < slots.length; i++) bytes.writeUInt32LE(slots[i]!, i * 4);
    hash.update(bytes);
  }
  return hash.digest("hex");
}

/**
 * The table as it is on the host, in the shape diffTable compares: slot → the
 * identity of the backend its index names there. An index that names no
 * backend the plan keeps gets an identity of its own ("#<index>"), so the
 * slot is rewritten.
 */
function observedTable(size: number, slots: Uint32Array | undefined, identityOfIndex: Map<number, string>): MaglevTable {
  const ids: string[] = [];
  const position = new Map<number, number>();
  const table: MaglevTable = { size, backends: ids, slots: new Int32Array(size).fill(NO_BACKEND) };
  if (!slots) return table;
  for (let s = 0; s < size && s < slots.length; s++) {
    const index = slots[s]!;
    if (index === 0) continue;
    let p = position.get(index);
    if (p === undefined) {
      p = ids.length;
      ids.push(identityOfIndex.get(index) ?? `#${index}`);
      position.set(index, p);
    }
    table.slots[s] = p;
  }
  return table;
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && a.every((byte, i) => byte === b[i]);
}

function vipValueEqual(a: VipValue, b: VipValue): boolean {
  return a.vipIndex === b.vipIndex && a.tableOffset === b.tableOffset && a.tableSize === b.tableSize && a.mode === b.mode && a.flowTable === b.flowTable;
}

/**
 * The plan from `observed` to `desired`. `pin` names a map's pin path,
 * `markerPin` the pin of the table marker (u32 key 0 → 32-byte digest).
 */
export function planService(
  desired: DesiredService,
  observed: ObservedService,
  previous: { nextBackendIndex?: number },
  pin: (map: string) => string,
  markerPin: string,
): ServicePlan {
  const ids = Object.keys(desired.backends);
  const vipKeys = Object.keys(desired.vips);
  const { indexes, next } = allocateBackends(ids, observed.backends, previous.nextBackendIndex);
  const vipIndexes = allocateVips(vipKeys, observed.vips);
  const { image, tables } = tableImage(desired, indexes);
  const digest = tableDigest(image);

  const kept = new Set(Object.values(indexes));
  const identityOfIndex = new Map(Object.entries(indexes).map(([id, index]) => [index, id]));

  // 2. backend records
  const recordOps: MapOperation[] = [];
  const added: string[] = [];
  const rewritten: string[] = [];
  for (const id of ids) {
    const index = indexes[id]!;
    const value = encodeBackend(backendRecord(desired.backends[id]!, desired.macs[id], desired.nextHopMtus?.[id]));
    const onHost = observed.backends.get(index);
    if (!onHost) {
      added.push(id);
      recordOps.push({ op: "update", map: pin(MAPS.backendStats), key: encodeIndex(index), value: new Uint8Array(SIZES.counter) });
      recordOps.push({ op: "update", map: pin(MAPS.backends), key: encodeIndex(index), value });
    } else if (!sameBytes(encodeBackend(onHost), value)) {
      rewritten.push(id);
      recordOps.push({ op: "update", map: pin(MAPS.backends), key: encodeIndex(index), value });
    }
  }
  const removedIndexes = [...observed.backends.keys()].filter((index) => !kept.has(index)).sort((a, b) => a - b);
  const removed = removedIndexes.map((index) => recordKey(observed.backends.get(index)!));

  // 4. table slots, table by table
  const slotOps: MapOperation[] = [];
  for (const [offset, table] of tables) {
    const before = observedTable(table.size, observed.tables?.get(offset), identityOfIndex);
    const changes = diffTable({ ...before, size: table.size }, table);
    slotOps.push(...tableOperations(changes, offset, (id) => indexes[id]!, pin(MAPS.table)));
  }

  // 7. slots outside every table that still name a backend
  const clearOps: MapOperation[] = [];
  const inUse = (slot: number) => [...image].some(([offset, slots]) => slot >= offset && slot < offset + slots.length);
  for (const [offset, slots] of observed.tables ?? new Map<number, Uint32Array>()) {
    for (let s = 0; s < slots.length; s++) {
      if (slots[s] !== 0 && !inUse(offset + s)) clearOps.push({ op: "update", map: pin(MAPS.table), key: encodeIndex(offset + s), value: encodeIndex(0) });
    }
  }

  // 5, 6. VIPs
  const vipOps: MapOperation[] = [];
  const vipsAdded: string[] = [];
  const vipsChanged: string[] = [];
  const vipRecords: { key: Uint8Array; value: Uint8Array }[] = [];
  for (const key of vipKeys) {
    const vip = desired.vips[key]!;
    const value: VipValue = {
      vipIndex: vipIndexes[key]!,
      tableOffset: TABLE_OFFSET[groupOf(desired.mode, vip)],
      tableSize: desired.tableSize,
      mode: desired.mode,
      flowTable: desired.connectionTable,
    };
    vipRecords.push({ key: encodeVipKey(vip), value: encodeVip(value) });
    const onHost = observed.vips.get(key);
    if (onHost && vipValueEqual(onHost, value)) continue;
    if (!onHost) {
      vipsAdded.push(key);
      vipOps.push({ op: "update", map: pin(MAPS.vipStats), key: encodeIndex(value.vipIndex), value: new Uint8Array(SIZES.counter) });
    } else {
      vipsChanged.push(key);
    }
    vipOps.push({ op: "update", map: pin(MAPS.vips), key: encodeVipKey(vip), value: encodeVip(value) });
  }
  const vipsRemoved = [...observed.vips.keys()].filter((key) => !(key in desired.vips));
  const vipDeletes: MapOperation[] = vipsRemoved.map((key) => ({ op: "delete", map: pin(MAPS.vips), key: encodeVipKey(parseVipKey(key)) }));
  const index = vipIndexOperations(vipIndexImage(vipRecords), observed.vipIndex ?? new Map(), pin(MAPS.vipIndex));

  // 8. records no slot names any more
  const clearRecords: MapOperation[] = removedIndexes.map((index) => ({ op: "update", map: pin(MAPS.backends), key: encodeIndex(index), value: encodeBackend(undefined) }));

  // 3, 9. lb_config: the reverse-NAT flag is on whenever some VIP is NAT.
  // The tunnel sources go with the first write (either value sends IPIP
  // packets from an address of the host: the resolved one or the FIB's).
  const wantNat = desired.mode === "nat" && vipKeys.length > 0;
  const sources = desired.tunnelSources ?? {};
  const configOp = (reverseNat: boolean): MapOperation => ({
    op: "update", map: pin(MAPS.config), key: encodeIndex(0),
    value: encodeConfig({ reverseNat, ...(sources.v4 ? { tunnelSourceV4: sources.v4 } : {}), ...(sources.v6 ? { tunnelSourceV6: sources.v6 } : {}) }),
  });
  const sourcesChange = (observed.tunnelSources?.v4 ?? "") !== (sources.v4 ?? "") || (observed.tunnelSources?.v6 ?? "") !== (sources.v6 ?? "");
  const configFirst = (wantNat && !observed.reverseNat) || (sourcesChange && wantNat === observed.reverseNat) ? [configOp(wantNat)] : [];
  const configLast = !wantNat && observed.reverseNat ? [configOp(false)] : [];

  const body = [...recordOps, ...configFirst, ...slotOps, ...index.before, ...vipOps, ...vipDeletes, ...index.after, ...clearOps, ...clearRecords, ...configLast];
  const tablesTouched = slotOps.length > 0 || clearOps.length > 0 || observed.tables === undefined;
  const markerValue = (hex: string) => Uint8Array.from(Buffer.from(hex, "hex"));
  const operations = tablesTouched
    ? [
        { op: "update" as const, map: markerPin, key: encodeIndex(0), value: new Uint8Array(32) },
        ...body,
        { op: "update" as const, map: markerPin, key: encodeIndex(0), value: markerValue(digest) },
      ]
    : body;

  return {
    operations,
    allocation: { backendIndexes: indexes, nextBackendIndex: next, vipIndexes },
    tables: image,
    tableDigest: digest,
    summary: {
      backendsAdded: added,
      backendsRewritten: rewritten,
      backendsRemoved: removed,
      vipsAdded,
      vipsChanged,
      vipsRemoved,
      slotsWritten: slotOps.length,
      slotsCleared: clearOps.length,
    },
  };
}

/** The VIP a state key names ("198.51.100.10:80/tcp", "[2001:db8::10]:80/udp"). */
export function parseVipKey(key: string): Vip {
  const m = /^(?:\[([^\]]+)\]|([^:]+)):(\d+)\/(tcp|udp)$/.exec(key);
  if (!m) throw new PlanError(`not a VIP key: ${key}`);
  return { address: m[1] ?? m[2]!, port: Number(m[3]), protocol: m[4] as Vip["protocol"] };
}

/** A map's entries as they were before a batch, by hex key (values[0] of a dump). */
export type MapBefore = ReadonlyMap<string, Uint8Array>;

const hexKey = (bytes: Uint8Array) => Buffer.from(bytes).toString("hex");

/**
 * The writes that take the maps back from what `operations` (a plan's batch,
 * applied in full or up to any line) leave to what they held before: the
 * rollback of a failed update. Each map's previous entries come from `before`
 * (by pin; a missing key of a hash map is deleted, a map not listed is left
 * alone), maglev_table's from `tables`, the image the marker proved.
 *
 * The plan's lines are undone in reverse order, so the undo keeps DESIGN.md's
 * promise too: a removed backend's record comes back before a slot names it
 * again, and an added backend's record is cleared only once no slot does. The
 * marker is cleared first and gets its previous digest back last.
 * lb_vip_index slots the batch touched go back the way the plan moves them
 * (vipIndex.ts): from `currentIndex`, the slots as the failed batch left them,
 * each says ASK before lb_vips is undone and gets its previous contents after,
 * so no step of the undo lets the index disagree with lb_vips. Without
 * `tables` (the marker did not prove them) nothing is undone when the batch
 * wrote slots: their previous values are unknown, and clearing an added
 * backend's record under a slot that still names it would point at nothing;
 * the marker the batch cleared makes the next update rewrite every slot.
 * Counters are not restored.
 */
export function restoreOperations(
  operations: readonly MapOperation[],
  before: ReadonlyMap<string, MapBefore | undefined>,
  tables: TableImage | undefined,
  pin: (map: string) => string,
  markerPin: string,
  currentIndex: ReadonlyMap<number, Uint8Array>,
): MapOperation[] {
  const tablePin = pin(MAPS.table);
  if (!tables && operations.some((o) => o.map === tablePin)) return [];
  const indexPin = pin(MAPS.vipIndex);
  const skip = new Set([pin(MAPS.vipStats), pin(MAPS.backendStats), markerPin, indexPin]);
  const oldSlot = (slot: number): Uint8Array => {
    for (const [offset, slots] of tables!) if (slot >= offset && slot < offset + slots.length) return encodeIndex(slots[slot - offset]!);
    return encodeIndex(0);
  };
  const undo: MapOperation[] = [];
  const done = new Set<string>();
  let complete = true;
  for (const o of [...operations].reverse()) {
    const id = `${o.map} ${hexKey(o.key)}`;
    if (skip.has(o.map) || done.has(id)) continue;
    done.add(id);
    if (o.map === tablePin) {
      undo.push({ op: "update", map: o.map, key: o.key, value: oldSlot(decodeIndex(o.key)) });
      continue;
    }
    const entries = before.get(o.map);
    if (!entries) {
      complete = false;
      continue;
    }
    const old = entries.get(hexKey(o.key));
    undo.push(old === undefined ? { op: "delete", map: o.map, key: o.key } : { op: "update", map: o.map, key: o.key, value: old });
  }
  const index = indexRestore(operations, before.get(indexPin), currentIndex, indexPin);
  if (!index) complete = false;
  const inOrder = [...(index?.before ?? []), ...undo, ...(index?.after ?? [])];
  const marker = before.get(markerPin)?.get(hexKey(encodeIndex(0)));
  const touchesTables = operations.some((o) => o.map === markerPin);
  if (!touchesTables) return inOrder;
  return [
    { op: "update", map: markerPin, key: encodeIndex(0), value: new Uint8Array(32) },
    ...inOrder,
    ...(complete && marker ? [{ op: "update" as const, map: markerPin, key: encodeIndex(0), value: marker }] : []),
  ];
}

/**
 * The writes that take the lb_vip_index slots `operations` touched back to
 * `previous` (their dump before the batch), from `current`, split around the
 * lb_vips undo as the plan splits them; slots the batch did not touch keep
 * what they hold. Undefined when the batch touched slots whose previous
 * contents were not dumped.
 */
function indexRestore(
  operations: readonly MapOperation[],
  previous: MapBefore | undefined,
  current: ReadonlyMap<number, Uint8Array>,
  indexPin: string,
): { before: MapOperation[]; after: MapOperation[] } | undefined {
  const touched = new Set(operations.filter((o) => o.map === indexPin).map((o) => decodeIndex(o.key)));
  if (touched.size === 0) return { before: [], after: [] };
  if (!previous) return undefined;
  const empty = new Uint8Array(SIZES.vipSlot);
  const desired = Array.from({ length: LB_VIP_SLOTS }, (_, slot) =>
    touched.has(slot) ? (previous.get(hexKey(encodeIndex(slot))) ?? empty) : (current.get(slot) ?? empty));
  return vipIndexOperations(desired, current, indexPin);
}
