/**
 * Inputs of TcPolicy, as the user writes them and as check() canonicalises them.
 *
 * A rule is one line of text (or the same as an object):
 *
 *   <allow|deny> <tcp|udp|icmp|any> [<port>|<low>-<high>] [from <cidr>] [to <cidr>]
 *
 * e.g. "allow tcp 22", "deny tcp 22 from 10.0.0.0/8", "allow udp 5000-6000 to
 * 2001:db8::/32", "deny icmp from 203.0.113.0/24". The port is the packet's
 * destination port; "icmp" means ICMP for IPv4 and ICMPv6 for IPv6. A rule
 * without from/to applies to both families. Each direction keeps its rules as
 * an object keyed by the canonical text, so a preview shows `+`/`-` per rule.
 * A deny rule beats any allow rule that matches the same packet; a packet no
 * rule matches gets the direction's default.
 */
import type * as pulumi from "@pulumi/pulumi";
import { z } from "zod";
import { canonicalInputPrefix, CidrError, parsePrefix, type Family } from "../cidr";
import { checkInputs, pathFailures, UNKNOWN } from "../dynamicAdapter";
import { expectationSet } from "../expect/schema";
import { withPreviewNote } from "../expect/preview";
import type { ExpectationResult } from "../expect/hostRun";
import { credentialsSchema, hostSchema } from "../remote/hostSchema";
import { lockoutInputs } from "../remote/lockout";
import { canonicalItems, interfaceName, pinName } from "../validation";
import { sharedListDrift, sharedListRef } from "../sharedList";
import { ADDR_MAX_ENTRIES, L4_MAX_ENTRIES, MAPS, MAX_RULES } from "./codec";
import { l4Prefixes, ruleFamilies } from "./plan";
import { boundDirections, withRuleSets } from "./ruleSets";

export { MAX_RULES };

export type Direction = "ingress" | "egress";
const ACTIONS = ["allow", "deny"] as const;
const PROTOCOLS = ["tcp", "udp", "icmp", "any"] as const;
export type Action = (typeof ACTIONS)[number];
export type Protocol = (typeof PROTOCOLS)[number];
export const DIRECTIONS: readonly Direction[] = ["ingress", "egress"];

/** TC priority of a policy's filters unless `priority` says otherwise. */
export const DEFAULT_PRIORITY = 2;

/** One rule in canonical form. */
export interface PolicyRule {
  direction: Direction;
  action: Action;
  protocol: Protocol;
  /** Inclusive destination port range; absent: every port (and every protocol's packets without ports). */
  ports?: readonly [number, number];
  /** Canonical CIDR of the source, e.g. "10.0.0.0/8". */
  from?: string;
  /** Canonical CIDR of the destination. */
  to?: string;
}

export class RuleError extends Error {}


function parsePort(text: string): number {
  if (!/^\d{1,5}$/.test(text)) throw new RuleError(`"${text}" is not a port number (1-65535)`);
  const port = Number(text);
  if (port === 0) throw new RuleError("port 0 is not a port that traffic can be addressed to (use 1-65535)");
  if (port > 65535) throw new RuleError(`port ${port} is out of range (1-65535)`);
  return port;
}

function parsePorts(text: string): [number, number] {
  const [lowText, highText, ...rest] = text.split("-");
  if (rest.length > 0 || lowText === undefined) throw new RuleError(`"${text}" is not a port or a port range like 5000-6000`);
  const low = parsePort(lowText);
  const high = highText === undefined ? low : parsePort(highText);
  if (low > high) throw new RuleError(`port range ${low}-${high} is reversed; write ${high}-${low}`);
  return [low, high];
}

function canonicalCidr(text: string, keyword: "from" | "to"): string {
  try {
    return canonicalInputPrefix(text);
  } catch (err) {
    throw new RuleError(`${keyword}: ${err instanceof CidrError ? err.message : String(err)}`);
  }
}

export function familyOf(cidr: string): Family {
  return parsePrefix(cidr).family;
}

