// Issue 15: "Limits are checked before anything changes": every map an input
// fills is checked at `check`, and the message names the property, the map,
// the limit and the count. The limits are the TS constants that the kernel
// tests prove equal to the compiled objects' max_entries
// (test/kernel/tcPolicy.test.ts, maglev.test.ts, trafficMirror.test.ts).
import { describe, expect, it } from "vitest";
import { LB_MAX_BACKENDS, LB_MAX_VIPS } from "../../provider/maglev/codec";
import { checkMaglevService } from "../../provider/maglev/schema";
import { ADDR_MAX_ENTRIES, L4_MAX_ENTRIES, MAPS, MAX_RULES } from "../../provider/tcPolicy/codec";
import { l4Prefixes, trieContents } from "../../provider/tcPolicy/plan";
import { checkTcPolicy, parseRuleText, TRIE_CAPACITY, trieCapacityIssues, trieEntryCounts, type Direction } from "../../provider/tcPolicy/schema";
import { checkTrafficMirror, MAX_FILTERS } from "../../provider/trafficMirror/schema";
import { failureAt } from "../support/checkFailure";

const host = { address: "10.200.1.2", hostKey: "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB" };
const base = { host, credentials: { privateKey: "k" }, interface: "eth0", name: "x" };

describe("TcPolicy: tcpol_rules and the five rule tries", () => {
  it("names tcpol_rules, its limit and the count, per direction and in all", () => {
    const rules = (n: number, proto = "udp") => Array.from({ length: n }, (_, i) => `deny ${proto} ${i + 1}`);
    const one = { ...base, ingress: { rules: rules(MAX_RULES + 1) } };
    expect(failureAt(checkTcPolicy(one), "ingress.rules", one).reason).toBe(
      "ingress.rules: has 1025 rules; the policy holds at most 1024 (map tcpol_rules has one slot per rule, ingress and egress together)",
    );
    const both = { ...base, ingress: { rules: rules(600) }, egress: { rules: rules(600, "tcp") } };
    expect(checkTcPolicy(both).failures?.[0]?.reason).toBe(
      "ingress, egress: 1200 rules in all; the policy holds at most 1024 (ingress and egress together): map tcpol_rules has one slot per rule",
    );
  });

  it("counts each trie's entries exactly as the planner builds them", () => {
    const texts: [Direction, string][] = [
      ["ingress", "allow tcp 22"], ["ingress", "deny tcp 1-65534 from 10.0.0.0/8"], ["ingress", "allow udp 53 from 10.0.0.0/8 to 10.1.2.3"],
      ["egress", "deny any to 2001:db8::/32"], ["egress", "allow icmp"], ["ingress", "deny icmp from 2001:db8::/48"], ["egress", "allow tcp 1000-2000"],
    ];
    const rules = texts.map(([d, t]) => parseRuleText(d, t));
    const planned = trieContents(rules.map((rule, index) => ({ index, rule })));
    expect(trieEntryCounts(rules)).toEqual(Object.fromEntries([...planned].map(([map, entries]) => [map, entries.size])));
  });

  it("fits what the header was sized for: 1024 rules of up to 30 port blocks and 1024 distinct prefixes", () => {
    const rules = Array.from({ length: MAX_RULES }, (_, i) => parseRuleText(i % 2 ? "ingress" : "egress", `deny ${i % 4 < 2 ? "tcp" : "udp"} ${i + 1}-${65534 - i} from 10.${i >> 8}.${i & 255}.0/24 to 172.16.${i >> 8}.${i & 255}`));
    const counts = trieEntryCounts(rules);
    // The bound the header's size rests on: at most 30 blocks per rule, so 1024 rules never need more than 30,720.
    expect(Math.max(...rules.map((r) => l4Prefixes(r).length))).toBe(30);
    expect(30 * MAX_RULES).toBeLessThanOrEqual(L4_MAX_ENTRIES);
    expect(counts[MAPS.l4]).toBeGreaterThan(4000);
    expect(counts[MAPS.l4]).toBeLessThanOrEqual(L4_MAX_ENTRIES);
    expect(counts[MAPS.src4]).toBe(MAX_RULES);
    expect(counts[MAPS.dst4]).toBe(MAX_RULES);
    expect(Math.max(counts[MAPS.src4]!, counts[MAPS.src6]!, counts[MAPS.dst4]!, counts[MAPS.dst6]!)).toBeLessThanOrEqual(ADDR_MAX_ENTRIES);
    expect(trieCapacityIssues(rules)).toEqual([]);
  });

  it("refuses rules that need more entries than a trie holds, naming the map, the limit and the count", () => {
    const rules = ["deny tcp 1-65534", "deny udp 1-65534 from 192.0.2.0/24", "deny udp 7 from 198.51.100.0/24"].map((t) => parseRuleText("ingress", t));
    const smaller = TRIE_CAPACITY.map((t) => ({ ...t, limit: t.map === MAPS.l4 ? 60 : 2 }));
    expect(trieCapacityIssues(rules, smaller).map((i) => i.reason)).toEqual([
      "ingress, egress: the rules need 61 entries in map tcpol_l4 (protocol and port blocks); it holds at most 60",
      "ingress, egress: the rules need 3 entries in map tcpol_src4 (IPv4 'from' prefixes, and the /0 of rules without one); it holds at most 2",
    ]);
  });
});

