/**
 * Pure planning: from the rules a policy declares and what a host's maps hold,
 * the exact map writes, in an order that keeps every intermediate state sound.
 *
 * Each rule owns a bit index; the tries map a packet field to the bitmap of
 * rules it matches (bpf/include/tc_policy.h). A rule keeps its index for as
 * long as it exists, so adding or removing one rewrites only the entries
 * whose bitmaps change. An update runs in phases:
 *
 *   A  new rules get indexes no loaded rule holds; their deny bits and
 *      descriptors are written first (and any trie skip they forbid turned
 *      off: skipTriesOf), then the tries gain their bits;
 *   B  removed rules' bits leave the tries, then their descriptors and hit
 *      counters are cleared;
 *   C  only when the 1024 indexes run short: new rules that reuse an index
 *      freed in B, written like A;
 *   and last the defaults, timeouts, failsafe and the trie skips the final
 *   rules allow.
 *
 * Within a phase, a bit set in an entry always means its rule really matches
 * that field (the entry is from the old or the new rule set, both of which
 * contain the rule), so a half-applied batch can miss a changing rule but can
 * never combine pieces of two rules into one that matches something neither
 * does; rules present before and after never stop matching. Defaults change
 * after the rules, so a policy that switches to default-deny has its allow
 * rules in place first.
 */
import { parsePrefix, type Family, type Prefix } from "../cidr";
import type { MapOperation } from "../remote/mapOperations";
import {
  decodeConfig,
  decodeL4Key,
  decodePrefixKey,
  decodeRule,
  decodeRuleSet,
  EMPTY_RULE,
  encodeConfig,
  encodeL4Key,
  encodePeer4,
  encodePrefixKey,
  encodeRule,
  encodeRuleSet,
  IPPROTO,
  MAPS,
  MAX_RULES,
  PEER4_FILTER,
  PEER4_KEY,
  PEER4_PART_BUCKETS,
  PEER4_PARTS,
  PROTOCOL_CODE,
  ruleFamily,
  secondsToNs,
  SKIP_HOST_TRIE,
  TRIE_MAPS,
  u32Key,
  ZERO_CONFIG,
  type L4Prefix,
  type PolicyConfig,
  type TrieMap,
} from "./codec";
import { ruleId, ruleText, type Action, type Direction, type PolicyRule, type TcPolicyInputs } from "./schema";

export interface IndexedRule {
  index: number;
  rule: PolicyRule;
}

// ------------------------------------------------------------ rule → trie prefixes

/** The aligned power-of-two blocks that cover [low, high] exactly: at most 30 for any range. */
export function portBlocks(low: number, high: number): { port: number; prefixBits: number }[] {
  const blocks: { port: number; prefixBits: number }[] = [];
  let start = low;
  while (start <= high) {
    let size = start === 0 ? 65536 : start & -start;
    while (start + size - 1 > high) size >>= 1;
    blocks.push({ port: start, prefixBits: 16 - Math.log2(size) });
    start += size;
  }
  return blocks;
}

/** The families a rule applies to. */
export function ruleFamilies(rule: PolicyRule): Family[] {
  const family = ruleFamily(rule);
  return family === 0 ? [4, 6] : [family];
}

/** The tcpol_l4 prefixes of a rule: direction only (any), protocol, or protocol and port blocks. */
export function l4Prefixes(rule: PolicyRule): L4Prefix[] {
  const direction = rule.direction;
  if (rule.protocol === "any") return [{ direction, protocol: 0, port: 0, prefixLength: 8 }];
  if (rule.protocol === "icmp") {
    return ruleFamilies(rule).map((f) => ({ direction, protocol: f === 4 ? IPPROTO.ICMP : IPPROTO.ICMPV6, port: 0, prefixLength: 16 }));
  }
  const protocol = PROTOCOL_CODE[rule.protocol];
  if (!rule.ports) return [{ direction, protocol, port: 0, prefixLength: 16 }];
  return portBlocks(rule.ports[0], rule.ports[1]).map((b) => ({ direction, protocol, port: b.port, prefixLength: 16 + b.prefixBits }));
}

const ANY: Record<Family, string> = { 4: "0.0.0.0/0", 6: "::/0" };

function truncate(prefix: Prefix, length: number): Prefix {
  const bytes = Uint8Array.from(prefix.bytes);
  for (let bit = length; bit < bytes.length * 8; bit++) bytes[bit >> 3]! &= ~(0x80 >> (bit & 7));
  return { family: prefix.family, bytes, prefixLength: length };
}

