// Planning, proven against a model of the kernel's lookups: longest-prefix
// match in each trie, AND of the bitmaps, deny beats allow. The model is
// checked against a direct reading of the rules (the classifier is exact),
// and every prefix of every plan is checked for soundness (a half-applied
// batch never matches a packet with a rule that does not match it).
import { describe, expect, it } from "vitest";
import { formatAddress, parsePrefix, prefixContains, type Prefix } from "../../provider/cidr";
import { batchText, type MapOperation } from "../../provider/remote/mapOperations";
import {
  decodeConfig, decodeRule, decodeRuleSet, encodeL4Key, encodePrefixKey, IPPROTO, MAPS, MAX_RULES, PEER4_FILTER, secondsToNs, SKIP_HOST_TRIE, TRIE_MAPS, ZERO_CONFIG,
  type TrieMap,
} from "../../provider/tcPolicy/codec";
import {
  assignIndexes, desiredPolicy, l4Prefixes, observePolicy, peerFiltersOf, planPolicy, policyFromHost, portBlocks, skipTriesOf, trieContents, triesMatchRules,
  type DesiredPolicy, type IndexedRule, type ObservedPolicy,
} from "../../provider/tcPolicy/plan";
import { parseRuleText, rulesOf, tcPolicySchema, type Direction, type PolicyRule } from "../../provider/tcPolicy/schema";
import { seededRandom } from "../support/seededRandom";

const hex = (b: Uint8Array) => Buffer.from(b).toString("hex");

const pick = <T>(rand: () => number, xs: readonly T[]) => xs[Math.floor(rand() * xs.length)]!;

// ---------------------------------------------------------------- the model

interface Packet {
  direction: Direction;
  protocol: number;
  dport: number;
  src: Prefix;
  dst: Prefix;
}

/** What the maps hold, as the kernel would see them. */
interface HostMaps {
  tries: Map<TrieMap, Map<string, Set<number>>>;
  rules: Map<number, PolicyRule>;
  denyMask: Set<number>;
  /** tcpol_config.skip_tries: tries the program does not look up, and whether it reads tcpol_peer4. */
  skipTries: number;
  /** tcpol_peer4 by key (trie * 4 + part; trie 0: tcpol_src4's filter, 1: tcpol_dst4's). */
  peer4: Map<number, Uint8Array>;
}

function emptyHost(): HostMaps {
  return { tries: new Map(TRIE_MAPS.map((m) => [m, new Map()])), rules: new Map(), denyMask: new Set(), skipTries: 0, peer4: new Map() };
}

function applyOp(host: HostMaps, op: MapOperation): void {
  const index = () => new DataView(op.key.buffer, op.key.byteOffset).getUint32(0, true);
  if (op.map === MAPS.config && op.op === "update") {
    const config = decodeConfig(op.value);
    host.denyMask = new Set(config.denyRules);
    host.skipTries = config.skipTries;
  }
  else if (op.map === MAPS.rules && op.op === "update") {
    const rule = decodeRule(op.value);
    if (rule) host.rules.set(index(), rule);
    else host.rules.delete(index());
  } else if (op.map === MAPS.peer4 && op.op === "update") {
    host.peer4.set(index(), op.value);
  } else if (op.map === MAPS.hits) {
    // counters only
  } else {
    const trie = host.tries.get(op.map as TrieMap);
    if (!trie) throw new Error(`unexpected map ${op.map}`);
    presentLengths.delete(trie);
    if (op.op === "update") trie.set(hex(op.key), new Set(decodeRuleSet(op.value)));
    else if (!trie.delete(hex(op.key))) throw new Error(`delete of a key that is not there: ${op.map} ${hex(op.key)}`);
  }
}

function truncated(p: Prefix, length: number): Prefix {
  return parsePrefix(`${formatAddress(p.bytes)}/${length}`);
}

/** Prefix lengths present in each trie (longest first), so a lookup probes only those. */
const presentLengths = new WeakMap<Map<string, Set<number>>, number[]>();
function lengthsIn(trie: Map<string, Set<number>>): number[] {
  let lengths = presentLengths.get(trie);
  if (!lengths) {
    lengths = [...new Set([...trie.keys()].map((k) => Buffer.from(k.slice(0, 8), "hex").readUInt32LE(0)))].sort((a, b) => b - a);
    presentLengths.set(trie, lengths);
  }
  return lengths;
}