/** Checks what a rule's fields allow together and returns it in canonical form. */
function canonicalRule(direction: Direction, action: string, protocol: string, ports: [number, number] | undefined, from: string | undefined, to: string | undefined): PolicyRule {
  if (!ACTIONS.includes(action as Action)) throw new RuleError(`"${action}" is not an action: use allow or deny`);
  if (!PROTOCOLS.includes(protocol as Protocol)) throw new RuleError(`"${protocol}" is not a protocol: use tcp, udp, icmp or any`);
  if (ports && protocol === "icmp") throw new RuleError("icmp has no ports: remove the port, or use tcp or udp");
  if (ports && protocol === "any") throw new RuleError("a port needs protocol tcp or udp (\"any\" includes protocols without ports)");
  const rule: PolicyRule = { direction, action: action as Action, protocol: protocol as Protocol };
  if (ports) rule.ports = ports;
  if (from !== undefined) rule.from = canonicalCidr(from, "from");
  if (to !== undefined) rule.to = canonicalCidr(to, "to");
  if (rule.from && rule.to && familyOf(rule.from) !== familyOf(rule.to)) {
    throw new RuleError(`from ${rule.from} and to ${rule.to} are different address families: the rule could never match`);
  }
  return rule;
}

/** Parses the text form of a rule; throws RuleError saying what is wrong. */
export function parseRuleText(direction: Direction, text: string): PolicyRule {
  const words = text.trim().split(/\s+/).filter(Boolean);
  const [action, protocol, ...rest] = words;
  if (action === undefined || protocol === undefined) {
    throw new RuleError(`"${text}" is not a rule: write "<allow|deny> <tcp|udp|icmp|any> [port[-port]] [from <cidr>] [to <cidr>]"`);
  }
  let ports: [number, number] | undefined;
  if (rest[0] !== undefined && /^[\d-]+$/.test(rest[0])) ports = parsePorts(rest.shift()!);
  let from: string | undefined;
  let to: string | undefined;
  while (rest.length > 0) {
    const keyword = rest.shift()!;
    const value = rest.shift();
    if (keyword !== "from" && keyword !== "to") throw new RuleError(`unexpected "${keyword}" in "${text}": after the protocol and port come "from <cidr>" and "to <cidr>"`);
    if (value === undefined) throw new RuleError(`"${keyword}" needs a CIDR after it`);
    if ((keyword === "from" ? from : to) !== undefined) throw new RuleError(`"${keyword}" appears twice in "${text}"`);
    if (keyword === "from") from = value;
    else to = value;
  }
  return canonicalRule(direction, action.toLowerCase(), protocol.toLowerCase(), ports, from, to);
}

/** The canonical text of a rule (without its direction), the key it is stored under. */
export function ruleText(rule: PolicyRule): string {
  const parts: string[] = [rule.action, rule.protocol];
  if (rule.ports) parts.push(rule.ports[0] === rule.ports[1] ? String(rule.ports[0]) : `${rule.ports[0]}-${rule.ports[1]}`);
  if (rule.from) parts.push("from", rule.from);
  if (rule.to) parts.push("to", rule.to);
  return parts.join(" ");
}

/** Identifies a rule across both directions. */
export function ruleId(rule: PolicyRule): string {
  return `${rule.direction} ${ruleText(rule)}`;
}

/** A rule as an object; the same as the text "<action> <protocol> [port] [from <cidr>] [to <cidr>]". */
export const ruleObject = z.strictObject({
  /** "allow" or "deny"; a deny rule beats any allow rule matching the same packet. */
  action: z.enum(ACTIONS),
  /** "icmp" means ICMP for IPv4 and ICMPv6 for IPv6; "any" every IP protocol. */
  protocol: z.enum(PROTOCOLS),
  /** Destination port (22, "22") or inclusive range ("5000-6000"), 1-65535; tcp and udp only. Default: every port. */
  port: z.union([z.number(), z.string()]).optional(),
  /** Source address or CIDR prefix, IPv4 or IPv6. Default: any. A rule with an address applies to its family only. */
  from: z.string().optional(),
  /** Destination address or CIDR prefix, of the same family as `from`. Default: any. */
  to: z.string().optional(),
});

