/**
 * The firewall's index: the structures the program reads, derived from the deny
 * entries (see bpf/include/xdp_firewall.h). The record maps (codec.ts) hold the
 * entries as written; this module computes, for a whole set of entries, the
 * bucket states, the IPv4 /24 host bitmaps (and their slots), the 12-way buckets
 * of exact addresses and IPv6 long prefixes and the IPv6 long-prefix set, and
 * the writes that take a host from one set's index to another's.
 *
 * Why each write is individually safe (no moment where an entry that stays is
 * not enforced): every write takes one structure (an index block, a host bitmap,
 * the IPv6 length set, one long prefix, a way bucket, a net slot) from its value for
 * the old list to its value for the new one, each computed from a whole list,
 * never from the difference (a bucket or slot in the steps bucketOperations and
 * slotOperations explain); both values enforce every entry the two lists share (a shared
 * entry's bucket is NONE in neither, its bitmap bits and length bit are
 * set in both, its long-prefix key is never deleted). A bucket's 2 bits never
 * span a byte, so even a torn block write gives each bucket its old or its new
 * state, and a torn bitmap mixes old and new bytes, never losing a shared bit.
 * And every state falls through to a structure that holds the shared entries
 * whatever was written so far: an EXACT bucket reads the address's way bucket
 * and, when it overflows, the exact hash; an IPv4 LONGER bucket reads its /24's
 * net slot, fw_v4_hosts when the slot overflows (it holds every bitmap, written
 * before the slot names it and deleted after), and the exact path when the slot
 * holds another /24 without overflowing (only while its own /24 leaves LONGER
 * with no long prefix that both lists hold: a /24 with one keeps a bitmap, so a
 * claim on the slot, in both); an IPv6 LONGER bucket tries its lengths (each a
 * way bucket, and fw_v6_long when it overflows), then the exact address. The order indexOperations returns (detail first, then blocks, then
 * detail no longer pointed at) makes a *new* entry take effect with the block
 * write that points at it, rather than on a fall-through.
 * The exact hash is both a record and read by the program (EXACT buckets): a
 * shared entry's record is there throughout, so the caller may write the records
 * after the index (plan.ts says why it does). test/kernel/xdpFirewall.test.ts races
 * such updates against lookups.
 */
import { parsePrefix, type Prefix } from "../cidr";
import type { MapOperation } from "../remote/mapOperations";
import { DENY_VALUE, encodeDenyEntry } from "./codec";

export const INDEX_MAPS = ["fw_v4_index", "fw_v6_index", "fw_v4_hosts", "fw_v6_long", "fw_v6_lengths", "fw_v4_ways", "fw_v6_ways", "fw_v4_net_slots"] as const;
export type IndexMap = (typeof INDEX_MAPS)[number];

export const INDEX_BLOCKS = 65536;
export const BLOCK_BYTES = 64;
export const BUCKET = { none: 0, deny: 1, exact: 2, longer: 3 } as const;

/** fw_v4_ways and fw_v6_ways: FW_WAYS addresses (keys) a bucket holds before it overflows to the hash. */
export const WAYS = 12;
/** fw_v4_ways: FW_V4_WAY_BITS, FW_V4_SLOT_MULT. */
export const V4_WAY_BITS = 17;
const V4_SLOT_MULT = 0x9e3779b1;
/** The fw_v4_ways bucket of an IPv4 address (a number, host order), as the program computes it. */
export const v4WayBucket = (address: number) => Math.imul(address, V4_SLOT_MULT) >>> (32 - V4_WAY_BITS);

/** fw_v4_net_slots: FW_V4_NET_SLOT_BITS. */
export const V4_NET_SLOT_BITS = 16;
/** The fw_v4_net_slots slot of an IPv4 /24 (its top 24 bits, a number), as the program computes it. */
export const v4NetSlot = (bucket: number) => Math.imul(bucket, V4_SLOT_MULT) >>> (32 - V4_NET_SLOT_BITS);