function longestMatch(host: HostMaps, map: TrieMap, keys: readonly string[]): Set<number> {
  const trie = host.tries.get(map)!;
  const longest = keys.length - 1;
  for (const l of lengthsIn(trie)) {
    const entry = trie.get(keys[longest - l]!);
    if (entry) return entry;
  }
  return new Set();
}

/** Per packet, the key (hex) a trie lookup would match at each prefix length, longest first. */
const lookupKeys = new WeakMap<Packet, { l4: string[]; src: string[]; dst: string[] }>();
function keysOf(p: Packet) {
  let keys = lookupKeys.get(p);
  if (!keys) {
    const port = p.protocol === IPPROTO.TCP || p.protocol === IPPROTO.UDP ? p.dport : 0;
    const width = p.src.family === 4 ? 32 : 128;
    const lengths = (max: number) => Array.from({ length: max + 1 }, (_, i) => max - i);
    keys = {
      l4: lengths(32).map((l) => hex(encodeL4Key({ direction: p.direction, protocol: p.protocol, port, prefixLength: l }))),
      src: lengths(width).map((l) => hex(encodePrefixKey(truncated(p.src, l)))),
      dst: lengths(width).map((l) => hex(encodePrefixKey(truncated(p.dst, l)))),
    };
    lookupKeys.set(p, keys);
  }
  return keys;
}

/** The bits tc_policy.bpf.c's match_rules finds for a packet. */
function kernelMatch(host: HostMaps, p: Packet): Set<number> {
  const keys = keysOf(p);
  const v = p.src.family;
  const l4 = longestMatch(host, MAPS.l4, keys.l4);
  // An IPv4 peer in a /16 that tcpol_peer4 says no entry overlaps: when the /0 set it holds
  // shares no rule with the port's, no rule matches (the trie is not looked up).
  if (v === 4 && host.skipTries & PEER4_FILTER) {
    const peer = p.direction === "ingress" ? p.src : p.dst;
    const b = (peer.bytes[0]! << 8) | peer.bytes[1]!;
    const filter = host.peer4.get((p.direction === "ingress" ? 0 : 4) + (b >> 14)) ?? new Uint8Array(2176);
    const i = b & 0x3fff;
    const any = new Set(decodeRuleSet(filter.subarray(2048)));
    if (!((filter[i >> 3]! >> (i & 7)) & 1) && ![...l4].some((r) => any.has(r))) return new Set();
  }
  // The host's side (ingress: destination; egress: source) is not looked up when skipped: every bit passes it.
  const all = { has: () => true };
  const skip = (host.skipTries & SKIP_HOST_TRIE[p.direction]) !== 0;
  const src = skip && p.direction === "egress" ? all : longestMatch(host, `tcpol_src${v}`, keys.src);
  const dst = skip && p.direction === "ingress" ? all : longestMatch(host, `tcpol_dst${v}`, keys.dst);
  return new Set([...l4].filter((r) => src.has(r) && dst.has(r)));
}

function kernelVerdict(host: HostMaps, p: Packet): "allow" | "deny" | "none" {
  const bits = kernelMatch(host, p);
  if ([...bits].some((b) => host.denyMask.has(b))) return "deny";
  return bits.size > 0 ? "allow" : "none";
}

const prefixes = new Map<string, Prefix>();
const prefix = (cidr: string) => {
  let p = prefixes.get(cidr);
  if (!p) prefixes.set(cidr, (p = parsePrefix(cidr)));
  return p;
};

const matchMemo = new WeakMap<PolicyRule, WeakMap<Packet, boolean>>();

/** The rule read directly (memoised: rule and packet objects are reused across steps). */
function ruleMatches(r: PolicyRule, p: Packet): boolean {
  let byPacket = matchMemo.get(r);
  if (!byPacket) matchMemo.set(r, (byPacket = new WeakMap()));
  let hit = byPacket.get(p);
  if (hit === undefined) byPacket.set(p, (hit = ruleMatchesNow(r, p)));
  return hit;
}

