/**
 * Byte layouts of the TC policy's maps, mirroring bpf/include/tc_policy.h.
 * LAYOUTS is the single statement of every struct's size and member offsets
 * on this side; test/kernel/tcPolicy.test.ts compares it with the BTF of the
 * compiled object, and every encoder below writes through it. Integers the
 * kernel compares with packet bytes (ports) are big-endian; the rest is
 * little-endian, as on the hosts we support (x86-64, arm64).
 */
import { formatAddress, formatPrefix, parsePrefix, type Family, type Prefix } from "../cidr";
import type { Action, Direction, PolicyRule, Protocol } from "./schema";

/** Rule indexes (TCPOL_MAX_RULES), ingress and egress together. */
export const MAX_RULES = 1024;
export const RULE_WORDS = MAX_RULES / 64;
export const L4_MAX_ENTRIES = 32768;
export const ADDR_MAX_ENTRIES = 2048;
export const FLOW_MAX_ENTRIES = 262144;

export const PROGRAMS: Record<Direction, string> = { ingress: "tc_policy_ingress", egress: "tc_policy_egress" };

export const MAPS = {
  config: "tcpol_cfg",
  rules: "tcpol_rules",
  l4: "tcpol_l4",
  src4: "tcpol_src4",
  src6: "tcpol_src6",
  dst4: "tcpol_dst4",
  dst6: "tcpol_dst6",
  flows: "tcpol_flows",
  stats: "tcpol_stats",
  hits: "tcpol_hits",
  peer4: "tcpol_peer4",
} as const;

/** The tries that carry rule bitmaps. */
export const TRIE_MAPS = [MAPS.l4, MAPS.src4, MAPS.src6, MAPS.dst4, MAPS.dst6] as const;
export type TrieMap = (typeof TRIE_MAPS)[number];

/** Struct sizes and member offsets of bpf/include/tc_policy.h. */
export const LAYOUTS = {
  tcpol_config: {
    size: 176,
    members: { tcp_established_ns: 0, tcp_transitory_ns: 8, other_ns: 16, ingress_default: 24, egress_default: 25, stateful: 26, failsafe_family: 27, failsafe_port: 28, skip_tries: 30, pad: 31, failsafe_addr: 32, deny_mask: 48 },
  },
  tcpol_rule: {
    size: 44,
    members: { action: 0, direction: 1, protocol: 2, family: 3, port_lo: 4, port_hi: 6, src_len: 8, dst_len: 9, flags: 10, pad: 11, src: 12, dst: 28 },
  },
  tcpol_l4_key: { size: 8, members: { prefixlen: 0, direction: 4, protocol: 5, port: 6 } },
  tcpol_v4_prefix: { size: 8, members: { prefixlen: 0, addr: 4 } },
  tcpol_v6_prefix: { size: 20, members: { prefixlen: 0, addr: 4 } },
  tcpol_rule_set: { size: 128, members: { bits: 0 } },
  tcpol_peer4: { size: 2176, members: { touched: 0, any: 2048 } },
  tcpol_flow_key: { size: 40, members: { local: 0, remote: 16, local_port: 32, remote_port: 34, protocol: 36, family: 37, pad: 38 } },
  tcpol_flow: { size: 32, members: { last_seen_ns: 0, state: 8, flags: 9, pad: 10, reserved: 16 } },
  tcpol_counter: { size: 16, members: { packets: 0, bytes: 8 } },
} as const;

const C = LAYOUTS.tcpol_config.members;
const R = LAYOUTS.tcpol_rule.members;
const L = LAYOUTS.tcpol_l4_key.members;
const FK = LAYOUTS.tcpol_flow_key.members;
const FV = LAYOUTS.tcpol_flow.members;

export const DIRECTION_CODE: Record<Direction, number> = { ingress: 0, egress: 1 };
export const ACTION_CODE: Record<Action, number> = { allow: 1, deny: 2 };
/** tcpol_rule.protocol; the tries use IP protocol numbers (icmp: 1 and 58). */
export const PROTOCOL_CODE: Record<Protocol, number> = { any: 0, icmp: 1, tcp: 6, udp: 17 };
export const IPPROTO = { ICMP: 1, TCP: 6, UDP: 17, ICMPV6: 58 } as const;

/** Indexes of tcpol_stats (enum tcpol_stat). */
export const STAT = {
  ingressAllowed: 0,
  ingressDenied: 1,
  egressAllowed: 2,
  egressDenied: 3,
  flowsCreated: 4,
  flowsExpired: 5,
  flowsReset: 6,
} as const;
export const STAT_COUNT = 7;

const view = (b: Uint8Array) => new DataView(b.buffer, b.byteOffset, b.byteLength);