describe("MaglevService: lb_vips, lb_backends, maglev_table", () => {
  it("names lb_vips with its limit and the count", () => {
    const news = { ...base, vips: Array.from({ length: LB_MAX_VIPS + 1 }, (_, i) => `198.51.${i >> 8}.${i & 255}:80/tcp`), backends: ["10.200.1.12"] };
    expect(failureAt(checkMaglevService(news), "vips", news).reason).toBe("vips: has 257 VIPs; the load balancer holds at most 256 (map lb_vips, and lb_vip_ctr for their counters)");
  });

  it("names lb_backends with its limit and the count", () => {
    const news = { ...base, vips: ["198.51.100.10:80/tcp"], backends: Array.from({ length: LB_MAX_BACKENDS }, (_, i) => `10.${i >> 8}.${i & 255}.1`) };
    expect(failureAt(checkMaglevService(news), "backends", news).reason).toBe(
      "backends: has 4096 backends; the load balancer holds at most 4095 (map lb_backends has 4096 slots and slot 0 names no backend)",
    );
  });

  it("names maglev_table for a table size that does not fit it, alone or as one of two tables", () => {
    const big = { ...base, vips: ["198.51.100.10:80/tcp"], backends: ["10.200.1.12"], tableSize: 2_000_003 };
    expect(failureAt(checkMaglevService(big), "tableSize", big).reason).toBe("tableSize: table size 2000003 does not fit map maglev_table (1048592 slots): at most 1048589, the largest prime that fits");
    const two = { ...base, vips: ["198.51.100.10:80/tcp", "[2001:db8::10]:80/tcp"], backends: ["10.200.1.12", "fd00::12"], tableSize: 1_048_573 };
    expect(failureAt(checkMaglevService(two), "tableSize", two).reason).toMatch(/second half of map maglev_table \(1048592 slots: at most 524287 per table\)/);
  });
});

describe("TrafficMirror: mirror_filters", () => {
  it("names mirror_filters with its limit and the count", () => {
    const news = { ...base, filters: Array.from({ length: MAX_FILTERS + 1 }, (_, i) => ({ destinationPort: i + 1 })), target: { interface: "mirror0" } };
    expect(failureAt(checkTrafficMirror(news), "filters", news).reason).toBe(
      "filters: has 65 distinct filters; the program holds at most 64 (map mirror_filters has 128 slots: two sets of 64, one live while an update writes the other)",
    );
  });
});