type RuleInput = string | z.infer<typeof ruleObject>;

function ruleFromInput(direction: Direction, input: RuleInput): PolicyRule {
  if (typeof input === "string") return parseRuleText(direction, input);
  let ports: [number, number] | undefined;
  if (input.port !== undefined) {
    if (typeof input.port === "number" && !Number.isInteger(input.port)) throw new RuleError(`port ${input.port} is not a whole number`);
    ports = parsePorts(String(input.port));
  }
  return canonicalRule(direction, input.action, input.protocol, ports, input.from, input.to);
}

/** Orders rules for display: by protocol, then port, then the rest of the text. */
function compareRuleText(a: string, b: string): number {
  return a.split(" ").slice(1).join(" ").localeCompare(b.split(" ").slice(1).join(" "), "en", { numeric: true }) || a.localeCompare(b);
}

/**
 * The rules of one direction (or of a TcRuleSet, whose rules have none until a policy
 * binds them), given as a list of texts or objects (any order, duplicates allowed) or
 * as the canonical object form kept in state; always becomes
 * `{ "<canonical text>": "<action>" }` with sorted keys.
 */
export function ruleRecord(direction: Direction) {
  return z
    .union([z.array(z.union([z.string(), ruleObject])), z.record(z.string(), z.enum(ACTIONS))])
    .transform((raw, ctx) => {
      const canonical = canonicalItems(raw, ctx, {
        parse: (input) => ruleFromInput(direction, input),
        text: ruleText,
        value: (rule) => rule.action,
        valueName: "the rule's action",
        UserError: RuleError,
      });
      if (canonical.size > MAX_RULES) {
        ctx.addIssue({ code: "custom", message: `has ${canonical.size} rules; the policy holds at most ${MAX_RULES} (map ${MAPS.rules} has one slot per rule, ingress and egress together)` });
      }
      const sorted: Record<string, Action> = {};
      for (const text of [...canonical.keys()].sort(compareRuleText)) sorted[text] = canonical.get(text)!.action;
      return sorted;
    });
}

function directionPolicy(direction: Direction) {
  return z
    .strictObject({
      /**
       * What happens to a packet that no rule (and, when stateful, no live flow)
       * matches. Default "allow". A default-deny ingress also drops DHCP replies
       * (broadcast or unicast to a lease the host does not hold yet), multicast
       * (mDNS, VRRP, routing protocols) and anything else not allowed explicitly:
       * add e.g. "allow udp 68" on a DHCP client. ARP, IPv6 neighbour discovery
       * and MLD always pass.
       */
      default: z.enum(ACTIONS).default("allow"),
      /**
       * Rules as texts ("allow tcp 8080", "deny udp 5000-6000 from 10.0.0.0/8",
       * "allow icmp") or objects, any order, duplicates allowed; at most 1,024 in
       * ingress and egress together. A deny rule beats any allow rule matching the
       * same packet. Kept keyed by the canonical text (`{ "<canonical text>": action }`),
       * so a preview shows each rule added or removed. The port is the packet's
       * destination port (on egress the remote one). Changing rules rewrites only the
       * map entries that change, with no detach.
       */
      rules: ruleRecord(direction).prefault([]),
      /**
       * A TcRuleSet to apply instead of `rules` (held once in the stack's state, however
       * many policies apply it): its name, digest and count, which is all this policy's
       * state carries of it. The SDK fills it from the direction's `ruleSet`.
       */
      ruleSet: sharedListRef.optional(),
      /**
       * Set by `pulumi refresh`, never by you: rules this hook holds beyond the rule set
       * the host recorded as applied ("stray") or lacks ("missing"). The next `up`
       * removes the strays and restores the missing rules.
       */
      drift: sharedListDrift.optional(),
    })
    .prefault({});
}

const seconds = (fallback: number) =>
  z.number().min(0.001, "must be at least 0.001 seconds").max(30 * 86_400, "must be at most 30 days (2592000 seconds)").default(fallback);

