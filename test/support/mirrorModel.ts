/**
 * The TrafficMirror filter semantics written out directly, one filter at a
 * time (README, "TrafficMirror"; provider/trafficMirror/schema.ts), and
 * seeded random filter lists and packets to hold the classifier against it:
 * test/unit/trafficMirrorClassifier.test.ts (the compiled bytes, read the way
 * the program reads them) and test/kernel/trafficMirror.test.ts (the program).
 */
import { parsePrefix } from "../../provider/cidr";
import { parsePortSpec, protocolNumber, filterSchema, type MirrorFilter } from "../../provider/trafficMirror/schema";

/** What a filter can look at in a packet. */
export interface ModelPacket {
  /** 0: not IP. */
  family: 0 | 4 | 6;
  /** The upper-layer protocol; undefined when IPv6 extension headers could not be walked. */
  protocol?: number;
  src?: string;
  dst?: string;
  /** Present for TCP, UDP and SCTP, not for a later fragment. */
  sport?: number;
  dport?: number;
}

function addressBytes(address: string): { family: 4 | 6; bytes: Uint8Array } {
  const p = parsePrefix(address);
  return { family: p.family, bytes: p.bytes };
}

function inPrefix(address: string | undefined, prefix: string): boolean {
  if (address === undefined) return false;
  const a = addressBytes(address);
  const p = parsePrefix(prefix);
  if (a.family !== p.family) return false;
  for (let bit = 0; bit < p.prefixLength; bit++) {
    const mask = 0x80 >> (bit & 7);
    if ((a.bytes[bit >> 3]! & mask) !== (p.bytes[bit >> 3]! & mask)) return false;
  }
  return true;
}

function inRange(port: number | undefined, spec: MirrorFilter["sourcePort"]): boolean {
  if (port === undefined || spec === undefined) return false;
  const r = parsePortSpec(spec);
  return r.from <= port && port <= r.to;
}

/** One filter: every field given must match; no field at all matches every frame. */
export function filterMatches(f: MirrorFilter, p: ModelPacket): boolean {
  const given = [f.protocol, f.source, f.destination, f.sourcePort, f.destinationPort].some((x) => x !== undefined);
  if (!given) return true;
  if (p.family === 0) return false;
  if (f.protocol !== undefined && p.protocol !== protocolNumber(f.protocol)) return false;
  if (f.source !== undefined && !inPrefix(p.src, f.source)) return false;
  if (f.destination !== undefined && !inPrefix(p.dst, f.destination)) return false;
  if (f.sourcePort !== undefined && !inRange(p.sport, f.sourcePort)) return false;
  if (f.destinationPort !== undefined && !inRange(p.dport, f.destinationPort)) return false;
  return true;
}

/** Filters are ORed; an empty list mirrors everything. */
export function listMatches(filters: readonly MirrorFilter[], p: ModelPacket): boolean {
  return filters.length === 0 || filters.some((f) => filterMatches(f, p));
}