/** fw_v6_ways: FW_V6_WAY_BITS. */
export const V6_WAY_BITS = 17;
/** The fold of (length, masked address) fw_v6_key_listed computes. */
function v6Fold(bytes: Uint8Array, length: number): number {
  const view = new DataView(bytes.buffer, bytes.byteOffset, 16);
  let h = 0;
  for (let i = 0; i < 4; i++) h = Math.imul(h ^ view.getUint32(i * 4, false), V4_SLOT_MULT);
  return Math.imul(h ^ length, V4_SLOT_MULT);
}
/** The fw_v6_ways bucket of (length, masked address), as the program computes it. */
export const v6WayBucket = (bytes: Uint8Array, length: number) => v6Fold(bytes, length) >>> (32 - V6_WAY_BITS);
/** A key's tag in its fw_v6_ways bucket: bits 7..14 of the fold. */
export const v6WayTag = (bytes: Uint8Array, length: number) => (v6Fold(bytes, length) >>> 7) & 0xff;

/** Capacity of the detail maps (FW_V4_HOSTS_MAX_ENTRIES, FW_V6_LONG_MAX_ENTRIES). */
export const V4_HOSTS_MAX_ENTRIES = 262_144;
export const V6_LONG_MAX_ENTRIES = 262_144;

interface FamilyIndex {
  /** One state per 24-bit bucket; undefined when the family has no entry. */
  states?: Uint8Array;
}

export interface DenyIndex {
  v4: FamilyIndex;
  v6: FamilyIndex;
  /** IPv4 /24 (top 24 bits as a number) -> 32-byte bitmap of the denied last bytes. */
  v4Hosts: Map<number, Uint8Array>;
  /** Canonical IPv6 entries of length 25..127. */
  v6Long: Set<string>;
  /** The 128-bit length set, as stored (bit 127 - n for length n). */
  v6Lengths: Uint8Array;
  /** fw_v4_ways in use: bucket -> every exact IPv4 address of the bucket (4 bytes as on the wire), ascending. */
  v4Ways: Map<number, Uint8Array[]>;
  /** fw_v6_ways in use: bucket -> every IPv6 entry of length 25..128 of the bucket (masked address, then length), ascending. */
  v6Ways: Map<number, Uint8Array[]>;
  /** fw_v4_net_slots in use: slot -> the lowest /24 of v4Hosts in the slot (its fw_v4_hosts key) with its bitmap, and whether others share it. */
  v4NetSlots: Map<number, Slot>;
}

/**
 * A slot in use: `key` is the value's key bytes (fw_v4_slot: the address; fw_v6_slot:
 * address and length; fw_v4_net_slot: the /24), `bits` the host bitmap of a
 * fw_v4_net_slot.
 */
export interface Slot {
  key: Uint8Array;
  overflow: boolean;
  bits?: Uint8Array;
}

function claimSlot(slots: Map<number, Slot>, slot: number, key: Uint8Array, bits?: Uint8Array): void {
  const held = slots.get(slot);
  if (!held) slots.set(slot, { key, overflow: false, bits });
  else slots.set(slot, Buffer.compare(key, held.key) < 0 ? { key, overflow: true, bits } : { ...held, overflow: true });
}

function addToBucket(buckets: Map<number, Uint8Array[]>, bucket: number, key: Uint8Array): void {
  const keys = buckets.get(bucket);
  if (keys) keys.push(key);
  else buckets.set(bucket, [key]);
}

const top24 = (bytes: Uint8Array) => (bytes[0]! << 16) | (bytes[1]! << 8) | bytes[2]!;