export const tcPolicySchema = z.object({
  /** The host. Changing it replaces the policy. */
  host: hostSchema,
  credentials: credentialsSchema.default({}),
  /** An Ethernet interface whose TC hooks carry the policy, e.g. "eth0" (others are refused). Changing it replaces the policy. */
  interface: interfaceName,
  /** The pin directory name, /sys/fs/bpf/bpfleet/tc-policy/<name>/: the SDK's `pinName`, documented there. */
  name: pinName,
  /** Policy for packets the interface receives. Default: allow, no rules. */
  ingress: directionPolicy("ingress"),
  /** Policy for packets the interface sends. Default: allow, no rules. */
  egress: directionPolicy("egress"),
  /**
   * Track flows (5-tuple, IPv4 and IPv6): a packet of a live flow passes both
   * ways before any rule is consulted, and a packet the rules let through
   * records its flow. With ingress default "deny", the host's own outbound
   * connections get their replies (the egress hook recorded them) and only the
   * allowed services can be reached. Flows survive rule updates and program
   * upgrades. Default false.
   */
  stateful: z.boolean().default(false),
  /**
   * Idle timeouts of tracked flows, in seconds. An idle flow is gone as soon as its
   * timeout has passed: the program checks the idle time when it looks the flow up
   * (no BPF timers), and the flow table (an LRU hash) reclaims entries never seen
   * again. A TCP RST removes a flow at once; a FIN shortens it to tcpTransitory. A
   * changed timeout applies to live flows.
   */
  timeouts: z
    .strictObject({
      /** A TCP flow seen in both directions. Default 21600 (6 hours). */
      tcpEstablished: seconds(21_600),
      /** A TCP flow before its first reply, and after a FIN. Default 120. */
      tcpTransitory: seconds(120),
      /** UDP, ICMP and every other protocol. Default 60. */
      other: seconds(60),
    })
    .prefault({}),
  /**
   * false loads the programs and writes the maps without attaching them (staging).
   * Taking an attached policy off its hooks is guarded like any other change: if the
   * proof fails, the revert puts its filters back. Default true.
   */
  attached: z.boolean().default(true),
  /**
   * A policy must let in TCP to `host.port` (and, stateless, let the replies
   * out), checked before anything changes and again with the address the
   * provider really connects from, and the programs never drop the provider's
   * own SSH session (failsafe). true drops both, for hosts managed over another
   * path; the revert timer (`lockoutGuard`) stays. Default false.
   */
  allowLockout: z.boolean().default(false),
  /**
   * Before a change on the interface that carries the management SSH session,
   * arm a revert timer on the host; after it, prove that a fresh SSH login
   * works, then disarm. If the login fails, the host undoes the change by
   * itself within `lockoutRevertSeconds` (rules, programs and filters as they
   * were; a new policy is removed whole) and the update fails saying what would
   * have locked it out. false applies changes without the timer. Default true.
   */
  lockoutGuard: lockoutInputs.lockoutGuard,
  /** Seconds until an undisarmed revert timer undoes the change (10–3600). Default 30. */
  lockoutRevertSeconds: lockoutInputs.lockoutRevertSeconds,
  /**
   * TC priority of both filters, 1–65535 (lower runs first; the kernel keeps one
   * filter kind and protocol per priority, so a priority holding a non-BPF
   * filter, or one for a single protocol, is refused). Default 2: after a
   * TrafficMirror at its default 1, before filters added without a priority (tc
   * numbers those from 49152 down). A filter at a lower priority that returns
   * TC_ACT_OK ends the hook before the policy sees the packet.
   *
   * Changes in place, not by replacement: the filters at the new priority are
   * added (running the same programs against the same maps, so rules and live
   * flows carry over) before those at the old one are removed, so no packet
   * passes unjudged. For that moment a packet may be judged twice with the same
   * verdict (its counters count it twice). Under the lockout guard, the host
   * puts the old filters back if the change cuts the management path.
   */
  priority: z.number().int("must be a whole number").min(1, "must be at least 1 (0 would let the kernel pick one)").max(65535, "must be at most 65535 (TC priorities are 16 bits)").default(DEFAULT_PRIORITY),
  /**
   * Packets that must pass or be dropped, proven on the host on every create and
   * update: texts `"<ingress|egress> [new|reply] <tcp|udp|icmp> <source> > <destination> [tcp flags]: <pass|drop>"`
   * or objects. "reply" is a packet of a flow the other side opened (e.g. `"ingress reply
   * tcp 192.0.2.9:443 > 10.0.0.7:51000: pass"`: the answer to a connection the host made):
   * its flow is opened first by the packet the other way through the other hook. After the
   * change is applied, while the revert timer is armed, each runs through a probe copy of
   * the policy's programs that shares its rules but has a scratch flow table (the live
   * flows are never touched); any miss reverts the host at once and fails the update with
   * a table (expectation, wanted, got, host). Kept keyed by the canonical text. At most
   * 1,000. Default: none.
   */
  expect: expectationSet("tcPolicy").default({}),
});