// Pools small enough that random filters and packets meet: nested prefixes
// around a few addresses, port ranges around a few ports, every prefix length.
const V4_BASES = ["10.1.2.3", "10.1.200.9", "192.0.2.77", "0.0.0.0", "255.255.255.255"];
const V6_BASES = ["2001:db8:1:2::3", "2001:db8:1:ff00::9", "fe80::1", "::", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"];
const PORTS = [0, 1, 53, 80, 443, 8080, 65534, 65535];
const PROTOCOLS = ["tcp", "udp", "sctp", "icmp", "icmpv6", 47, 255, 0] as const;
const PORT_PROTOCOLS = ["tcp", "udp", "sctp"] as const;
const IPV6_EXTENSION_HEADERS = [0, 43, 44, 51, 60];

type Random = () => number;
const pick = <T>(rnd: Random, xs: readonly T[]): T => xs[Math.floor(rnd() * xs.length)]!;
const chance = (rnd: Random, p: number) => rnd() < p;

function prefixOf(rnd: Random, family: 4 | 6): string {
  const base = pick(rnd, family === 4 ? V4_BASES : V6_BASES);
  const max = family === 4 ? 32 : 128;
  // Mostly lengths near the ones people write, sometimes any length 0..max.
  const length = chance(rnd, 0.5) ? Math.floor(rnd() * (max + 1)) : pick(rnd, family === 4 ? [8, 16, 24, 31, 32] : [32, 48, 64, 127, 128]);
  const p = parsePrefix(`${base}/${length}`);
  return `${p.family === 4 ? Array.from(p.bytes).join(".") : formatV6(p.bytes)}/${length}`;
}

function formatV6(bytes: Uint8Array): string {
  const words: string[] = [];
  for (let i = 0; i < 16; i += 2) words.push(((bytes[i]! << 8) | bytes[i + 1]!).toString(16));
  return words.join(":");
}

function portSpec(rnd: Random): number | string {
  const a = pick(rnd, PORTS) + (chance(rnd, 0.3) ? 1 : 0);
  const port = Math.min(a, 65535);
  if (chance(rnd, 0.5)) return port;
  const b = Math.min(65535, port + Math.floor(rnd() * (chance(rnd, 0.5) ? 10 : 70000)));
  return b === port ? port : `${port}-${b}`;
}

/** A random valid filter (filterSchema accepts it) with at least one field. */
export function randomFilter(rnd: Random): MirrorFilter {
  for (;;) {
    const family: 4 | 6 = chance(rnd, 0.5) ? 4 : 6;
    const raw: Record<string, unknown> = {};
    if (chance(rnd, 0.5)) raw.source = prefixOf(rnd, family);
    if (chance(rnd, 0.4)) raw.destination = prefixOf(rnd, family);
    const ports = chance(rnd, 0.5);
    if (ports) {
      if (chance(rnd, 0.5)) raw.sourcePort = portSpec(rnd);
      if (chance(rnd, 0.7)) raw.destinationPort = portSpec(rnd);
      if (chance(rnd, 0.6)) raw.protocol = pick(rnd, PORT_PROTOCOLS);
    } else if (chance(rnd, 0.6)) {
      raw.protocol = pick(rnd, PROTOCOLS);
    }
    if (Object.keys(raw).length === 0) continue; // matches everything: randomFilters adds those on request
    const parsed = filterSchema.safeParse(raw);
    if (parsed.success) return parsed.data;
  }
}

/** Up to `max` distinct random filters (a rare empty filter, which matches everything, only when `allowEmpty`). */
export function randomFilters(rnd: Random, count: number, allowEmpty = false): MirrorFilter[] {
  const out = new Map<string, MirrorFilter>();
  while (out.size < count) {
    const f = allowEmpty && chance(rnd, 0.03) ? {} : randomFilter(rnd);
    out.set(JSON.stringify(f), f);
  }
  return [...out.values()];
}

function addressNear(rnd: Random, family: 4 | 6, filters: readonly MirrorFilter[]): string {
  // A filter's prefix edge (first or last address, or one outside it), or a pool address.
  const prefixes = filters.flatMap((f) => [f.source, f.destination]).filter((p): p is string => p !== undefined && parsePrefix(p).family === family);
  if (prefixes.length && chance(rnd, 0.7)) {
    const p = parsePrefix(pick(rnd, prefixes));
    const width = family === 4 ? 32 : 128;
    let n = 0n;
    for (const b of p.bytes) n = (n << 8n) | BigInt(b);
    const size = 1n << BigInt(width - p.prefixLength);
    const max = (1n << BigInt(width)) - 1n;
    const candidates = [n, n + size - 1n, n - 1n, n + size, n + size / 2n].filter((x) => x >= 0n && x <= max);
    return fromBigint(pick(rnd, candidates), family);
  }
  return pick(rnd, family === 4 ? V4_BASES : V6_BASES);
}

function fromBigint(n: bigint, family: 4 | 6): string {
  const width = family === 4 ? 4 : 16;
  const bytes = new Uint8Array(width);
  for (let i = width - 1; i >= 0; i--) {
    bytes[i] = Number(n & 0xffn);
    n >>= 8n;
  }
  return family === 4 ? Array.from(bytes).join(".") : formatV6(bytes);
}

function portNear(rnd: Random, filters: readonly MirrorFilter[]): number {
  const specs = filters.flatMap((f) => [f.sourcePort, f.destinationPort]).filter((s) => s !== undefined);
  if (specs.length && chance(rnd, 0.7)) {
    const r = parsePortSpec(pick(rnd, specs));
    return Math.max(0, Math.min(65535, pick(rnd, [r.from, r.to, r.from - 1, r.to + 1])));
  }
  return pick(rnd, PORTS);
}

/** A random packet, biased towards the edges of the filters' prefixes and ranges. */
export function randomPacket(rnd: Random, filters: readonly MirrorFilter[]): ModelPacket {
  if (chance(rnd, 0.05)) return { family: 0 };
  const family: 4 | 6 = chance(rnd, 0.5) ? 4 : 6;
  const protocols = filters.map((f) => f.protocol).filter((p) => p !== undefined).map((p) => protocolNumber(p));
  let protocol = protocols.length && chance(rnd, 0.6) ? pick(rnd, protocols) : pick(rnd, [6, 17, 132, 1, 58, 47]);
  // In IPv6 these numbers are extension headers, which the program walks past (a case of its own).
  if (family === 6 && IPV6_EXTENSION_HEADERS.includes(protocol)) protocol = 17;
  const p: ModelPacket = { family, protocol, src: addressNear(rnd, family, filters), dst: addressNear(rnd, family, filters) };
  if ([6, 17, 132].includes(protocol) && chance(rnd, 0.9)) {
    p.sport = portNear(rnd, filters);
    p.dport = portNear(rnd, filters);
  }
  return p;
}
