/**
 * Byte layouts of the mirror's maps, mirroring bpf/include/tc_mirror.h:
 * struct mirror_filter (80 bytes), struct mirror_config (40 bytes), the
 * per-CPU struct mirror_counter, and the classifier compiled from the filters
 * (struct mirror_head, mirror_ranges, mirror_ranges6). Addresses and masks of
 * the filter records are written as on the wire; every other number
 * little-endian (host order on x86-64 and arm64).
 */
import { formatAddress, parsePrefix } from "../cidr";
import {
  filterRecord,
  formatPortRange,
  parsePortSpec,
  PROTOCOL_NUMBERS,
  protocolNumber,
  type MirrorFilter,
  type ProtocolName,
  type TrafficMirrorCounters,
} from "./schema";
import { sumCounters } from "../counters";

export const CONFIG_MAP = "mirror_config";
export const FILTERS_MAP = "mirror_filters";
export const STATS_MAP = "mirror_stats";
export const HEADS_MAP = "mirror_heads";
export const RANGES_MAP = "mirror_ranges";
export const RANGES6_MAP = "mirror_ranges6";
export const CLASSIFIER_MAPS = [HEADS_MAP, RANGES_MAP, RANGES6_MAP] as const;
export const MAPS = [CONFIG_MAP, FILTERS_MAP, STATS_MAP, ...CLASSIFIER_MAPS] as const;

export const FILTER_SIZE = 80;
export const CONFIG_SIZE = 40;
export const HEAD_SIZE = 2128;
export const RANGES_SIZE = 1552;
export const RANGES6_SIZE = 3088;
/** MIRROR_BOUNDS: the interval ends one field of 64 filters can have. */
export const BOUNDS = 128;
/** enum mirror_range32: the mirror_ranges elements of a set, at set * 4 + field. */
export const RANGE = { SRC4: 0, DST4: 1, SPORT: 2, DPORT: 3 } as const;
/** The mirror_ranges6 elements of a set, at set * 2 + field. */
export const RANGE6 = { SRC6: 0, DST6: 1 } as const;
export const FILTER_SETS = 2;
export const SET_SLOTS = 64;

export const FILTER_FLAG = {
  IPV4: 1 << 0,
  IPV6: 1 << 1,
  PROTO: 1 << 2,
  SRC: 1 << 3,
  DST: 1 << 4,
  SPORT: 1 << 5,
  DPORT: 1 << 6,
} as const;

export const GUARD = { NONE: 0, GRE: 1, VXLAN: 2 } as const;

export const STAT = { MATCHED: 0, MIRRORED: 1, CLONE_FAILED: 2 } as const;

/** Packets of the resource's own tunnel, which the program never mirrors. */
export interface TunnelGuard {
  kind: (typeof GUARD)[keyof typeof GUARD];
  /** Canonical IP address of the collector. */
  address: string;
  /** VXLAN's UDP destination port; 0 for GRE. */
  port: number;
}

export interface MirrorConfig {
  targetIfindex: number;
  activeSet: 0 | 1;
  setLength: [number, number];
  sampleRate: number;
  guard?: TunnelGuard;
}

export const EMPTY_CONFIG: MirrorConfig = { targetIfindex: 0, activeSet: 0, setLength: [0, 0], sampleRate: 0 };

/** Map key of an array index: a little-endian u32. */
export function indexKey(index: number): Uint8Array {
  const key = new Uint8Array(4);
  new DataView(key.buffer).setUint32(0, index, true);
  return key;
}