export type TcPolicyInputs = z.infer<typeof tcPolicySchema>;
export type DirectionPolicy = TcPolicyInputs["ingress"];

/** Every rule of the inputs, in canonical form, ingress first. */
export function rulesOf(inputs: Pick<TcPolicyInputs, "ingress" | "egress">): PolicyRule[] {
  return DIRECTIONS.flatMap((direction) => Object.keys(inputs[direction].rules).map((text) => parseRuleText(direction, text)));
}

// ------------------------------------------------------------ lockout guard

/** Ports from which a management client connects (RFC 6335 dynamic and registered ports). */
export const CLIENT_PORTS: readonly [number, number] = [1024, 65535];

function coversPort(rule: PolicyRule, port: number): boolean {
  if (rule.protocol !== "tcp" && rule.protocol !== "any") return false;
  return !rule.ports || (rule.ports[0] <= port && port <= rule.ports[1]);
}

function isUnconstrained(cidr: string | undefined): boolean {
  return cidr === undefined || parsePrefix(cidr).prefixLength === 0;
}

/**
 * TCP ports of packets in one direction that the rules let through from an
 * unknown peer: a deny rule that does not name the peer's side (from on
 * ingress, to on egress) blocks its ports for everyone; an allow rule opens
 * its ports for someone.
 */
function admittedPorts(policy: DirectionPolicy, direction: Direction): Uint8Array {
  const rules = Object.keys(policy.rules).map((text) => parseRuleText(direction, text));
  const peerSide = (r: PolicyRule) => (direction === "ingress" ? r.from : r.to);
  const admitted = new Uint8Array(65536).fill(policy.default === "allow" ? 1 : 0);
  const fill = (r: PolicyRule, value: number) => {
    const [low, high] = r.ports ?? [1, 65535];
    admitted.fill(value, low, high + 1);
  };
  for (const r of rules) if (r.action === "allow" && (r.protocol === "tcp" || r.protocol === "any")) fill(r, 1);
  for (const r of rules) if (r.action === "deny" && (r.protocol === "tcp" || r.protocol === "any") && isUnconstrained(peerSide(r))) fill(r, 0);
  admitted[0] = 0;
  return admitted;
}

export interface LockoutIssue {
  property: string;
  reason: string;
}

/**
 * Why the policy would cut the management SSH path, judged without knowing
 * the manager's address (check is pure): inbound TCP to `managementPort` must
 * be let through from someone, and in stateless mode the replies (TCP to the
 * client's port, 1024-65535) must be let out. The lifecycle repeats the check
 * with the real SSH peer before it changes the host.
 */