function ruleMatchesNow(r: PolicyRule, p: Packet): boolean {
  if (r.direction !== p.direction) return false;
  const family = p.src.family;
  if (r.protocol === "tcp" && p.protocol !== IPPROTO.TCP) return false;
  if (r.protocol === "udp" && p.protocol !== IPPROTO.UDP) return false;
  if (r.protocol === "icmp" && p.protocol !== (family === 4 ? IPPROTO.ICMP : IPPROTO.ICMPV6)) return false;
  if (r.ports && (p.dport < r.ports[0] || p.dport > r.ports[1])) return false;
  if (r.from && !prefixContains(prefix(r.from), p.src)) return false;
  if (r.to && !prefixContains(prefix(r.to), p.dst)) return false;
  return true;
}

function directVerdict(rules: readonly PolicyRule[], p: Packet): "allow" | "deny" | "none" {
  const matching = rules.filter((r) => ruleMatches(r, p));
  if (matching.some((r) => r.action === "deny")) return "deny";
  return matching.length > 0 ? "allow" : "none";
}

function hostWith(rules: readonly IndexedRule[]): HostMaps {
  const host = emptyHost();
  for (const [map, entries] of trieContents(rules)) for (const [k, e] of entries) host.tries.get(map)!.set(k, new Set(e.rules));
  for (const { index, rule } of rules) {
    host.rules.set(index, rule);
    if (rule.action === "deny") host.denyMask.add(index);
  }
  // As planning leaves a host: the peer filters written and on.
  host.skipTries = skipTriesOf(rules) | PEER4_FILTER;
  host.peer4 = peerFiltersOf(trieContents(rules), new Map(rules.map((r) => [r.index, r.rule])));
  return host;
}

function observedOf(host: HostMaps): ObservedPolicy {
  const tries = new Map(
    TRIE_MAPS.map((m) => [m, new Map([...host.tries.get(m)!].map(([k, rules]) => [k, { key: Uint8Array.from(Buffer.from(k, "hex")), rules }]))]),
  );
  return { rules: new Map(host.rules), tries, config: { ...ZERO_CONFIG, denyRules: new Set(host.denyMask), skipTries: host.skipTries } };
}

// ---------------------------------------------------------------- random policies and packets

const V4_CIDRS = ["10.0.0.0/8", "10.1.0.0/16", "10.1.2.0/24", "10.1.2.3/32", "0.0.0.0/0", "192.168.0.0/16", "10.1.2.0/25"];
const V6_CIDRS = ["2001:db8::/32", "2001:db8:1::/48", "::/0", "2001:db8:1::1/128", "2001:db8:1::/64"];
const PORTS = [undefined, "22", "20-30", "1-1023", "1000-2000", "1024-65535", "53", "1500-1500", "7-9"];
const V4_ADDRS = ["10.1.2.3", "10.1.2.4", "10.1.2.200", "10.1.3.1", "10.2.0.1", "11.0.0.1", "192.168.1.1"].map((a) => parsePrefix(a));
const V6_ADDRS = ["2001:db8:1::1", "2001:db8:1::2", "2001:db8:1:5::1", "2001:db8:2::1", "2001:db9::1"].map((a) => parsePrefix(a));
const PACKET_PORTS = [7, 9, 10, 21, 22, 25, 30, 31, 53, 999, 1000, 1023, 1024, 1500, 2000, 2001, 40000, 65535];

function randomRule(rand: () => number): PolicyRule {
  const protocol = pick(rand, ["tcp", "udp", "icmp", "any"] as const);
  const ports = protocol === "tcp" || protocol === "udp" ? pick(rand, PORTS) : undefined;
  const family = pick(rand, [0, 4, 6] as const);
  const cidrs = family === 4 ? V4_CIDRS : V6_CIDRS;
  const from = family && rand() < 0.7 ? pick(rand, cidrs) : undefined;
  const to = family && (rand() < 0.4 || !from) ? pick(rand, cidrs) : undefined;
  const words = [pick(rand, ["allow", "deny"]), protocol, ports, from && `from ${from}`, to && `to ${to}`].filter(Boolean);
  return parseRuleText(pick(rand, ["ingress", "egress"] as const), words.join(" "));
}