const hex = (b: Uint8Array) => Buffer.from(b).toString("hex");

// ------------------------------------------------------------ trie contents

export interface TrieEntry {
  key: Uint8Array;
  rules: ReadonlySet<number>;
}

/** What the five rule tries hold (or should hold): per map, entries by key hex. */
export type TrieContents = Map<TrieMap, Map<string, TrieEntry>>;

function emptyContents(): TrieContents {
  return new Map(TRIE_MAPS.map((m) => [m, new Map<string, TrieEntry>()]));
}

/**
 * The entries of the tries for a set of indexed rules. An entry's bitmap holds
 * every rule with a prefix that contains the entry's prefix: prefixes containing
 * one value are nested, so the longest entry matching a packet field carries
 * exactly the rules that match it.
 */
export function trieContents(rules: readonly IndexedRule[]): TrieContents {
  const contents = emptyContents();
  // Per map: key hex of each rule prefix → the rules that have it.
  const owners = new Map<TrieMap, Map<string, { key: Uint8Array; rules: Set<number>; ancestors: string[] }>>(TRIE_MAPS.map((m) => [m, new Map()]));
  const own = (map: TrieMap, key: Uint8Array, ancestors: () => string[], index: number) => {
    const byKey = owners.get(map)!;
    const k = hex(key);
    let entry = byKey.get(k);
    if (!entry) byKey.set(k, (entry = { key, rules: new Set(), ancestors: ancestors() }));
    entry.rules.add(index);
  };
  for (const { index, rule } of rules) {
    for (const l4 of l4Prefixes(rule)) {
      const ancestors = () => Array.from({ length: l4.prefixLength - 7 }, (_, i) => hex(encodeL4Key({ ...l4, prefixLength: 8 + i })));
      own(MAPS.l4, encodeL4Key(l4), ancestors, index);
    }
    for (const family of ruleFamilies(rule)) {
      for (const [side, cidr] of [["src", rule.from], ["dst", rule.to]] as const) {
        const prefix = parsePrefix(cidr ?? ANY[family]);
        const ancestors = () => Array.from({ length: prefix.prefixLength + 1 }, (_, l) => hex(encodePrefixKey(truncate(prefix, l))));
        own(`tcpol_${side}${family}` as TrieMap, encodePrefixKey(prefix), ancestors, index);
      }
    }
  }
  for (const [map, byKey] of owners) {
    const out = contents.get(map)!;
    for (const [k, entry] of byKey) {
      const bits = new Set<number>();
      for (const a of entry.ancestors) for (const r of byKey.get(a)?.rules ?? []) bits.add(r);
      out.set(k, { key: entry.key, rules: bits });
    }
  }
  return contents;
}

function sameRules(a: ReadonlySet<number>, b: ReadonlySet<number>): boolean {
  return a.size === b.size && [...a].every((r) => b.has(r));
}

/** Map writes that turn `from` into `to`: updates first, then deletes. */
function trieTransition(from: TrieContents, to: TrieContents, mapPin: (map: string) => string): MapOperation[] {
  const updates: MapOperation[] = [];
  const deletes: MapOperation[] = [];
  for (const map of TRIE_MAPS) {
    const have = from.get(map) ?? new Map<string, TrieEntry>();
    const want = to.get(map)!;
    for (const [k, entry] of want) {
      const current = have.get(k);
      if (!current || !sameRules(current.rules, entry.rules)) updates.push({ op: "update", map: mapPin(map), key: entry.key, value: encodeRuleSet(entry.rules) });
    }
    for (const [k, entry] of have) if (!want.has(k)) deletes.push({ op: "delete", map: mapPin(map), key: entry.key });
  }
  return [...updates, ...deletes];
}

/**
 * tcpol_peer4's values for trie contents and the rules they hold, by key: for each IPv4
 * peer trie, the /16s its entries other than /0 overlap, and the rules of its /0 entry
 * of the direction whose peer it is (tc_policy.h). The other direction's rules are in
 * that entry too (tcpol_dst4 is the ingress host side), but never in a port set of
 * this direction's packets: leaving them out changes no answer, and a rule of the
 * other direction then never rewrites the filter.
 */
