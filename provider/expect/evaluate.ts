/**
 * Expectations judged without a host, for `preview`: the outcome each packet
 * would get from the entries a plan writes, by the same rules the kernel
 * programs apply (the models test/unit/tcPolicyPlan.test.ts and
 * test/kernel/xdpFirewall.test.ts check the programs against). Pure.
 *
 * What preview cannot know is said, not guessed: the flows live on the host
 * (a TcPolicy "new" packet is judged as one no live flow knows, which is what
 * the host-side run also does, in a scratch flow table), and what else is
 * attached on the interface (another chain member, a TC filter before ours).
 * Those give "unknown", never a pass.
 */
import { parsePrefix, prefixContains, type Prefix } from "../cidr";
import { groupOf } from "../maglev/plan";
import { tableGroups, type MaglevServiceInputs } from "../maglev/schema";
import { buildTable, NO_BACKEND, type MaglevTable } from "../maglev/table";
import { outcomeText, type Expectation } from "./grammar";
import { maglevFlowHash } from "./maglevHash";
import { flowOpener } from "./packet";

export type Verdict = "pass" | "drop";

export interface Evaluation {
  /**
   * What the packet would get, as an outcome text ("pass", "drop",
   * "backend 10.0.1.3:8080"); "unknown" when preview cannot tell (reason says why).
   */
  got: string;
  met: boolean | undefined;
  reason: string;
}

function judged(e: Expectation, got: Verdict, reason: string): Evaluation {
  return { got, met: "verdict" in e.outcome && got === e.outcome.verdict, reason };
}

// ---------------------------------------------------------------- XdpFirewall

/**
 * xdp_firewall.bpf.c: a packet whose source lies in any deny prefix (exact or
 * not, IPv4 or IPv6) is dropped, everything else passes. `deny` is the
 * canonical record (or list) of the planned entries.
 */
export function evaluateFirewall(deny: Record<string, unknown> | readonly string[], e: Expectation): Evaluation {
  const entries = Array.isArray(deny) ? deny : Object.keys(deny);
  const source = parsePrefix(e.source);
  const hit = entries.find((cidr) => prefixContains(parsePrefix(cidr), source));
  return hit === undefined ? judged(e, "pass", "no deny entry covers the source") : judged(e, "drop", `deny entry ${hit} covers the source`);
}

// ---------------------------------------------------------------- TcPolicy

/** The rule fields the evaluator reads (provider/tcPolicy/schema.ts PolicyRule). */
export interface RuleLike {
  direction: "ingress" | "egress";
  action: "allow" | "deny";
  protocol: "tcp" | "udp" | "icmp" | "any";
  ports?: readonly [number, number];
  from?: string;
  to?: string;
}

export interface PolicyLike {
  rules: readonly RuleLike[];
  ingressDefault: "allow" | "deny";
  egressDefault: "allow" | "deny";
  stateful: boolean;
  /** The management path the lifecycle writes (desiredPolicy's failsafe): TCP on this local port, optionally with one peer. */
  failsafe?: { port: number; peer?: string };
}

const prefixCache = new Map<string, Prefix>();
function prefixOf(cidr: string): Prefix {
  let p = prefixCache.get(cidr);
  if (!p) prefixCache.set(cidr, (p = parsePrefix(cidr)));
  return p;
}

/** tc_policy.bpf.c match_rules, read directly: the test/unit/tcPolicyPlan.test.ts model. */
function ruleMatches(r: RuleLike, e: Expectation): boolean {
  if (r.direction !== e.hook) return false;
  if (r.protocol !== "any" && r.protocol !== e.protocol) return false;
  if (r.ports && (e.destinationPort === undefined || e.destinationPort < r.ports[0] || e.destinationPort > r.ports[1])) return false;
  if (r.from && !prefixContains(prefixOf(r.from), parsePrefix(e.source))) return false;
  if (r.to && !prefixContains(prefixOf(r.to), parsePrefix(e.destination))) return false;
  return true;
}

function ruleText(r: RuleLike): string {
  const parts: string[] = [r.direction, r.action, r.protocol];
  if (r.ports) parts.push(r.ports[0] === r.ports[1] ? String(r.ports[0]) : `${r.ports[0]}-${r.ports[1]}`);
  if (r.from) parts.push("from", r.from);
  if (r.to) parts.push("to", r.to);
  return parts.join(" ");
}

/** The management path: TCP whose local port (ingress: destination, egress: source) is the failsafe port. */
function isFailsafe(policy: PolicyLike, e: Expectation): boolean {
  const f = policy.failsafe;
  if (!f || f.port === 0 || e.protocol !== "tcp") return false;
  const localPort = e.hook === "ingress" ? e.destinationPort : e.sourcePort;
  if (localPort !== f.port) return false;
  if (f.peer === undefined) return true;
  const peer = e.hook === "ingress" ? e.source : e.destination;
  const want = parsePrefix(f.peer);
  return want.family === e.family && prefixContains(want, parsePrefix(peer));
}