function randomRules(rand: () => number, n: number): PolicyRule[] {
  const byText = new Map<string, PolicyRule>();
  while (byText.size < n) {
    const r = randomRule(rand);
    byText.set(`${r.direction} ${JSON.stringify(r)}`, r);
  }
  return [...byText.values()];
}

function allPackets(): Packet[] {
  const out: Packet[] = [];
  for (const direction of ["ingress", "egress"] as const) {
    for (const addrs of [V4_ADDRS, V6_ADDRS]) {
      const family = addrs[0]!.family;
      for (const src of addrs) {
        for (const dst of [addrs[0]!, addrs[3]!, addrs[addrs.length - 1]!]) {
          for (const protocol of [IPPROTO.TCP, IPPROTO.UDP, family === 4 ? IPPROTO.ICMP : IPPROTO.ICMPV6, 47]) {
            const ports = protocol === IPPROTO.TCP || protocol === IPPROTO.UDP ? PACKET_PORTS : [0];
            for (const dport of ports) out.push({ direction, protocol, dport, src, dst });
          }
        }
      }
    }
  }
  return out;
}
const PACKETS = allPackets();

const indexed = (rules: readonly PolicyRule[]) => rules.map((rule, index) => ({ index, rule }));

// ---------------------------------------------------------------- tests

describe("portBlocks", () => {
  it.each([
    [22, 22, [{ port: 22, prefixBits: 16 }]],
    [1, 65535, 16],
    [0, 65535, 1],
    [1000, 2000, 8],
    [1024, 65535, 6],
    [5000, 5999, 9],
  ] as const)("[%i, %i]", (low, high, expected) => {
    const blocks = portBlocks(low, high);
    if (typeof expected === "number") expect(blocks).toHaveLength(expected);
    else expect(blocks).toEqual(expected);
  });

  it("covers any range exactly with aligned, disjoint blocks, never more than 30", () => {
    const rand = seededRandom(7);
    const wrong: string[] = [];
    for (let i = 0; i < 5000; i++) {
      let low = 1 + Math.floor(rand() * 65535);
      let high = 1 + Math.floor(rand() * 65535);
      if (low > high) [low, high] = [high, low];
      const blocks = portBlocks(low, high);
      let next = low;
      for (const b of blocks) {
        const size = 2 ** (16 - b.prefixBits);
        if (b.port !== next || b.port % size !== 0) wrong.push(`[${low}, ${high}]: block ${b.port}/${b.prefixBits} is not aligned or leaves a gap`);
        next += size;
      }
      if (next - 1 !== high || blocks.length > 30) wrong.push(`[${low}, ${high}]: ends at ${next - 1}, ${blocks.length} blocks`);
    }
    expect(wrong.slice(0, 5)).toEqual([]);
  });
});

describe("l4Prefixes", () => {
  const p = (text: string, direction: Direction = "ingress") => l4Prefixes(parseRuleText(direction, text));
  it("matches the direction only for any protocol, the protocol for a port-less rule, port blocks otherwise", () => {
    expect(p("deny any", "egress")).toEqual([{ direction: "egress", protocol: 0, port: 0, prefixLength: 8 }]);
    expect(p("allow tcp")).toEqual([{ direction: "ingress", protocol: 6, port: 0, prefixLength: 16 }]);
    expect(p("allow udp 53")).toEqual([{ direction: "ingress", protocol: 17, port: 53, prefixLength: 32 }]);
    expect(p("allow tcp 8-15")).toEqual([{ direction: "ingress", protocol: 6, port: 8, prefixLength: 29 }]);
  });
  it("maps icmp to ICMP and ICMPv6, or to one of them when the rule names a family", () => {
    expect(p("allow icmp").map((x) => x.protocol)).toEqual([1, 58]);
    expect(p("allow icmp from 10.0.0.0/8").map((x) => x.protocol)).toEqual([1]);
    expect(p("allow icmp to 2001:db8::/32").map((x) => x.protocol)).toEqual([58]);
  });
});