export function peerFiltersOf(tries: TrieContents, rules: ReadonlyMap<number, PolicyRule>): Map<number, Uint8Array> {
  const out = new Map<number, Uint8Array>();
  for (const [map, key] of Object.entries(PEER4_KEY) as [TrieMap, number][]) {
    const direction: Direction = key === PEER4_KEY.tcpol_src4 ? "ingress" : "egress";
    const touched: Set<number>[] = Array.from({ length: PEER4_PARTS }, () => new Set());
    let any: number[] = [];
    for (const entry of tries.get(map)?.values() ?? []) {
      const length = new DataView(entry.key.buffer, entry.key.byteOffset, entry.key.byteLength).getUint32(0, true);
      if (length === 0) {
        any = [...entry.rules].filter((r) => rules.get(r)?.direction === direction);
        continue;
      }
      const first = (entry.key[4]! << 8) | entry.key[5]!;
      const count = length >= 16 ? 1 : 1 << (16 - length);
      for (let b = first; b < first + count; b++) touched[Math.floor(b / PEER4_PART_BUCKETS)]!.add(b % PEER4_PART_BUCKETS);
    }
    for (let part = 0; part < PEER4_PARTS; part++) out.set(key * PEER4_PARTS + part, encodePeer4(touched[part]!, any));
  }
  return out;
}

const sameFilters = (a: Map<number, Uint8Array>, b: Map<number, Uint8Array>) => [...a].every(([k, v]) => hex(v) === hex(b.get(k)!));

export function sameContents(a: TrieContents, b: TrieContents): boolean {
  return TRIE_MAPS.every((map) => {
    const x = a.get(map) ?? new Map<string, TrieEntry>();
    const y = b.get(map) ?? new Map<string, TrieEntry>();
    return x.size === y.size && [...x].every(([k, e]) => y.has(k) && sameRules(e.rules, y.get(k)!.rules));
  });
}

// ------------------------------------------------------------ observing a host

/** A map entry as dumped (one value; tries and arrays are not per-CPU). */
export interface RawEntry {
  key: Uint8Array;
  value: Uint8Array;
}

export interface ObservedPolicy {
  /** tcpol_rules slots in use. */
  rules: ReadonlyMap<number, PolicyRule>;
  /** What the rule tries hold, keys normalised (host bits cleared). */
  tries: TrieContents;
  /** tcpol_cfg as loaded; ZERO_CONFIG on a freshly created map. */
  config: PolicyConfig;
}

function canonicalTrieKey(map: TrieMap, key: Uint8Array): Uint8Array {
  if (map === MAPS.l4) return encodeL4Key(decodeL4Key(key));
  return encodePrefixKey(parsePrefix(decodePrefixKey(key)));
}

/** Decodes the dumps of tcpol_rules, the tries and tcpol_cfg. */
export function observePolicy(dumps: { rules: readonly RawEntry[]; tries: Partial<Record<TrieMap, readonly RawEntry[]>>; config?: Uint8Array }): ObservedPolicy {
  const rules = new Map<number, PolicyRule>();
  for (const { key, value } of dumps.rules) {
    const rule = decodeRule(value);
    if (rule) rules.set(new DataView(key.buffer, key.byteOffset, key.byteLength).getUint32(0, true), rule);
  }
  const tries = emptyContents();
  for (const map of TRIE_MAPS) {
    for (const { key, value } of dumps.tries[map] ?? []) {
      const canonical = canonicalTrieKey(map, key);
      // A hand-written key with host bits set is deleted by its own bytes.
      tries.get(map)!.set(hex(canonical), { key: hex(canonical) === hex(key) ? canonical : Uint8Array.from(key), rules: new Set(decodeRuleSet(value)) });
    }
  }
  return { rules, tries, config: dumps.config ? decodeConfig(dumps.config) : ZERO_CONFIG };
}

/** True when the tries hold exactly what the loaded rule descriptors say (no hand edits, no half-applied batch). */
export function triesMatchRules(observed: ObservedPolicy): boolean {
  const indexed = [...observed.rules].map(([index, rule]) => ({ index, rule }));
  return sameContents(observed.tries, trieContents(indexed));
}