export function buildIndex(entries: Iterable<string>): DenyIndex {
  const index: DenyIndex = { v4: {}, v6: {}, v4Hosts: new Map(), v6Long: new Set(), v6Lengths: new Uint8Array(16), v4Ways: new Map(), v6Ways: new Map(), v4NetSlots: new Map() };
  const covering: Prefix[] = [];
  const parsed = [...entries].map((entry) => ({ entry, prefix: parsePrefix(entry) }));
  for (const { prefix } of parsed) {
    const fam = prefix.family === 4 ? index.v4 : index.v6;
    fam.states ??= new Uint8Array(1 << 24);
  }
  // Detail first (EXACT, LONGER), then coverage on top: DENY wins whatever the order.
  for (const { entry, prefix } of parsed) {
    const len = prefix.prefixLength;
    const width = prefix.bytes.length * 8;
    const states = (prefix.family === 4 ? index.v4 : index.v6).states!;
    if (len <= 24) {
      covering.push(prefix);
      continue;
    }
    const bucket = top24(prefix.bytes);
    if (len === width) {
      if (states[bucket] === BUCKET.none) states[bucket] = BUCKET.exact;
      if (prefix.family === 4) addToBucket(index.v4Ways, v4WayBucket(((bucket << 8) | prefix.bytes[3]!) >>> 0), Uint8Array.from(prefix.bytes));
      else addToBucket(index.v6Ways, v6WayBucket(prefix.bytes, len), Uint8Array.of(...prefix.bytes, len));
    } else {
      if (prefix.family === 6) addToBucket(index.v6Ways, v6WayBucket(prefix.bytes, len), Uint8Array.of(...prefix.bytes, len));
      states[bucket] = BUCKET.longer;
      if (prefix.family === 6) {
        index.v6Long.add(entry);
        const k = 127 - len;
        index.v6Lengths[k >> 3]! |= 1 << (k & 7);
      }
    }
  }
  // IPv4 LONGER buckets: the bitmap of every entry in the /24, exact ones included.
  for (const { prefix } of parsed) {
    if (prefix.family !== 4 || prefix.prefixLength <= 24) continue;
    const bucket = top24(prefix.bytes);
    if (index.v4.states![bucket] !== BUCKET.longer) continue;
    let bits = index.v4Hosts.get(bucket);
    if (!bits) index.v4Hosts.set(bucket, (bits = new Uint8Array(32)));
    const first = prefix.bytes[3]!;
    const count = 1 << (32 - prefix.prefixLength);
    for (let h = first; h < first + count; h++) bits[h >> 3]! |= 1 << (h & 7);
  }
  for (const ways of [index.v4Ways, index.v6Ways]) for (const keys of ways.values()) keys.sort(Buffer.compare);
  for (const [bucket, bits] of index.v4Hosts) claimSlot(index.v4NetSlots, v4NetSlot(bucket), v4HostsKey(bucket), bits);
  for (const prefix of covering) {
    const states = (prefix.family === 4 ? index.v4 : index.v6).states!;
    const first = top24(prefix.bytes);
    states.fill(BUCKET.deny, first, first + (1 << (24 - prefix.prefixLength)));
  }
  return index;
}

/** Block `block` of a family's states, packed as the program reads it. */
export function packBlock(states: Uint8Array | undefined, block: number): Uint8Array {
  const out = new Uint8Array(BLOCK_BYTES);
  if (!states) return out;
  const base = block << 8;
  for (let b = 0; b < 256; b++) {
    const s = states[base + b]!;
    if (s) out[b >> 2]! |= s << ((b & 3) * 2);
  }
  return out;
}

function blockDiffers(a: Uint8Array | undefined, b: Uint8Array | undefined, block: number): boolean {
  const base = block << 8;
  for (let i = base; i < base + 256; i++) if ((a?.[i] ?? 0) !== (b?.[i] ?? 0)) return true;
  return false;
}

const u32Key = (n: number) => {
  const key = new Uint8Array(4);
  new DataView(key.buffer).setUint32(0, n, true);
  return key;
};

/** fw_v4_hosts key of a /24: its network address as on the wire. */
export const v4HostsKey = (bucket: number) => Uint8Array.of(bucket >>> 16, (bucket >>> 8) & 0xff, bucket & 0xff, 0);

const sameBytes = (a: Uint8Array | undefined, b: Uint8Array | undefined) => a !== undefined && b !== undefined && a.length === b.length && a.every((x, i) => x === b[i]);

/** A net slot value: struct fw_v4_net_slot (the /24; valid, overflow, pad; the bitmap). */
export function encodeSlot(key: Uint8Array, valid: boolean, overflow: boolean, bits: Uint8Array): Uint8Array {
  const out = new Uint8Array(40);
  out.set(key);
  out[key.length] = valid ? 1 : 0;
  out[key.length + 1] = overflow ? 1 : 0;
  out.set(bits, 8);
  return out;
}

/**
 * A bucket as written: each way's key bytes (undefined: zeros) and `valid`, and
 * `overflow`. The ways of a bucket built from a list hold its WAYS lowest keys in
 * ascending order, and zeros after them.
 */
interface WaysValue {
  keys: (Uint8Array | undefined)[];
  valid: boolean[];
  overflow: boolean;
}

function waysValue(all: readonly Uint8Array[] | undefined): WaysValue {
  const keys = Array.from({ length: WAYS }, (_, i) => all?.[i]);
  return { keys, valid: keys.map((k) => k !== undefined), overflow: (all?.length ?? 0) > WAYS };
}

/**
 * struct fw_v4_ways (keys of 4 bytes: addr[12], valid[12], overflow, pad) or
 * struct fw_v6_ways (keys of 17 bytes, address then length: addr[12][16],
 * tag[16], len[12], valid[12], overflow, pad). A way's tag is written with its key.
 */