function invert<K extends string>(record: Record<K, number>): Map<number, K> {
  return new Map(Object.entries(record).map(([k, v]) => [v as number, k as K]));
}
const DIRECTION_OF = invert(DIRECTION_CODE);
const ACTION_OF = invert(ACTION_CODE);
const PROTOCOL_OF = invert(PROTOCOL_CODE);

function addressBytes16(bytes: Uint8Array): Uint8Array {
  const out = new Uint8Array(16);
  out.set(bytes);
  return out;
}

function u32le(value: number): Uint8Array {
  const out = new Uint8Array(4);
  view(out).setUint32(0, value, true);
  return out;
}

export function u32Key(index: number): Uint8Array {
  return u32le(index);
}

// ------------------------------------------------------------ config

export interface PolicyConfig {
  tcpEstablishedNs: bigint;
  tcpTransitoryNs: bigint;
  otherNs: bigint;
  ingressDefault: Action;
  egressDefault: Action;
  stateful: boolean;
  /** TCP port never dropped to or from `failsafePeer` (any peer when absent); 0: none. */
  failsafePort: number;
  /** An address (no prefix length). */
  failsafePeer?: string;
  /** Indexes of the deny rules. */
  denyRules: ReadonlySet<number>;
  /** Directions whose host-side trie the program skips (tcpol_config.skip_tries, SKIP_HOST_TRIE bits): derived from the rules, like denyRules. */
  skipTries: number;
}

/** tcpol_config.skip_tries: no rule of the direction names the host's own side (ingress `to`, egress `from`): TCPOL_SKIP_HOST in tc_policy.h. */
export const SKIP_HOST_TRIE = { ingress: 1 << 0, egress: 1 << 1 } as const;
/** tcpol_config.skip_tries: tcpol_peer4 holds the filters of the IPv4 peer tries (TCPOL_PEER4_FILTER). */
export const PEER4_FILTER = 1 << 2;
/** tcpol_peer4's tries: each direction's peer (ingress: source; egress: destination); key trie * PEER4_PARTS + part. */
export const PEER4_KEY = { tcpol_src4: 0, tcpol_dst4: 1 } as const;
/** TCPOL_PEER4_PARTS: the /16s of a trie's filter in parts of 16384 (a value fits one bpftool batch line). */
export const PEER4_PARTS = 4;
export const PEER4_PART_BUCKETS = 65536 / PEER4_PARTS;

/**
 * A tcpol_peer4 value: of the /16s in its part, those (by number within the part) that
 * an entry of the trie other than /0 overlaps, and the rules of the trie's /0 entry.
 */
export function encodePeer4(touched: Iterable<number>, any: Iterable<number>): Uint8Array {
  const out = new Uint8Array(LAYOUTS.tcpol_peer4.size);
  // touched[i / 64] >> (i % 64), u64 words in little-endian order: byte i / 8, bit i % 8.
  for (const i of touched) out[i >> 3]! |= 1 << (i & 7);
  out.set(encodeRuleSet(any), LAYOUTS.tcpol_peer4.members.any);
  return out;
}

export const ZERO_CONFIG: PolicyConfig = {
  tcpEstablishedNs: 0n,
  tcpTransitoryNs: 0n,
  otherNs: 0n,
  ingressDefault: "allow",
  egressDefault: "allow",
  stateful: false,
  failsafePort: 0,
  denyRules: new Set(),
  skipTries: 0,
};

export function encodeConfig(config: PolicyConfig): Uint8Array {
  const out = new Uint8Array(LAYOUTS.tcpol_config.size);
  const v = view(out);
  v.setBigUint64(C.tcp_established_ns, config.tcpEstablishedNs, true);
  v.setBigUint64(C.tcp_transitory_ns, config.tcpTransitoryNs, true);
  v.setBigUint64(C.other_ns, config.otherNs, true);
  out[C.ingress_default] = config.ingressDefault === "deny" ? 1 : 0;
  out[C.egress_default] = config.egressDefault === "deny" ? 1 : 0;
  out[C.stateful] = config.stateful ? 1 : 0;
  v.setUint16(C.failsafe_port, config.failsafePort, false);
  if (config.failsafePeer !== undefined) {
    const peer = parsePrefix(config.failsafePeer);
    out[C.failsafe_family] = peer.family;
    out.set(peer.bytes, C.failsafe_addr);
  }
  out.set(encodeRuleSet(config.denyRules), C.deny_mask);
  out[C.skip_tries] = config.skipTries;
  return out;
}