/** The rules alone: deny beats allow, no match takes the hook's default. */
function byRules(policy: PolicyLike, e: Expectation): { verdict: Verdict; reason: string } {
  if (isFailsafe(policy, e)) return { verdict: "pass", reason: "the management path (failsafe) always passes" };
  const matching = policy.rules.filter((r) => ruleMatches(r, e));
  const deny = matching.find((r) => r.action === "deny");
  if (deny) return { verdict: "drop", reason: `rule "${ruleText(deny)}"` };
  if (matching.length > 0) return { verdict: "pass", reason: `rule "${ruleText(matching[0]!)}"` };
  const fallback = e.hook === "ingress" ? policy.ingressDefault : policy.egressDefault;
  return { verdict: fallback === "allow" ? "pass" : "drop", reason: `no rule matches: the ${e.hook} default, ${fallback}` };
}

/**
 * tc_policy.bpf.c on the planned policy. A new packet: the failsafe, then the
 * rules (no live flow, as in the host-side scratch run). A reply of a stateful
 * policy: its flow is opened by the packet the other way through the other hook
 * (packet.ts flowOpener); when the rules let that opener through, the flow is
 * live and the reply passes before any rule; otherwise the reply meets the
 * rules like any packet. A stateless policy judges a reply by the rules alone.
 */
export function evaluateTcPolicy(policy: PolicyLike, e: Expectation): Evaluation {
  if (!e.reply || !policy.stateful) {
    const { verdict, reason } = byRules(policy, e);
    return judged(e, verdict, reason);
  }
  if (e.protocol === "tcp" && e.flags?.includes("syn") && !e.flags.includes("ack")) {
    // A bare SYN against a flow the other side opened is a new connection reusing
    // the tuple; the program's handling of it depends on the flow's state.
    return { got: "unknown", met: undefined, reason: "a reply that is a bare SYN depends on the live flow's state; run it on the host" };
  }
  // The packet the probe sends first to open the flow (packet.ts), judged by the rules.
  const opener = flowOpener(e).expectation;
  const opened = byRules(policy, opener);
  if (opened.verdict === "pass") {
    const { verdict, reason } = isFailsafe(policy, e) ? byRules(policy, e) : { verdict: "pass" as const, reason: `its flow is live: the ${opener.hook} packet that opens it passes (${opened.reason})` };
    return judged(e, verdict, reason);
  }
  const own = byRules(policy, e);
  return judged(e, own.verdict, `no flow: the ${opener.hook} packet that would open it is dropped (${opened.reason}); the reply itself: ${own.reason}`);
}

// ---------------------------------------------------------------- MaglevService

/**
 * xdp_maglev.bpf.c on the planned service: a packet to no VIP (address, port,
 * protocol) passes to the host, ICMP among them; a packet to a VIP goes to the
 * backend its flow hashes to in the VIP's table (plan.ts tableImage: the same
 * groups, weights and size), or is dropped when the table has no backend. A new
 * flow follows the table, as in the host-side probe copy, whose connection
 * table starts empty. Not known without the host: whether the FIB or a MAC
 * reaches the backend (DSR drops when neither does), and NAT replies, which
 * depend on the live NAT records ("unknown").
 */
export function evaluateMaglev(
  service: Pick<MaglevServiceInputs, "mode" | "vips" | "backends" | "tableSize">,
  e: Expectation,
  tables: Map<string, MaglevTable> = new Map(),
): Evaluation {
  const vip = Object.values(service.vips).find((v) => v.address === e.destination && v.port === e.destinationPort && v.protocol === e.protocol);
  if (!vip || e.protocol === "icmp") {
    const fromBackend = Object.values(service.backends).some((b) => b.address === e.source && (b.port ?? e.sourcePort) === e.sourcePort);
    if (service.mode === "nat" && fromBackend && e.protocol !== "icmp") {
      return { got: "unknown", met: undefined, reason: "a packet from a backend may be the reply of a NAT flow, which only the host's NAT records know" };
    }
    return judged(e, "pass", "not for a VIP: the balancer passes it to the host");
  }
  const group = groupOf(service.mode, vip);
  let table = tables.get(group);
  if (!table) {
    const ids = tableGroups(service.mode, service.vips, service.backends).get(group) ?? [];
    table = buildTable(ids.map((id) => ({ id, weight: service.backends[id]!.weight })), service.tableSize);
    tables.set(group, table);
  }
  const slotIndex = maglevFlowHash({ src: e.source, dst: e.destination, srcPort: e.sourcePort!, dstPort: e.destinationPort!, protocol: e.protocol }) % table.size;
  const slot = table.slots[slotIndex]!;
  if (slot === NO_BACKEND) return judged(e, "drop", "the VIP's table has no backend");
  const id = table.backends[slot]!;
  const backend = service.backends[id]!;
  const got = outcomeText({ backend: { address: backend.address, ...(backend.port !== undefined ? { port: backend.port } : {}) } });
  const met = "backend" in e.outcome && e.outcome.backend.address === backend.address && (e.outcome.backend.port === undefined || e.outcome.backend.port === backend.port);
  return { got, met, reason: `slot ${slotIndex} of the ${group} table (the flow's hash) names backend ${id}` };
}