function view(bytes: Uint8Array): DataView {
  return new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

/** The 16 address bytes (IPv4 in the first 4) and the mask of a prefix's length. */
function prefixWords(canonical: string): { family: 4 | 6; addr: Uint8Array; mask: Uint8Array } {
  const prefix = parsePrefix(canonical);
  const addr = new Uint8Array(16);
  const mask = new Uint8Array(16);
  addr.set(prefix.bytes, 0);
  for (let bit = 0; bit < prefix.prefixLength; bit++) mask[bit >> 3]! |= 0x80 >> (bit & 7);
  return { family: prefix.family, addr, mask };
}

function decodePrefix(family: 4 | 6, addr: Uint8Array, mask: Uint8Array): string {
  const width = family === 4 ? 4 : 16;
  // Leading one bits; a non-contiguous mask (written by hand) is read as its leading run.
  let length = 0;
  while (length < width * 8 && mask[length >> 3]! & (0x80 >> (length & 7))) length++;
  const prefix = parsePrefix(`${formatAddress(addr.slice(0, width))}/${length}`);
  return `${formatAddress(prefix.bytes)}/${prefix.prefixLength}`;
}

export function encodeFilter(f: MirrorFilter): Uint8Array {
  const bytes = new Uint8Array(FILTER_SIZE);
  const v = view(bytes);
  let flags = 0;
  if (f.protocol !== undefined) {
    flags |= FILTER_FLAG.PROTO;
    bytes[4] = protocolNumber(f.protocol);
  }
  const place = (canonical: string, flag: number, offset: number) => {
    const { family, addr, mask } = prefixWords(canonical);
    flags |= flag | (family === 4 ? FILTER_FLAG.IPV4 : FILTER_FLAG.IPV6);
    bytes.set(addr, offset);
    bytes.set(mask, offset + 16);
  };
  if (f.source !== undefined) place(f.source, FILTER_FLAG.SRC, 16);
  if (f.destination !== undefined) place(f.destination, FILTER_FLAG.DST, 48);
  if (f.sourcePort !== undefined) {
    const r = parsePortSpec(f.sourcePort);
    flags |= FILTER_FLAG.SPORT;
    v.setUint16(8, r.from, true);
    v.setUint16(10, r.to, true);
  }
  if (f.destinationPort !== undefined) {
    const r = parsePortSpec(f.destinationPort);
    flags |= FILTER_FLAG.DPORT;
    v.setUint16(12, r.from, true);
    v.setUint16(14, r.to, true);
  }
  v.setUint32(0, flags, true);
  return bytes;
}

export function decodeFilter(bytes: Uint8Array): MirrorFilter {
  const v = view(bytes);
  const flags = v.getUint32(0, true);
  const family: 4 | 6 = flags & FILTER_FLAG.IPV6 ? 6 : 4;
  const f: MirrorFilter = {};
  if (flags & FILTER_FLAG.PROTO) {
    const number = bytes[4]!;
    f.protocol = (Object.keys(PROTOCOL_NUMBERS) as ProtocolName[]).find((n) => PROTOCOL_NUMBERS[n] === number) ?? number;
  }
  if (flags & FILTER_FLAG.SRC) f.source = decodePrefix(family, bytes.slice(16, 32), bytes.slice(32, 48));
  if (flags & FILTER_FLAG.DST) f.destination = decodePrefix(family, bytes.slice(48, 64), bytes.slice(64, 80));
  // A family flag without an address (only written by hand) means "any address of that family".
  if (flags & (FILTER_FLAG.IPV4 | FILTER_FLAG.IPV6) && !(flags & (FILTER_FLAG.SRC | FILTER_FLAG.DST))) {
    f.source = family === 4 ? "0.0.0.0/0" : "::/0";
  }
  if (flags & FILTER_FLAG.SPORT) f.sourcePort = formatPortRange({ from: v.getUint16(8, true), to: v.getUint16(10, true) });
  if (flags & FILTER_FLAG.DPORT) f.destinationPort = formatPortRange({ from: v.getUint16(12, true), to: v.getUint16(14, true) });
  return f;
}

export function encodeConfig(c: MirrorConfig): Uint8Array {
  const bytes = new Uint8Array(CONFIG_SIZE);
  const v = view(bytes);
  v.setUint32(0, c.targetIfindex, true);
  v.setUint32(4, c.activeSet, true);
  v.setUint32(8, c.setLength[0], true);
  v.setUint32(12, c.setLength[1], true);
  v.setUint32(16, c.sampleRate, true);
  if (c.guard && c.guard.kind !== GUARD.NONE) {
    const address = parsePrefix(c.guard.address);
    bytes[20] = c.guard.kind;
    bytes[21] = address.family;
    v.setUint16(22, c.guard.port, true);
    bytes.set(address.bytes, 24);
  }
  return bytes;
}

export function decodeConfig(bytes: Uint8Array): MirrorConfig {
  const v = view(bytes);
  const config: MirrorConfig = {
    targetIfindex: v.getUint32(0, true),
    activeSet: (v.getUint32(4, true) & 1) as 0 | 1,
    setLength: [v.getUint32(8, true), v.getUint32(12, true)],
    sampleRate: v.getUint32(16, true),
  };
  const kind = bytes[20]!;
  if (kind === GUARD.GRE || kind === GUARD.VXLAN) {
    const family = bytes[21] === 6 ? 6 : 4;
    config.guard = { kind, address: formatAddress(bytes.slice(24, family === 4 ? 28 : 40)), port: v.getUint16(22, true) };
  }
  return config;
}

/** The map key of filter `index` of set `set`. */
export function filterSlot(set: 0 | 1, index: number): number {
  return set * SET_SLOTS + index;
}

export function countersOf(stats: readonly { values: Uint8Array[] }[]): TrafficMirrorCounters {
  const matched = sumCounters(stats[STAT.MATCHED]?.values ?? []);
  const mirrored = sumCounters(stats[STAT.MIRRORED]?.values ?? []);
  const failed = sumCounters(stats[STAT.CLONE_FAILED]?.values ?? []);
  return {
    matchedPackets: matched.packets,
    matchedBytes: matched.bytes,
    mirroredPackets: mirrored.packets,
    mirroredBytes: mirrored.bytes,
    cloneFailures: failed.packets,
  };
}

/** The filters of the live set, keyed as check() keys them. */
export function liveFilters(config: MirrorConfig, slots: ReadonlyMap<number, Uint8Array>): Record<string, MirrorFilter> {
  return filterRecord(liveFilterList(config, slots));
}

// ---------------------------------------------------------------- classifier

/** One set's classifier, as the program reads it (tc_mirror.h). */
export interface Classifier {
  head: Uint8Array;
  /** Indexed by RANGE. */
  ranges: Uint8Array[];
  /** Indexed by RANGE6. */
  ranges6: Uint8Array[];
}

/** Head bitmaps in struct order, each a u64 at 8 * index; proto[256] follows. */
const HEAD = { live: 0, anyPacket: 1, v4: 2, v6: 3, protoAny: 4, portsAny: 5, sportAny: 6, dportAny: 7, srcAny: 8, dstAny: 9 } as const;
const HEAD_PROTO = 10;

/** Offsets of `depth`, after bound[] and bits[]. */
export const RANGES_DEPTH = 4 * BOUNDS + 8 * (BOUNDS + 1);
export const RANGES6_DEPTH = 16 * BOUNDS + 8 * (BOUNDS + 1);

const MAX32 = 0xffffffffn;
const MAX128 = (1n << 128n) - 1n;

/** A filter's inclusive range on one field; bit = its index in the set. */
interface Span {
  bit: number;
  lo: bigint;
  hi: bigint;
}

function prefixSpan(canonical: string): { family: 4 | 6; lo: bigint; hi: bigint } {
  const prefix = parsePrefix(canonical);
  const width = prefix.family === 4 ? 32 : 128;
  let lo = 0n;
  for (const byte of prefix.bytes) lo = (lo << 8n) | BigInt(byte);
  const hostBits = BigInt(width - prefix.prefixLength);
  return { family: prefix.family, lo, hi: lo | ((1n << hostBits) - 1n) };
}

/** Cuts a field's value space at every span's ends: sorted bounds (padded with max), the bitmap of each interval, and the search depth. */
function cut(spans: readonly Span[], max: bigint): { bounds: bigint[]; bits: bigint[]; depth: number } {
  const ends = new Set<bigint>();
  for (const s of spans) {
    if (s.lo > 0n) ends.add(s.lo);
    if (s.hi < max) ends.add(s.hi + 1n);
  }
  const bounds = [...ends].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
  if (bounds.length > BOUNDS) throw new Error(`${bounds.length} interval ends on one field; the classifier holds ${BOUNDS}`);
  const bits: bigint[] = [];
  for (let j = 0; j <= bounds.length; j++) {
    const start = j === 0 ? 0n : bounds[j - 1]!;
    let b = 0n;
    for (const s of spans) if (s.lo <= start && start <= s.hi) b |= 1n << BigInt(s.bit);
    bits.push(b);
  }
  // The halving steps that cover n bounds: the smallest d with n <= 2^d - 1 (7 covers 127; the 128th has a step of its own).
  let depth = 0;
  while (depth < 7 && bounds.length > 2 ** depth - 1) depth++;
  // Values equal to max count the padding as well: those land on the last interval's bitmap.
  while (bits.length < BOUNDS + 1) bits.push(bits[bounds.length]!);
  while (bounds.length < BOUNDS) bounds.push(max);
  return { bounds, bits, depth };
}

function encodeRanges(spans: readonly Span[]): Uint8Array {
  const bytes = new Uint8Array(RANGES_SIZE);
  const v = view(bytes);
  const { bounds, bits, depth } = cut(spans, MAX32);
  bounds.forEach((b, i) => v.setUint32(4 * i, Number(b), true));
  bits.forEach((b, i) => v.setBigUint64(4 * BOUNDS + 8 * i, b, true));
  v.setUint32(RANGES_DEPTH, depth, true);
  return bytes;
}

function encodeRanges6(spans: readonly Span[]): Uint8Array {
  const bytes = new Uint8Array(RANGES6_SIZE);
  const v = view(bytes);
  const { bounds, bits, depth } = cut(spans, MAX128);
  bounds.forEach((b, i) => {
    v.setBigUint64(16 * i, b >> 64n, true);
    v.setBigUint64(16 * i + 8, b & ((1n << 64n) - 1n), true);
  });
  bits.forEach((b, i) => v.setBigUint64(16 * BOUNDS + 8 * i, b, true));
  v.setUint32(RANGES6_DEPTH, depth, true);
  return bytes;
}

/**
 * The classifier of a filter list (filter i = bit i), with exactly the
 * semantics of one filter's record (encodeFilter): every field given must
 * match; a prefix limits the filter to its family (prefixes of both families
 * match nothing); a port needs a packet with ports (TCP, UDP, SCTP, not a
 * later fragment); no field at all matches every frame, IP or not.
 */
export function compileClassifier(filters: readonly MirrorFilter[]): Classifier {
  if (filters.length > SET_SLOTS) throw new Error(`${filters.length} filters; a set holds ${SET_SLOTS}`);
  const head = new Array<bigint>(HEAD_PROTO + 256).fill(0n);
  const spans: Span[][] = [[], [], [], []];
  const spans6: Span[][] = [[], []];
  filters.forEach((f, i) => {
    const bit = 1n << BigInt(i);
    const add = (at: number) => (head[at] = head[at]! | bit);
    add(HEAD.live);
    const families = new Set<4 | 6>();
    const place = (canonical: string | undefined, field: 0 | 1, any: number) => {
      if (canonical === undefined) return add(any);
      const span = prefixSpan(canonical);
      families.add(span.family);
      (span.family === 4 ? spans[field === 0 ? RANGE.SRC4 : RANGE.DST4]! : spans6[field]!).push({ bit: i, lo: span.lo, hi: span.hi });
    };
    place(f.source, 0, HEAD.srcAny);
    place(f.destination, 1, HEAD.dstAny);
    if (!families.has(6)) add(HEAD.v4);
    if (!families.has(4)) add(HEAD.v6);
    if (f.protocol === undefined) add(HEAD.protoAny);
    else add(HEAD_PROTO + protocolNumber(f.protocol));
    const port = (spec: MirrorFilter["sourcePort"], field: number, any: number) => {
      if (spec === undefined) return add(any);
      const r = parsePortSpec(spec);
      spans[field]!.push({ bit: i, lo: BigInt(r.from), hi: BigInt(r.to) });
    };
    port(f.sourcePort, RANGE.SPORT, HEAD.sportAny);
    port(f.destinationPort, RANGE.DPORT, HEAD.dportAny);
    if (f.sourcePort === undefined && f.destinationPort === undefined) add(HEAD.portsAny);
    const conditions = [f.protocol, f.source, f.destination, f.sourcePort, f.destinationPort];
    if (conditions.every((c) => c === undefined)) add(HEAD.anyPacket);
  });
  const headBytes = new Uint8Array(HEAD_SIZE);
  const hv = view(headBytes);
  head.forEach((b, i) => hv.setBigUint64(8 * i, b, true));
  return { head: headBytes, ranges: spans.map(encodeRanges), ranges6: spans6.map(encodeRanges6) };
}

/** Key of a classifier element of set `set` in its map. */
export function classifierKey(map: (typeof CLASSIFIER_MAPS)[number], set: 0 | 1, field = 0): number {
  if (map === HEADS_MAP) return set;
  return map === RANGES_MAP ? set * 4 + field : set * 2 + field;
}

/** The live set's filter records in slot order (bit order of the classifier). */
export function liveFilterList(config: MirrorConfig, slots: ReadonlyMap<number, Uint8Array>): MirrorFilter[] {
  const set = config.activeSet;
  const length = Math.min(config.setLength[set], SET_SLOTS);
  const filters: MirrorFilter[] = [];
  for (let i = 0; i < length; i++) {
    const bytes = slots.get(filterSlot(set, i));
    if (bytes) filters.push(decodeFilter(bytes));
  }
  return filters;
}

/** Per filter: the bits of its column in every bitmap of a classifier, as one string. */
function columns(c: Classifier, count: number): string[] {
  const words: bigint[] = [];
  const collect = (bytes: Uint8Array, from: number, to: number) => {
    const v = view(bytes);
    for (let at = from; at + 8 <= to; at += 8) words.push(v.getBigUint64(at, true));
  };
  collect(c.head, 0, HEAD_SIZE);
  c.ranges.forEach((r) => collect(r, 4 * BOUNDS, RANGES_DEPTH));
  c.ranges6.forEach((r) => collect(r, 16 * BOUNDS, RANGES6_DEPTH));
  return Array.from({ length: count }, (_, i) => words.map((w) => (w >> BigInt(i)) & 1n).join(""));
}

/**
 * Drift of the classifier the program reads against the one its filter
 * records compile to: the indexes of the records it does not enforce as
 * written. Bounds that differ, or bits of filters beyond the records, leave no
 * record trustworthy: every index. A missing classifier (maps of an older
 * object, or pins not yet created) counts as all drifted.
 */
export function classifierDrift(records: readonly MirrorFilter[], actual: Classifier | undefined): Set<number> {
  const all = new Set(records.map((_, i) => i));
  if (!actual) return all;
  const expected = compileClassifier(records);
  // Bounds and depth: where the search lands.
  const same = (a: Uint8Array, b: Uint8Array, from: number, to: number) => Buffer.from(a.subarray(from, to)).equals(Buffer.from(b.subarray(from, to)));
  const sameCuts = (a: Uint8Array, b: Uint8Array, boundsEnd: number, depthAt: number) => same(a, b, 0, boundsEnd) && same(a, b, depthAt, depthAt + 4);
  if (!expected.ranges.every((r, i) => sameCuts(r, actual.ranges[i]!, 4 * BOUNDS, RANGES_DEPTH))) return all;
  if (!expected.ranges6.every((r, i) => sameCuts(r, actual.ranges6[i]!, 16 * BOUNDS, RANGES6_DEPTH))) return all;
  const want = columns(expected, SET_SLOTS);
  const have = columns(actual, SET_SLOTS);
  const drifted = new Set<number>();
  for (let i = 0; i < SET_SLOTS; i++) {
    if (want[i] === have[i]) continue;
    if (i >= records.length) return all;
    drifted.add(i);
  }
  return drifted;
}

/** A set's classifier out of map dumps (entries keyed by little-endian u32 index); undefined when an element is missing. */
export function classifierOf(set: 0 | 1, dumps: Record<(typeof CLASSIFIER_MAPS)[number], ReadonlyMap<number, Uint8Array> | undefined>): Classifier | undefined {
  const head = dumps[HEADS_MAP]?.get(classifierKey(HEADS_MAP, set));
  const ranges = Object.values(RANGE).map((f) => dumps[RANGES_MAP]?.get(classifierKey(RANGES_MAP, set, f)));
  const ranges6 = Object.values(RANGE6).map((f) => dumps[RANGES6_MAP]?.get(classifierKey(RANGES6_MAP, set, f)));
  if (!head || ranges.some((r) => !r) || ranges6.some((r) => !r)) return undefined;
  return { head, ranges: ranges as Uint8Array[], ranges6: ranges6 as Uint8Array[] };
}