describe("trieContents: the bitmap classifier is exact", () => {
  it.each(Array.from({ length: 12 }, (_, i) => i + 1))("seed %i: the kernel's lookups give the rules' own verdict for every packet", (seed) => {
    const rand = seededRandom(seed);
    const rules = randomRules(rand, 5 + Math.floor(rand() * 40));
    const host = hostWith(indexed(rules));
    const wrong: string[] = [];
    for (const p of PACKETS) {
      const want = rules.map((r, i) => (ruleMatches(r, p) ? i : -1)).filter((i) => i >= 0);
      const got = [...kernelMatch(host, p)].sort((a, b) => a - b);
      if (got.join() !== want.join()) wrong.push(`${p.direction} ${p.protocol}/${p.dport} ${formatAddress(p.src.bytes)} -> ${formatAddress(p.dst.bytes)}: got [${got}], want [${want}]`);
    }
    expect(wrong.slice(0, 5)).toEqual([]);
  });

  it("sets a rule's bit in every longer entry its prefix contains", () => {
    const rules = indexed(["deny tcp 22 from 10.0.0.0/8", "allow tcp 22 from 10.1.0.0/16", "allow any"].map((t) => parseRuleText("ingress", t)));
    const src4 = trieContents(rules).get(MAPS.src4)!;
    const bits = (cidr: string) => [...src4.get(hex(encodePrefixKey(parsePrefix(cidr))))!.rules].sort();
    expect(bits("0.0.0.0/0")).toEqual([2]);
    expect(bits("10.0.0.0/8")).toEqual([0, 2]);
    expect(bits("10.1.0.0/16")).toEqual([0, 1, 2]);
    expect(src4.size).toBe(3);
  });
});

describe("assignIndexes", () => {
  const r = (text: string, direction: Direction = "ingress") => parseRuleText(direction, text);

  it("keeps loaded rules at their index and gives new ones the lowest free index", () => {
    const loaded = new Map([[0, r("allow tcp 22")], [1, r("allow tcp 80")], [5, r("deny udp 53", "egress")]]);
    const a = assignIndexes([r("allow tcp 22"), r("deny udp 53", "egress"), r("allow tcp 443"), r("allow tcp 80", "egress")], loaded);
    expect(a.kept.map((x) => x.index)).toEqual([0, 5]);
    expect(a.removed).toEqual([{ index: 1, rule: r("allow tcp 80") }]);
    expect(a.fresh.map((x) => [x.index, x.rule.ports?.[0], x.rule.direction])).toEqual([[2, 443, "ingress"], [3, 80, "egress"]]);
    expect(a.reused).toEqual([]);
  });

  it("reuses freed indexes only when no other index is free", () => {
    const full = new Map(Array.from({ length: MAX_RULES }, (_, i) => [i, r(`deny tcp ${i + 1}`)] as const));
    const wanted = [...full.values()].slice(2).concat([r("deny udp 1"), r("deny udp 2")]);
    const a = assignIndexes(wanted, full);
    expect(a.removed.map((x) => x.index)).toEqual([0, 1]);
    expect(a.fresh).toEqual([]);
    expect(a.reused.map((x) => x.index)).toEqual([0, 1]);
  });

  it("drops a duplicate slot of one rule", () => {
    const a = assignIndexes([r("allow tcp 22")], new Map([[3, r("allow tcp 22")], [7, r("allow tcp 22")]]));
    expect(a.kept.map((x) => x.index)).toEqual([3]);
    expect(a.removed.map((x) => x.index)).toEqual([7]);
  });
});