/** The policy part of the inputs, as the host has it loaded (for read). */
export function policyFromHost(observed: ObservedPolicy): Pick<TcPolicyInputs, "ingress" | "egress" | "stateful" | "timeouts"> {
  const rules = (direction: Direction) => {
    const texts = [...observed.rules.values()].filter((r) => r.direction === direction).map((r) => [ruleText(r), r.action] as const);
    texts.sort(([a], [b]) => a.localeCompare(b, "en", { numeric: true }));
    return Object.fromEntries(texts) as Record<string, Action>;
  };
  const seconds = (ns: bigint) => Number(ns) / 1e9;
  return {
    ingress: { default: observed.config.ingressDefault, rules: rules("ingress") },
    egress: { default: observed.config.egressDefault, rules: rules("egress") },
    stateful: observed.config.stateful,
    timeouts: {
      tcpEstablished: seconds(observed.config.tcpEstablishedNs),
      tcpTransitory: seconds(observed.config.tcpTransitoryNs),
      other: seconds(observed.config.otherNs),
    },
  };
}

// ------------------------------------------------------------ planning

export interface DesiredPolicy {
  rules: readonly PolicyRule[];
  /** Everything of tcpol_cfg but the deny bits, which follow from the rules. */
  config: Omit<PolicyConfig, "denyRules" | "skipTries">;
}

/** The desired policy of canonical inputs; the failsafe is the lifecycle's to fill in. */
export function desiredPolicy(inputs: Pick<TcPolicyInputs, "ingress" | "egress" | "stateful" | "timeouts">, rules: readonly PolicyRule[], failsafe: { port: number; peer?: string } = { port: 0 }): DesiredPolicy {
  return {
    rules,
    config: {
      tcpEstablishedNs: secondsToNs(inputs.timeouts.tcpEstablished),
      tcpTransitoryNs: secondsToNs(inputs.timeouts.tcpTransitory),
      otherNs: secondsToNs(inputs.timeouts.other),
      ingressDefault: inputs.ingress.default,
      egressDefault: inputs.egress.default,
      stateful: inputs.stateful,
      failsafePort: failsafe.port,
      ...(failsafe.peer !== undefined ? { failsafePeer: failsafe.peer } : {}),
    },
  };
}

export interface RuleAssignment {
  /** Rules loaded before and wanted now, at their old index. */
  kept: IndexedRule[];
  /** New rules at indexes no loaded rule holds. */
  fresh: IndexedRule[];
  /** New rules at indexes freed by removed rules (only when no other index is free). */
  reused: IndexedRule[];
  /** Loaded rules no longer wanted (and duplicates of one rule in two slots). */
  removed: IndexedRule[];
}

export function assignIndexes(desired: readonly PolicyRule[], loaded: ReadonlyMap<number, PolicyRule>): RuleAssignment {
  const wanted = new Map(desired.map((r) => [ruleId(r), r]));
  if (wanted.size > MAX_RULES) throw new Error(`${wanted.size} rules; the policy holds at most ${MAX_RULES}`);
  const kept: IndexedRule[] = [];
  const removed: IndexedRule[] = [];
  const keptIds = new Set<string>();
  for (const [index, rule] of [...loaded].sort(([a], [b]) => a - b)) {
    const id = ruleId(rule);
    if (wanted.has(id) && !keptIds.has(id)) {
      kept.push({ index, rule: wanted.get(id)! });
      keptIds.add(id);
    } else {
      removed.push({ index, rule });
    }
  }
  const free: number[] = [];
  for (let i = 0; i < MAX_RULES; i++) if (!loaded.has(i)) free.push(i);
  const freed = removed.map((r) => r.index);
  const fresh: IndexedRule[] = [];
  const reused: IndexedRule[] = [];
  for (const [id, rule] of wanted) {
    if (keptIds.has(id)) continue;
    const index = free.shift();
    if (index !== undefined) fresh.push({ index, rule });
    else reused.push({ index: freed.shift()!, rule });
  }
  return { kept, fresh, reused, removed };
}

export interface PolicyPlan extends RuleAssignment {
  /** In order; applying any prefix of them leaves a sound policy (see the top of this file). */
  operations: MapOperation[];
}

const denyRulesOf = (rules: readonly IndexedRule[]) => new Set(rules.filter((r) => r.rule.action === "deny").map((r) => r.index));

/**
 * The host-side tries the program may skip while `rules` are in the tries: a
 * direction's when none of its rules names the host's side (ingress `to`,
 * egress `from`). Written with the deny bits: a skip goes off before a rule
 * that needs the trie enters, and comes on only in the last write, after the
 * last such rule left.
 */