export function encodeWays(family: 4 | 6, value: WaysValue): Uint8Array {
  const out = new Uint8Array(family === 4 ? 64 : 240);
  const width = family === 4 ? 4 : 16;
  const validAt = family === 4 ? WAYS * 4 : WAYS * 16 + 16 + WAYS;
  value.keys.forEach((key, i) => {
    if (!key) return;
    out.set(key.subarray(0, width), i * width);
    if (family === 6) {
      out[WAYS * 16 + i] = v6WayTag(key.subarray(0, 16), key[16]!);
      out[WAYS * 16 + 16 + i] = key[16]!;
    }
  });
  value.valid.forEach((v, i) => (out[validAt + i] = v ? 1 : 0));
  out[validAt + WAYS] = value.overflow ? 1 : 0;
  return out;
}

/**
 * The writes that take one fw_v4_ways/fw_v6_ways bucket from the keys `from` to
 * the keys `to` (each a bucket's every key, ascending; undefined: none). At most
 * five writes, each safe read torn at any byte (each byte old or new), given that
 * the hash behind the bucket (deny_v4_exact, deny_v6_exact, fw_v6_long) holds
 * every key both lists share throughout:
 * 1. `overflow` on, if a way whose key changes holds a key both lists keep;
 * 2. the ways that change emptied (`valid` 0): a kept key is then in the hash,
 *    asked since step 1;
 * 3. their keys written, while not valid (a torn key is never read);
 * 4. the ways that hold a key marked valid, keys unchanged;
 * 5. `overflow` as the new list has it: every key both keep is in a valid way by
 *    now, or the bucket still overflows.
 * A write never changes a way's key and its `valid` together (a torn read could
 * see a half-written key as valid), nor `overflow` with a way. The final bytes are
 * those of the bucket built from `to` alone. `unread`: no program reads the map
 * yet, so one write of the final value does.
 */
export function bucketOperations(family: 4 | 6, bucket: number, to: readonly Uint8Array[] | undefined, from: readonly Uint8Array[] | undefined, map: string, unread = false): MapOperation[] {
  const key = u32Key(bucket);
  const target = waysValue(to);
  const cur = waysValue(from);
  const encoded = (v: WaysValue) => encodeWays(family, v);
  const write = (): MapOperation => ({ op: "update", map, key, value: encoded(cur) });
  const same = (a: WaysValue, b: WaysValue) => sameBytes(encoded(a), encoded(b));
  // The common case in a long list, cheaply: the bucket's keys did not change.
  if (to && from && to.length === from.length && to.every((k, i) => sameBytes(k, from[i]))) return [];
  if (same(cur, target)) return [];
  if (unread) return [{ op: "update", map, key, value: encoded(target) }];
  const changed = [...Array(WAYS).keys()].filter((i) => cur.valid[i] !== target.valid[i] || (cur.valid[i] && !sameBytes(cur.keys[i], target.keys[i])));
  const kept = (k: Uint8Array | undefined) => k !== undefined && (to ?? []).some((t) => sameBytes(t, k));
  const ops: MapOperation[] = [];
  if (!cur.overflow && changed.some((i) => cur.valid[i] && kept(cur.keys[i]))) {
    cur.overflow = true;
    ops.push(write());
  }
  if (changed.some((i) => cur.valid[i])) {
    for (const i of changed) cur.valid[i] = false;
    ops.push(write());
  }
  const before = encoded(cur);
  for (const i of changed) cur.keys[i] = target.keys[i];
  if (!sameBytes(before, encoded(cur))) ops.push(write());
  if (changed.some((i) => target.valid[i])) {
    for (const i of changed) cur.valid[i] = target.valid[i]!;
    ops.push(write());
  }
  if (cur.overflow !== target.overflow) {
    cur.overflow = target.overflow;
    ops.push(write());
  }
  return ops;
}

/**
 * The writes that take one fw_v4_net_slots slot from `from` to `to`
 * (undefined: not valid). Each write changes the key bytes, `valid` or
 * `overflow`, never two of them, and the key only while the slot is not valid
 * and overflows to the hash: then a read torn at any byte still finds every entry
 * the two lists share (in the slot, or in the hash, whose records of shared
 * entries stay throughout), and never finds one that neither value holds. A slot
 * that gains or loses its last entry holds no shared one and needs less care.
 * A net slot's bitmap changes with its key (while not valid), or in place under
 * the same key: torn, each byte is old or new, and a bit both lists hold is set in
 * both (it may change with `overflow` then, which only other /24s read).
 */