export function decodeConfig(bytes: Uint8Array): PolicyConfig {
  const v = view(bytes);
  const family = bytes[C.failsafe_family];
  const config: PolicyConfig = {
    tcpEstablishedNs: v.getBigUint64(C.tcp_established_ns, true),
    tcpTransitoryNs: v.getBigUint64(C.tcp_transitory_ns, true),
    otherNs: v.getBigUint64(C.other_ns, true),
    ingressDefault: bytes[C.ingress_default] ? "deny" : "allow",
    egressDefault: bytes[C.egress_default] ? "deny" : "allow",
    stateful: bytes[C.stateful] !== 0,
    failsafePort: v.getUint16(C.failsafe_port, false),
    denyRules: new Set(decodeRuleSet(bytes.subarray(C.deny_mask, C.deny_mask + LAYOUTS.tcpol_rule_set.size))),
    skipTries: bytes[C.skip_tries]!,
  };
  if (family === 4 || family === 6) {
    config.failsafePeer = formatAddress(bytes.slice(C.failsafe_addr, C.failsafe_addr + (family === 4 ? 4 : 16)));
  }
  return config;
}

/** Seconds (as in the inputs) to the nanoseconds of the config map. */
export function secondsToNs(seconds: number): bigint {
  return BigInt(Math.round(seconds * 1e9));
}

// ------------------------------------------------------------ rule descriptors

const HAS_SRC = 0x1;
const HAS_DST = 0x2;

/** The family a rule is limited to by its prefixes; 0 when it applies to both. */
export function ruleFamily(rule: PolicyRule): 0 | Family {
  const cidr = rule.from ?? rule.to;
  return cidr === undefined ? 0 : parsePrefix(cidr).family;
}

export function encodeRule(rule: PolicyRule): Uint8Array {
  const out = new Uint8Array(LAYOUTS.tcpol_rule.size);
  const v = view(out);
  out[R.action] = ACTION_CODE[rule.action];
  out[R.direction] = DIRECTION_CODE[rule.direction];
  out[R.protocol] = PROTOCOL_CODE[rule.protocol];
  out[R.family] = ruleFamily(rule);
  if (rule.ports) {
    v.setUint16(R.port_lo, rule.ports[0], true);
    v.setUint16(R.port_hi, rule.ports[1], true);
  }
  let flags = 0;
  if (rule.from) {
    const p = parsePrefix(rule.from);
    out[R.src_len] = p.prefixLength;
    out.set(p.bytes, R.src);
    flags |= HAS_SRC;
  }
  if (rule.to) {
    const p = parsePrefix(rule.to);
    out[R.dst_len] = p.prefixLength;
    out.set(p.bytes, R.dst);
    flags |= HAS_DST;
  }
  out[R.flags] = flags;
  return out;
}

export const EMPTY_RULE = new Uint8Array(LAYOUTS.tcpol_rule.size);

/** A rule slot as loaded, or undefined for a free slot. Throws on bytes no encoder writes. */
export function decodeRule(bytes: Uint8Array): PolicyRule | undefined {
  if (bytes[R.action] === 0) return undefined;
  const v = view(bytes);
  const action = ACTION_OF.get(bytes[R.action]!);
  const direction = DIRECTION_OF.get(bytes[R.direction]!);
  const protocol = PROTOCOL_OF.get(bytes[R.protocol]!);
  if (!action || !direction || !protocol) throw new Error(`tcpol_rules holds a slot no version of bpfleet wrote: ${Buffer.from(bytes).toString("hex")}`);
  const family = bytes[R.family] === 6 ? 6 : 4;
  const width = family === 4 ? 4 : 16;
  const rule: PolicyRule = { direction, action, protocol };
  const low = v.getUint16(R.port_lo, true);
  const high = v.getUint16(R.port_hi, true);
  if (low !== 0 || high !== 0) rule.ports = [low, high];
  const flags = bytes[R.flags]!;
  const prefix = (offset: number, length: number) => formatPrefix(parsePrefix(`${formatAddress(bytes.slice(offset, offset + width))}/${length}`));
  if (flags & HAS_SRC) rule.from = prefix(R.src, bytes[R.src_len]!);
  if (flags & HAS_DST) rule.to = prefix(R.dst, bytes[R.dst_len]!);
  return rule;
}

// ------------------------------------------------------------ trie keys and values

/** A tcpol_l4 key: prefixLength counts bits after the prefixlen field (8 direction, 16 protocol, up to 32 port). */
export interface L4Prefix {
  direction: Direction;
  protocol: number;
  port: number;
  prefixLength: number;
}

export function encodeL4Key(p: L4Prefix): Uint8Array {
  const out = new Uint8Array(LAYOUTS.tcpol_l4_key.size);
  const v = view(out);
  v.setUint32(L.prefixlen, p.prefixLength, true);
  out[L.direction] = DIRECTION_CODE[p.direction];
  out[L.protocol] = p.prefixLength > 8 ? p.protocol : 0;
  const portBits = Math.max(0, p.prefixLength - 16);
  const mask = portBits === 0 ? 0 : (0xffff << (16 - portBits)) & 0xffff;
  v.setUint16(L.port, p.port & mask, false);
  return out;
}