export function lockoutIssues(inputs: Pick<TcPolicyInputs, "ingress" | "egress" | "stateful" | "allowLockout">, managementPort: number): LockoutIssue[] {
  if (inputs.allowLockout) return [];
  const issues: LockoutIssue[] = [];
  const override = "Add a rule that allows it, or set allowLockout: true if this host is managed over another interface.";
  if (!admittedPorts(inputs.ingress, "ingress")[managementPort]) {
    const blocking = Object.keys(inputs.ingress.rules).filter((text) => {
      const r = parseRuleText("ingress", text);
      return r.action === "deny" && coversPort(r, managementPort) && isUnconstrained(r.from);
    });
    issues.push({
      property: "ingress",
      reason:
        blocking.length > 0
          ? `ingress: rule "${blocking[0]}" drops inbound TCP to port ${managementPort}, the management SSH path, from every source. ${override}`
          : `ingress: the policy does not allow inbound TCP to port ${managementPort}, the management SSH path (default "${inputs.ingress.default}" and no allow rule covers it). ${override}`,
    });
  }
  if (!inputs.stateful) {
    const out = admittedPorts(inputs.egress, "egress");
    const [low, high] = CLIENT_PORTS;
    let firstBlocked = -1;
    for (let port = low; port <= high && firstBlocked < 0; port++) if (!out[port]) firstBlocked = port;
    if (firstBlocked >= 0) {
      issues.push({
        property: "egress",
        reason:
          `egress: the policy drops outbound TCP to port ${firstBlocked}, so the SSH server's replies to a management client using that port cannot leave ` +
          `(a stateless policy must let out TCP to ports ${low}-${high}; a stateful one lets replies of admitted connections out by itself). ${override}`,
      });
    }
  }
  return issues;
}

/**
 * max_entries of each rule trie (bpf/include/tc_policy.h; codec.ts states them
 * and test/kernel/tcPolicy.test.ts proves them against the compiled object),
 * with what one entry is, for messages.
 */
export const TRIE_CAPACITY = [
  { map: MAPS.l4, limit: L4_MAX_ENTRIES, entries: "protocol and port blocks" },
  { map: MAPS.src4, limit: ADDR_MAX_ENTRIES, entries: "IPv4 'from' prefixes, and the /0 of rules without one" },
  { map: MAPS.src6, limit: ADDR_MAX_ENTRIES, entries: "IPv6 'from' prefixes, and the /0 of rules without one" },
  { map: MAPS.dst4, limit: ADDR_MAX_ENTRIES, entries: "IPv4 'to' prefixes, and the /0 of rules without one" },
  { map: MAPS.dst6, limit: ADDR_MAX_ENTRIES, entries: "IPv6 'to' prefixes, and the /0 of rules without one" },
] as const;

/** Entries each rule trie needs for these rules: one per distinct key (provider/tcPolicy/plan.ts trieContents). */
export function trieEntryCounts(rules: readonly PolicyRule[]): Record<string, number> {
  const keys = new Map<string, Set<string>>(TRIE_CAPACITY.map((t) => [t.map, new Set<string>()]));
  for (const rule of rules) {
    for (const l4 of l4Prefixes(rule)) keys.get(MAPS.l4)!.add(`${l4.direction} ${l4.protocol} ${l4.port}/${l4.prefixLength}`);
    for (const family of ruleFamilies(rule)) {
      keys.get(family === 4 ? MAPS.src4 : MAPS.src6)!.add(rule.from ?? "any");
      keys.get(family === 4 ? MAPS.dst4 : MAPS.dst6)!.add(rule.to ?? "any");
    }
  }
  return Object.fromEntries([...keys].map(([map, set]) => [map, set.size]));
}

/**
 * Every trie's capacity, checked before anything changes (issue 15: a full map
 * found half way through a batch left the host between old and new). The
 * sizes in tc_policy.h are chosen so that 1024 rules always fit (at most 30
 * port blocks per rule); this keeps that true if either side changes.
 */
export function trieCapacityIssues(rules: readonly PolicyRule[], capacity: readonly { map: string; limit: number; entries: string }[] = TRIE_CAPACITY): LockoutIssue[] {
  const counts = trieEntryCounts(rules);
  return capacity
    .filter((t) => (counts[t.map] ?? 0) > t.limit)
    .map((t) => ({ property: "ingress", reason: `ingress, egress: the rules need ${counts[t.map]} entries in map ${t.map} (${t.entries}); it holds at most ${t.limit}` }));
}

/**
 * Checks across properties that zod's per-property parse cannot see: the
 * total number of rules, and the lockout guard. Takes canonical inputs.
 */