export function slotOperations(slot: number, to: Slot | undefined, from: Slot | undefined, map: string, unread = false): MapOperation[] {
  const key = u32Key(slot);
  const write = (held: Slot, valid: boolean, overflow: boolean): MapOperation => ({ op: "update", map, key, value: encodeSlot(held.key, valid, overflow, held.bits!) });
  if (!to && !from) return [];
  if (!to) return [write(from!, false, false)];
  // No program reads the slot yet: nothing can see a torn value, one write will do.
  if (!from && unread) return [write(to, true, to.overflow)];
  if (!from) return [write(to, false, false), write(to, true, to.overflow)];
  if (sameBytes(to.key, from.key)) return to.overflow === from.overflow && (to.bits === from.bits || sameBytes(to.bits, from.bits)) ? [] : [write(to, true, to.overflow)];
  return [
    ...(from.overflow ? [] : [write(from, true, true)]),
    write(from, false, true),
    write(to, false, true),
    write(to, true, true),
    ...(to.overflow ? [] : [write(to, true, false)]),
  ];
}

/**
 * The writes that take the index of `from` to the index of `to`, in the safe
 * order described at the top of this file. `unread`: no program reads these maps
 * yet (a firewall filled before it goes on its hook), so a new slot gets its value
 * in one write instead of two (the step only a concurrent reader needs).
 */
export function indexOperations(to: DenyIndex, from: DenyIndex, mapPin: (map: string) => string, unread = false): MapOperation[] {
  const detail: MapOperation[] = [];
  const blocks: MapOperation[] = [];
  const retire: MapOperation[] = [];
  for (const [bucket, bits] of to.v4Hosts) {
    if (!sameBytes(bits, from.v4Hosts.get(bucket))) detail.push({ op: "update", map: mapPin("fw_v4_hosts"), key: v4HostsKey(bucket), value: bits });
  }
  for (const bucket of from.v4Hosts.keys()) {
    if (!to.v4Hosts.has(bucket)) retire.push({ op: "delete", map: mapPin("fw_v4_hosts"), key: v4HostsKey(bucket) });
  }
  for (const entry of to.v6Long) {
    if (!from.v6Long.has(entry)) detail.push({ op: "update", map: mapPin("fw_v6_long"), key: encodeDenyEntry(entry).key, value: DENY_VALUE });
  }
  for (const entry of from.v6Long) {
    if (!to.v6Long.has(entry)) retire.push({ op: "delete", map: mapPin("fw_v6_long"), key: encodeDenyEntry(entry).key });
  }
  for (const [family, map, a, b] of [[4, "fw_v4_ways", to.v4Ways, from.v4Ways], [6, "fw_v6_ways", to.v6Ways, from.v6Ways]] as const) {
    for (const bucket of new Set([...a.keys(), ...b.keys()])) detail.push(...bucketOperations(family, bucket, a.get(bucket), b.get(bucket), mapPin(map), unread));
  }
  for (const slot of new Set([...to.v4NetSlots.keys(), ...from.v4NetSlots.keys()])) detail.push(...slotOperations(slot, to.v4NetSlots.get(slot), from.v4NetSlots.get(slot), mapPin("fw_v4_net_slots"), unread));
  const union = to.v6Lengths.map((b, i) => b | from.v6Lengths[i]!);
  if (!sameBytes(union, from.v6Lengths)) detail.push({ op: "update", map: mapPin("fw_v6_lengths"), key: u32Key(0), value: union });
  if (!sameBytes(union, to.v6Lengths)) retire.push({ op: "update", map: mapPin("fw_v6_lengths"), key: u32Key(0), value: to.v6Lengths });
  for (const [map, a, b] of [
    ["fw_v4_index", to.v4.states, from.v4.states],
    ["fw_v6_index", to.v6.states, from.v6.states],
  ] as const) {
    if (!a && !b) continue;
    for (let block = 0; block < INDEX_BLOCKS; block++) {
      if (blockDiffers(a, b, block)) blocks.push({ op: "update", map: mapPin(map), key: u32Key(block), value: packBlock(a, block) });
    }
  }
  return [...detail, ...blocks, ...retire];
}