describe("planPolicy", () => {
  const pins = (m: string) => `/sys/fs/bpf/bpfleet/tc-policy/p/maps/${m}`;
  const want = (texts: string[], over: Partial<DesiredPolicy["config"]> = {}): DesiredPolicy => ({
    rules: texts.map((t) => parseRuleText("ingress", t)),
    config: { ...ZERO_CONFIG, ...over },
  });

  it("writes a first policy: deny bits, then rule slots, then trie entries, then the defaults", () => {
    const plan = planPolicy(want(["deny tcp 22 from 10.0.0.0/8"], { ingressDefault: "deny", stateful: true }), observedOf(emptyHost()), pins);
    const lines = batchText(plan.operations).trim().split("\n").map((l) => l.replace(/ key hex .*/, "").replace("map update pinned /sys/fs/bpf/bpfleet/tc-policy/p/maps/", "update ").replace("map delete pinned /sys/fs/bpf/bpfleet/tc-policy/p/maps/", "delete "));
    expect(lines).toEqual([
      "update tcpol_cfg", // deny bit of rule 0, old defaults
      "update tcpol_hits",
      "update tcpol_rules",
      "update tcpol_l4",
      "update tcpol_src4",
      "update tcpol_dst4",
      ...Array<string>(8).fill("update tcpol_peer4"), // the IPv4 peer filters (source, destination; 4 parts each), while off
      "update tcpol_cfg", // the new defaults and the filters on, last
    ]);
    const last = plan.operations.at(-1)!;
    expect(decodeConfig(last.op === "update" ? last.value : new Uint8Array(176)).skipTries & PEER4_FILTER).toBe(PEER4_FILTER);
    expect(decodeConfig(plan.operations[0]!.op === "update" ? plan.operations[0]!.value : new Uint8Array())).toMatchObject({ ingressDefault: "allow", stateful: false, denyRules: new Set([0]) });
  });

  it("writes nothing when the host already has the policy", () => {
    const rules = indexed(["allow tcp 22", "deny udp 53 from 10.0.0.0/8"].map((t) => parseRuleText("ingress", t)));
    expect(planPolicy(want(["allow tcp 22", "deny udp 53 from 10.0.0.0/8"]), observedOf(hostWith(rules)), pins).operations).toEqual([]);
  });

  it("removes a rule: trie entries first, then its slot and counter", () => {
    const rules = indexed(["allow tcp 22", "deny udp 53 from 10.0.0.0/8"].map((t) => parseRuleText("ingress", t)));
    const plan = planPolicy(want(["allow tcp 22"]), observedOf(hostWith(rules)), (m) => m);
    const maps = plan.operations.map((o) => `${o.op} ${o.map}`);
    expect(maps.indexOf("update tcpol_rules")).toBeGreaterThan(maps.lastIndexOf("delete tcpol_src4"));
    expect(maps.at(-1)).toBe("update tcpol_cfg");
    expect(plan.removed.map((r) => r.index)).toEqual([1]);
  });

  it("rewrites only what a new rule changes", () => {
    const texts = Array.from({ length: 200 }, (_, i) => `deny tcp ${1000 + i} from 10.${i}.0.0/16`);
    const host = hostWith(indexed(texts.map((t) => parseRuleText("ingress", t))));
    const plan = planPolicy(want([...texts, "deny tcp 5000 from 192.0.2.0/24"]), observedOf(host), (m) => m);
    // The rule slot, its counter, the config (deny bit, peer filters off), one entry in each of l4, src4 and
    // dst4 (/0 gains the bit), the peer filters (192.0.2.0/24 is in a /16 no entry overlapped), the config (filters on).
    expect(plan.operations.map((o) => o.map).sort()).toEqual(["tcpol_cfg", "tcpol_cfg", "tcpol_dst4", "tcpol_hits", "tcpol_l4", ...Array<string>(8).fill("tcpol_peer4"), "tcpol_rules", "tcpol_src4"]);
    const configs = plan.operations.filter((o) => o.map === "tcpol_cfg").map((o) => (o.op === "update" ? decodeConfig(o.value).skipTries & PEER4_FILTER : -1));
    expect(configs).toEqual([0, PEER4_FILTER]);
    // A rule whose prefix lies in a /16 an entry already overlaps (its bit in dst4's /0 is the
    // ingress host side's, not the egress peer's) leaves the filters as they are: they stay on
    // and are not written.
    const near = planPolicy(want([...texts, "deny tcp 5000 from 10.7.0.0/24"]), observedOf(host), (m) => m);
    expect(near.operations.map((o) => o.map).sort()).toEqual(["tcpol_cfg", "tcpol_dst4", "tcpol_hits", "tcpol_l4", "tcpol_rules", "tcpol_src4"]);
    expect(near.operations.every((o) => o.map !== "tcpol_cfg" || (o.op === "update" && decodeConfig(o.value).skipTries & PEER4_FILTER))).toBe(true);
  });

  const sound = (newRules: PolicyRule[], start: HostMaps, label: string, packets: readonly Packet[] = PACKETS) => {
    const plan = planPolicy({ rules: newRules, config: ZERO_CONFIG }, observedOf(start), (m) => m);
    const before = new Map([...start.rules]);
    const after = new Map([...plan.kept, ...plan.fresh, ...plan.reused].map((r) => [r.index, r.rule] as const));
    const keptBy = (d: Direction) => plan.kept.filter((k) => k.rule.direction === d);
    const host = start;
    const keptIngress = keptBy("ingress");
    const keptEgress = keptBy("egress");
    // Plain comparisons in the loop (expect() per packet would dominate the run time).
    const check = (step: number) => {
      const problems: string[] = [];
      for (const p of packets) {
        const bits = kernelMatch(host, p);
        for (const i of bits) {
          const candidates = [before.get(i), after.get(i)].filter((r): r is PolicyRule => r !== undefined && ruleMatches(r, p));
          if (candidates.length === 0) problems.push(`bit ${i} matches nothing that owns it`);
          else if (!candidates.some((r) => (r.action === "deny") === host.denyMask.has(i))) problems.push(`bit ${i} has the wrong action`);
        }
        for (const k of p.direction === "ingress" ? keptIngress : keptEgress) if (!bits.has(k.index) && ruleMatches(k.rule, p)) problems.push(`kept rule ${k.index} lost`);
      }
      expect(problems.slice(0, 5), `${label} after ${step} operations`).toEqual([]);
    };
    check(0);
    plan.operations.forEach((op, step) => {
      applyOp(host, op);
      check(step + 1);
    });
    const final = hostWith([...after].map(([index, rule]) => ({ index, rule })));
    expect(host.tries).toEqual(final.tries);
    expect(host.rules).toEqual(final.rules);
    expect(host.skipTries).toBe(final.skipTries);
    for (const p of packets) expect(kernelVerdict(host, p)).toBe(directVerdict(newRules, p));
    return plan;
  };

  it.each(Array.from({ length: 6 }, (_, i) => i + 100))("seed %i: every prefix of an update's batch is sound", (seed) => {
    const rand = seededRandom(seed);
    const oldRules = randomRules(rand, 15);
    const newRules = [...oldRules.filter(() => rand() < 0.6), ...randomRules(rand, 10)];
    const unique = [...new Map(newRules.map((r) => [JSON.stringify(r), r])).values()];
    sound(unique, hostWith(indexed(oldRules)), `seed ${seed}`);
  });

  it.each([
    ["a rule naming the host's address arrives: the ingress destination skip is off before its bits", ["allow tcp 22", "deny udp 53 from 10.0.0.0/8"], ["allow tcp 22", "deny udp 53 from 10.0.0.0/8", "deny tcp 22 to 192.0.2.1/32", "allow tcp 80 to 192.0.2.0/24"]],
    ["the last rule naming a destination leaves: the skip comes on after its bits left", ["allow tcp 22 to 192.0.2.1/32", "deny tcp 22 from 10.0.0.0/8"], ["allow tcp 22", "deny tcp 22 from 10.0.0.0/8"]],
    ["the first source arrives and the last destination leaves in one update", ["allow tcp 22 to 192.0.2.0/24", "allow any"], ["allow tcp 22 from 10.0.0.0/8", "deny tcp 23"]],
  ])("trie skips: %s", (label, oldTexts, newTexts) => {
    const packets = PACKETS.filter((p) => p.direction === "ingress");
    const oldRules = oldTexts.map((t) => parseRuleText("ingress", t));
    const newRules = newTexts.map((t) => parseRuleText("ingress", t));
    // Packets to and from the rules' own prefixes, so that a wrong skip shows.
    const extra = ["10.1.2.3", "192.0.2.1", "192.0.2.77", "198.51.100.1"].flatMap((src) =>
      ["192.0.2.1", "192.0.2.77", "203.0.113.9"].flatMap((dst) => [22, 23, 53, 80].flatMap((dport) =>
        [IPPROTO.TCP, IPPROTO.UDP].map((protocol): Packet => ({ direction: "ingress", protocol, dport, src: parsePrefix(`${src}/32`), dst: parsePrefix(`${dst}/32`) })))));
    sound(newRules, hostWith(indexed(oldRules)), label, [...packets, ...extra]);
    expect(skipTriesOf(indexed(newRules)) & SKIP_HOST_TRIE.ingress).toBe(newRules.some((r) => r.to) ? 0 : SKIP_HOST_TRIE.ingress);
  });

  it("stays sound when new rules must reuse freed indexes (all 1024 in use)", () => {
    const rand = seededRandom(4242);
    const filler = Array.from({ length: MAX_RULES - 12 }, (_, i) => parseRuleText("egress", `deny udp ${40000 + i} to 192.168.0.0/16`));
    const oldRules = [...randomRules(rand, 12).map((r) => ({ ...r, direction: "ingress" as const })), ...filler];
    const newRules = [...oldRules.slice(6), ...randomRules(rand, 6).map((r) => ({ ...r, direction: "ingress" as const }))];
    const unique = [...new Map(newRules.map((r) => [`${r.direction}${JSON.stringify(r)}`, r])).values()].slice(0, MAX_RULES);
    const plan = sound(unique, hostWith(indexed(oldRules)), "reuse", PACKETS.filter((p) => p.direction === "ingress"));
    expect(plan.reused.length).toBeGreaterThan(0);
  });
});