export function policyIssues(inputs: Pick<TcPolicyInputs, "ingress" | "egress" | "stateful" | "allowLockout"> & { host?: { port?: number } }): LockoutIssue[] {
  const issues: LockoutIssue[] = [];
  const total = Object.keys(inputs.ingress.rules).length + Object.keys(inputs.egress.rules).length;
  if (total > MAX_RULES) {
    issues.push({ property: "ingress", reason: `ingress, egress: ${total} rules in all; the policy holds at most ${MAX_RULES} (ingress and egress together): map ${MAPS.rules} has one slot per rule` });
  } else {
    issues.push(...trieCapacityIssues(rulesOf(inputs)));
  }
  return [...issues, ...lockoutIssues(inputs, inputs.host?.port ?? 22)];
}

/**
 * check() for TcPolicy: the per-property schema (checkInputs), then the checks
 * across properties once the properties they read are known. checkInputs
 * parses a pick of the known properties, which drops object-level refinements,
 * so they live here.
 */
export function checkTcPolicy(news: Record<string, unknown>): pulumi.dynamic.CheckResult {
  const result = checkInputs(tcPolicySchema, news);
  if (result.failures?.length || !result.inputs) return result;
  const both = DIRECTIONS.filter((d) => {
    const policy = (result.inputs as Record<string, Partial<DirectionPolicy> | undefined>)[d];
    return policy?.ruleSet !== undefined && Object.keys(policy.rules ?? {}).length > 0;
  });
  if (both.length > 0) return { failures: both.map((d) => ({ property: d, reason: `${d}: give the rules either as \`rules\` or as a \`ruleSet\`, not both` })) };
  // A hook bound to a TcRuleSet is judged with the set's rules, registered by the set's
  // own check, which the engine runs first (the policy depends on the set). Without
  // them (a set not in this deployment) the lifecycle judges them on the host instead.
  const withRules = withRuleSets(result.inputs as unknown as TcPolicyInputs);
  if (!withRules) return result;
  const bound = boundDirections(withRules).length > 0;
  const inputs = withRules as unknown as Record<string, unknown>;
  const host = inputs.host as { port?: unknown } | string | undefined;
  const port = typeof host === "object" ? host.port : undefined;
  // Judged once the rules and the management port are known (sshd's default when the host omits it).
  const needed = [inputs.ingress, inputs.egress, inputs.stateful, inputs.allowLockout, host, port];
  if (needed.some((value) => JSON.stringify(value ?? null).includes(UNKNOWN))) return result;
  const issues = policyIssues({ ...(inputs as Pick<TcPolicyInputs, "ingress" | "egress" | "stateful" | "allowLockout">), host: { port: typeof port === "number" ? port : 22 } });
  if (issues.length > 0) return { failures: pathFailures(issues, news) };
  // With a rule set the rules are not among this policy's inputs: preview does not
  // evaluate the expectations against them, and the host run during `up` stays the proof.
  return bound ? result : withPreviewNote("tcPolicy", result, ["ingress", "egress", "stateful", "expect"]);
}

// ------------------------------------------------------------ outputs

export interface TcPolicyCounters {
  ingressAllowedPackets: number;
  ingressAllowedBytes: number;
  ingressDeniedPackets: number;
  ingressDeniedBytes: number;
  egressAllowedPackets: number;
  egressAllowedBytes: number;
  egressDeniedPackets: number;
  egressDeniedBytes: number;
  flowsCreated: number;
  flowsExpired: number;
  flowsReset: number;
}

export interface TcPolicyOutputs extends TcPolicyInputs {
  /** sha256 of the BPF object that is loaded. */
  objectSha256: string;
  /** Program ids and tags, by hook. */
  programs: Record<Direction, { id: number; tag: string }>;
  counters: TcPolicyCounters;
  /** Packets each rule decided, by direction and canonical text. */
  ruleHits: Record<Direction, Record<string, number>>;
  /** Flow entries in the table when last read. */
  liveFlows: number;
  /** Each packet expectation's result on the host at the last create/update, by canonical text (provider/expect/hostRun.ts). */
  expectResults: Record<string, ExpectationResult>;
}