export function skipTriesOf(rules: readonly IndexedRule[]): number {
  let skip = SKIP_HOST_TRIE.ingress | SKIP_HOST_TRIE.egress;
  for (const { rule } of rules) if (rule.direction === "ingress" ? rule.to : rule.from) skip &= ~SKIP_HOST_TRIE[rule.direction];
  return skip;
}
const derived = (rules: readonly IndexedRule[]) => ({ denyRules: denyRulesOf(rules), skipTries: skipTriesOf(rules) });
const ZERO_HITS = new Uint8Array(8);
const CONFIG_KEY = u32Key(0);

export function planPolicy(desired: DesiredPolicy, observed: ObservedPolicy, mapPin: (map: string) => string): PolicyPlan {
  const assignment = assignIndexes(desired.rules, observed.rules);
  const { kept, fresh, reused, removed } = assignment;
  const operations: MapOperation[] = [];
  let configNow = hex(encodeConfig(observed.config));
  const writeConfig = (config: PolicyConfig) => {
    const bytes = encodeConfig(config);
    if (hex(bytes) === configNow) return;
    operations.push({ op: "update", map: mapPin(MAPS.config), key: CONFIG_KEY, value: bytes });
    configNow = hex(bytes);
  };
  const introduce = (rules: IndexedRule[]) => {
    for (const { index, rule } of rules) {
      operations.push({ op: "update", map: mapPin(MAPS.hits), key: u32Key(index), value: ZERO_HITS });
      operations.push({ op: "update", map: mapPin(MAPS.rules), key: u32Key(index), value: encodeRule(rule) });
    }
  };
  let tries = observed.tries;
  const moveTriesTo = (rules: IndexedRule[]) => {
    const next = trieContents(rules);
    operations.push(...trieTransition(tries, next, mapPin));
    tries = next;
  };

  // The IPv4 peer filters (tcpol_peer4) stay on through the change only when every
  // state of the tries it passes through has the final filters (and they are on now);
  // otherwise the first config write turns them off (the program then asks the tries),
  // and they are written whole and turned on after the tries are final. Torn, a
  // filter read while on could mix two filters; written only while off, it never is.
  const byIndex = (rules: IndexedRule[]) => new Map(rules.map((r) => [r.index, r.rule]));
  const filtersOf = (rules: IndexedRule[]) => peerFiltersOf(trieContents(rules), byIndex(rules));
  const finalRules = [...kept, ...fresh, ...reused];
  const finalFilters = filtersOf(finalRules);
  const filterStays =
    (observed.config.skipTries & PEER4_FILTER) !== 0 &&
    sameFilters(peerFiltersOf(observed.tries, observed.rules), finalFilters) &&
    [[...kept, ...removed, ...fresh], [...kept, ...fresh]].every((rules) => sameFilters(filtersOf(rules), finalFilters));
  const filterBit = filterStays ? PEER4_FILTER : 0;

  // A: new rules at free indexes, beside everything loaded.
  // A skip turns on only last, once the tries hold exactly the described rules.
  const union = derived([...kept, ...removed, ...fresh]);
  writeConfig({ ...observed.config, ...union, skipTries: (union.skipTries & observed.config.skipTries) | filterBit });
  introduce(fresh);
  moveTriesTo([...kept, ...removed, ...fresh]);
  // B: removed rules leave.
  moveTriesTo([...kept, ...fresh]);
  for (const { index } of removed) {
    operations.push({ op: "update", map: mapPin(MAPS.rules), key: u32Key(index), value: EMPTY_RULE });
    operations.push({ op: "update", map: mapPin(MAPS.hits), key: u32Key(index), value: ZERO_HITS });
  }
  // C: new rules at indexes B freed.
  if (reused.length > 0) {
    const withReused = derived([...kept, ...fresh, ...reused]);
    writeConfig({ ...observed.config, ...withReused, skipTries: (withReused.skipTries & union.skipTries & observed.config.skipTries) | filterBit });
    introduce(reused);
    moveTriesTo([...kept, ...fresh, ...reused]);
  }
  // Last: the peer filters (while off), then defaults, timeouts, failsafe, and the filters on.
  if (!filterStays) for (const [key, value] of finalFilters) operations.push({ op: "update", map: mapPin(MAPS.peer4), key: u32Key(key), value });
  const final = derived(finalRules);
  writeConfig({ ...desired.config, ...final, skipTries: final.skipTries | PEER4_FILTER });
  return { ...assignment, operations };
}