export function decodeL4Key(bytes: Uint8Array): L4Prefix {
  const v = view(bytes);
  const direction = DIRECTION_OF.get(bytes[L.direction]!);
  if (!direction) throw new Error(`tcpol_l4 key with unknown direction ${bytes[L.direction]}`);
  return { prefixLength: v.getUint32(L.prefixlen, true), direction, protocol: bytes[L.protocol]!, port: v.getUint16(L.port, false) };
}

/** The key of an address trie (tcpol_src4/6, tcpol_dst4/6): little-endian prefix length, then the network address. */
export function encodePrefixKey(prefix: Prefix): Uint8Array {
  const key = new Uint8Array(4 + prefix.bytes.length);
  view(key).setUint32(0, prefix.prefixLength, true);
  key.set(prefix.bytes, 4);
  return key;
}

export function decodePrefixKey(key: Uint8Array): string {
  const length = view(key).getUint32(0, true);
  // Normalise in case someone wrote a key with host bits set by hand.
  return formatPrefix(parsePrefix(`${formatAddress(key.slice(4))}/${length}`));
}

/** A struct tcpol_rule_set: bit i of little-endian word i / 64, i.e. byte i / 8, bit i % 8. */
export function encodeRuleSet(indexes: Iterable<number>): Uint8Array {
  const out = new Uint8Array(LAYOUTS.tcpol_rule_set.size);
  for (const i of indexes) {
    if (!Number.isInteger(i) || i < 0 || i >= MAX_RULES) throw new Error(`rule index ${i} is outside 0..${MAX_RULES - 1}`);
    out[i >> 3]! |= 1 << (i & 7);
  }
  return out;
}

export function decodeRuleSet(bytes: Uint8Array): number[] {
  const out: number[] = [];
  for (let i = 0; i < bytes.length * 8; i++) if (bytes[i >> 3]! & (1 << (i & 7))) out.push(i);
  return out;
}

// ------------------------------------------------------------ flows

export type FlowState = "new" | "established" | "closing";
const FLOW_STATES: FlowState[] = ["new", "established", "closing"];

export const FLOW_FLAG = {
  originEgress: 0x01,
  originIngress: 0x02,
  seenEgress: 0x04,
  seenIngress: 0x08,
  finEgress: 0x10,
  finIngress: 0x20,
} as const;

export interface FlowKey {
  family: Family;
  protocol: number;
  /** Addresses without prefix length. */
  local: string;
  remote: string;
  localPort: number;
  remotePort: number;
}

export interface FlowValue {
  lastSeenNs: bigint;
  state: FlowState;
  flags: number;
}

export function encodeFlowKey(k: FlowKey): Uint8Array {
  const out = new Uint8Array(LAYOUTS.tcpol_flow_key.size);
  const v = view(out);
  out.set(addressBytes16(parsePrefix(k.local).bytes), FK.local);
  out.set(addressBytes16(parsePrefix(k.remote).bytes), FK.remote);
  v.setUint16(FK.local_port, k.localPort, false);
  v.setUint16(FK.remote_port, k.remotePort, false);
  out[FK.protocol] = k.protocol;
  out[FK.family] = k.family;
  return out;
}

export function decodeFlowKey(bytes: Uint8Array): FlowKey {
  const v = view(bytes);
  const family = bytes[FK.family] === 6 ? 6 : 4;
  const width = family === 4 ? 4 : 16;
  return {
    family,
    protocol: bytes[FK.protocol]!,
    local: formatAddress(bytes.slice(FK.local, FK.local + width)),
    remote: formatAddress(bytes.slice(FK.remote, FK.remote + width)),
    localPort: v.getUint16(FK.local_port, false),
    remotePort: v.getUint16(FK.remote_port, false),
  };
}

/** The reserved 16 bytes (the timer of versions before lazy expiry) stay zero. */
export function encodeFlowValue(f: FlowValue): Uint8Array {
  const out = new Uint8Array(LAYOUTS.tcpol_flow.size);
  view(out).setBigUint64(FV.last_seen_ns, f.lastSeenNs, true);
  out[FV.state] = FLOW_STATES.indexOf(f.state);
  out[FV.flags] = f.flags;
  return out;
}

export function decodeFlowValue(bytes: Uint8Array): FlowValue {
  return {
    lastSeenNs: view(bytes).getBigUint64(FV.last_seen_ns, true),
    state: FLOW_STATES[bytes[FV.state]!] ?? "new",
    flags: bytes[FV.flags]!,
  };
}

// ------------------------------------------------------------ counters

/** Sums a per-CPU __u64 (tcpol_hits) over CPUs. */
export function sumU64(perCpu: readonly Uint8Array[]): number {
  let total = 0n;
  for (const value of perCpu) total += view(value).getBigUint64(0, true);
  return Number(total);
}
