/**
 * Byte layouts of the mirror's maps, mirroring bpf/include/tc_mirror.h:
 * struct mirror_filter (80 bytes), struct mirror_config (40 bytes) and the
 * per-CPU struct mirror_counter. Addresses and masks are written as on the wire;
 * every other number little-endian (host order on x86-64 and arm64).
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
export const MAPS = [CONFIG_MAP, FILTERS_MAP, STATS_MAP] as const;

export const FILTER_SIZE = 80;
export const CONFIG_SIZE = 40;
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
  const set = config.activeSet;
  const length = Math.min(config.setLength[set], SET_SLOTS);
  const filters: MirrorFilter[] = [];
  for (let i = 0; i < length; i++) {
    const bytes = slots.get(filterSlot(set, i));
    if (bytes) filters.push(decodeFilter(bytes));
  }
  return filterRecord(filters);
}