describe("reading a host back", () => {
  it("decodes dumps into the inputs' canonical form, and notices hand edits of the tries", () => {
    const inputs = tcPolicySchema.parse({
      host: { address: "192.0.2.1" }, interface: "eth0", name: "p", stateful: true,
      ingress: { default: "deny", rules: ["allow tcp 22", "deny tcp 22 from 203.0.113.0/24", "allow udp 1000-2000"] },
      egress: { rules: ["deny tcp 25"] },
      timeouts: { tcpEstablished: 7200, tcpTransitory: 30, other: 15 },
    });
    const plan = planPolicy(desiredPolicy(inputs, rulesOf(inputs)), observedOf(emptyHost()), (m) => m);
    // Replay the batch into dumps, as bpftool would return them.
    const dumps = new Map<string, Map<string, { key: Uint8Array; value: Uint8Array }>>();
    for (const op of plan.operations) {
      const m = dumps.get(op.map) ?? new Map();
      dumps.set(op.map, m);
      if (op.op === "update") m.set(hex(op.key), { key: op.key, value: op.value });
      else m.delete(hex(op.key));
    }
    const raw = (map: string) => [...(dumps.get(map)?.values() ?? [])];
    const tries = Object.fromEntries(TRIE_MAPS.map((m) => [m, raw(m)]));
    const observed = observePolicy({ rules: raw(MAPS.rules), tries, config: raw(MAPS.config)[0]!.value });
    expect(policyFromHost(observed)).toEqual({ ingress: inputs.ingress, egress: inputs.egress, stateful: true, timeouts: inputs.timeouts });
    expect(observed.config.tcpEstablishedNs).toBe(secondsToNs(7200));
    expect(triesMatchRules(observed)).toBe(true);

    // Someone adds an entry by hand (host bits set): it is noticed, and the next plan deletes it by its own bytes.
    const handKey = Uint8Array.from(Buffer.from("100000000a010203", "hex")); // 10.1.2.3 with prefixlen 16
    const edited = observePolicy({ rules: raw(MAPS.rules), tries: { ...tries, [MAPS.src4]: [...raw(MAPS.src4), { key: handKey, value: new Uint8Array(128).fill(0xff) }] }, config: raw(MAPS.config)[0]!.value });
    expect(triesMatchRules(edited)).toBe(false);
    const repair = planPolicy(desiredPolicy(inputs, rulesOf(inputs)), edited, (m) => m);
    // (The hand entry overlaps a /16 that the peer filters, written from the rules, leave out:
    // they are rewritten, while off, with the trie as it will be.)
    expect(repair.operations.filter((o) => o.map !== MAPS.config && o.map !== MAPS.peer4)).toEqual([{ op: "delete", map: MAPS.src4, key: handKey }]);
  });
});
