/**
 * TcPolicy's lockout guard (DESIGN.md): the failsafe written into the policy's
 * config, the check with the real management peer that check() could not make,
 * and the script the host runs by itself to undo a change when the provider does
 * not come back to disarm it.
 */
import { formatAddress, parsePrefix, prefixContains, type Family, type Prefix } from "../cidr";
import { batchText, type MapEntry, type MapOperation } from "../remote/mapOperations";
import type { PinLayout } from "../remote/pins";
import { HostPreconditionError } from "../remote/preflight";
import type { SshSession } from "../remote/ssh";
import { tcRevertScript, type FilterRevert } from "../remote/tcHook";
import type { TcFilterSlot } from "../remote/tc";
import { LAYOUTS, MAPS, PEER4_FILTER, PROGRAMS, ruleFamily } from "./codec";
import type { PolicyHostState } from "./hostState";
import { CLIENT_PORTS, DIRECTIONS, parseRuleText, type Direction, type DirectionPolicy, type PolicyRule, type TcPolicyInputs } from "./schema";

/** The address a session comes from, without the IPv4-mapped prefix sshd reports on dual-stack sockets. */
export function peerAddress(peer: string | undefined): Prefix | undefined {
  if (!peer) return undefined;
  try {
    return parsePrefix(peer.replace(/^::ffff:(?=\d+\.)/i, ""));
  } catch {
    return undefined;
  }
}

/**
 * The failsafe of the config: TCP to and from the management port, only with the
 * provider's own address when it is known; none with allowLockout.
 */
export function failsafeOf(inputs: Pick<TcPolicyInputs, "allowLockout" | "host">, peer: Prefix | undefined): { port: number; peer?: string } {
  if (inputs.allowLockout) return { port: 0 };
  return peer ? { port: inputs.host.port, peer: formatAddress(peer.bytes) } : { port: inputs.host.port };
}

// ------------------------------------------------------------ the check with the real peer

interface Probe {
  family: Family;
  /** Destination port of the TCP packet. */
  port: number;
  src?: Prefix;
  dst?: Prefix;
}

/** Whether a rule matches a TCP packet; "maybe" when it names an address the probe does not know. */
function matches(rule: PolicyRule, probe: Probe): "yes" | "no" | "maybe" {
  if (rule.protocol !== "tcp" && rule.protocol !== "any") return "no";
  if (rule.ports && (probe.port < rule.ports[0] || probe.port > rule.ports[1])) return "no";
  const family = ruleFamily(rule);
  if (family !== 0 && family !== probe.family) return "no";
  let result: "yes" | "maybe" = "yes";
  for (const [cidr, address] of [[rule.from, probe.src], [rule.to, probe.dst]] as const) {
    if (cidr === undefined) continue;
    if (!address) result = "maybe";
    else if (!prefixContains(parsePrefix(cidr), address)) return "no";
  }
  return result;
}

/** The verdict of one direction's rules on a packet, judged pessimistically where an address is unknown. */
function verdict(policy: DirectionPolicy, direction: Direction, probe: Probe): { action: "allow" | "deny"; by: string } {
  const rules = Object.keys(policy.rules).map((text) => ({ text, rule: parseRuleText(direction, text) }));
  const deny = rules.find(({ rule }) => rule.action === "deny" && matches(rule, probe) !== "no");
  if (deny) return { action: "deny", by: `rule "${deny.text}"` };
  if (rules.some(({ rule }) => rule.action === "allow" && matches(rule, probe) === "yes")) return { action: "allow", by: "" };
  return { action: policy.default, by: `the default "${policy.default}" (no allow rule covers it)` };
}

/** Representative ports of [low, high]: one per stretch in which no rule's range starts or ends. */
function portStretches(policy: DirectionPolicy, direction: Direction, low: number, high: number): number[] {
  const cuts = new Set([low]);
  for (const text of Object.keys(policy.rules)) {
    const ports = parseRuleText(direction, text).ports;
    if (!ports) continue;
    for (const edge of [ports[0], ports[1] + 1]) if (edge > low && edge <= high) cuts.add(edge);
  }
  return [...cuts].sort((a, b) => a - b);
}

export interface ManagementPath {
  /** Where the provider's SSH session comes from. */
  peer: Prefix;
  /** The host's own address on that path, when the route to the peer says. */
  local: Prefix | undefined;
  port: number;
}

/**
 * Why the policy's rules would drop the management session from the real peer
 * (check() judged them against an unknown one), or undefined. The failsafe would
 * let the session through anyway; a policy that silently does not mean what it
 * says for the one address that manages the host is refused instead.
 */
export function managementCut(inputs: Pick<TcPolicyInputs, "ingress" | "egress" | "stateful">, path: ManagementPath): string | undefined {
  const family = path.peer.family;
  const who = formatAddress(path.peer.bytes);
  const inbound = verdict(inputs.ingress, "ingress", { family, port: path.port, src: path.peer, dst: path.local });
  if (inbound.action === "deny") {
    return `ingress: ${inbound.by} drops the management SSH session (TCP from ${who}, where this provider connects from, to port ${path.port})`;
  }
  if (inputs.stateful) return undefined;
  const [low, high] = CLIENT_PORTS;
  for (const port of portStretches(inputs.egress, "egress", low, high)) {
    const outbound = verdict(inputs.egress, "egress", { family, port, src: path.local, dst: path.peer });
    if (outbound.action === "deny") {
      return `egress: ${outbound.by} drops the SSH server's replies to ${who} (TCP to its port ${port}; a stateless policy must let out TCP to ports ${low}-${high} of the manager)`;
    }
  }
  return undefined;
}

/** check() judged the rules against an unknown manager; this repeats it with the real one. */
export function refuseManagementCut(session: SshSession, inputs: TcPolicyInputs, peer: Prefix, host: PolicyHostState): void {
  let local: Prefix | undefined;
  const prefsrc = host.managementRoute?.prefsrc;
  if (prefsrc) local = peerAddress(prefsrc);
  const cut = managementCut(inputs, { peer, local, port: inputs.host.port });
  if (cut) {
    throw new HostPreconditionError(
      `${session.label}: ${cut}, and would lock the host out of management. Add a rule that allows it, or set allowLockout: true if this host is managed over another path. Nothing was changed.`,
    );
  }
}


// ------------------------------------------------------------ undoing a change on the host

const hex = (b: Uint8Array) => Buffer.from(b).toString("hex");

/**
 * The map writes that take the maps from what `operations` leave back to
 * `before` (dumps by pin path): deletes of the keys they added, then the old
 * values of the keys they changed. Hit counters are not restored.
 */
export function restoreOperations(before: ReadonlyMap<string, readonly MapEntry[] | undefined>, operations: readonly MapOperation[]): { deletes: MapOperation[]; updates: MapOperation[] } {
  const after = new Map<string, Map<string, { key: Uint8Array; value: Uint8Array | undefined }>>();
  for (const o of operations) {
    if (o.map.endsWith(`/${MAPS.hits}`)) continue;
    let byKey = after.get(o.map);
    if (!byKey) after.set(o.map, (byKey = new Map()));
    byKey.set(hex(o.key), { key: o.key, value: o.op === "update" ? o.value : undefined });
  }
  const deletes: MapOperation[] = [];
  const updates: MapOperation[] = [];
  for (const [map, byKey] of after) {
    const was = new Map((before.get(map) ?? []).map((e) => [hex(e.key), e.values[0]!]));
    for (const [k, now] of byKey) {
      const old = was.get(k);
      if (old === undefined) {
        if (now.value !== undefined) deletes.push({ op: "delete", map, key: now.key });
      } else if (now.value === undefined || hex(now.value) !== hex(old)) {
        updates.push({ op: "update", map, key: now.key, value: old });
      }
    }
  }
  // The IPv4 peer filters go back while off (tc_policy.h, TCPOL_PEER4_FILTER): the config
  // as the change left it but with the filters off first, the config as it was last.
  const isConfig = (o: MapOperation) => o.map.endsWith(`/${MAPS.config}`);
  const first: MapOperation[] = [];
  const configNow = [...after].find(([map]) => map.endsWith(`/${MAPS.config}`));
  if (updates.some((o) => o.map.endsWith(`/${MAPS.peer4}`)) && configNow) {
    const was = new Map((before.get(configNow[0]) ?? []).map((e) => [hex(e.key), e.values[0]!]));
    for (const { key, value } of configNow[1].values()) {
      if (!value || !(value[LAYOUTS.tcpol_config.members.skip_tries]! & PEER4_FILTER)) continue;
      const off = Uint8Array.from(value);
      off[LAYOUTS.tcpol_config.members.skip_tries]! &= ~PEER4_FILTER;
      first.push({ op: "update", map: configNow[0], key, value: off });
      // The change may leave the config as it was (only the rules and filters moved): it
      // was not among the updates, yet the write above turned its filters off, so the
      // config as it was goes back last all the same (a rollback once left them off).
      const old = was.get(hex(key));
      if (old !== undefined && !updates.some((o) => o.map === configNow[0] && hex(o.key) === hex(key))) updates.push({ op: "update", map: configNow[0], key, value: old });
    }
  }
  return { deletes, updates: [...first, ...updates.filter((o) => !isConfig(o)), ...updates.filter(isConfig)] };
}

export interface RevertPlan {
  layout: PinLayout;
  iface: string;
  slots: Record<Direction, Omit<TcFilterSlot, "direction">>;
  /** The policy had no pins before: remove everything it has. */
  fresh: boolean;
  /** A new object was loaded over existing pins: the previous programs are at progs_old once swapped. */
  swapsPrograms: boolean;
  /**
   * This policy's filters at another priority (the one before a priority change),
   * which the change removes once the new ones are in: the revert puts them back.
   */
  strays: TcFilterSlot[];
  /** Per hook: whether one of our filters was there before the change. */
  hookedBefore: Record<Direction, boolean>;
  /** The change takes the policy off its hooks (attached: false): the revert puts its filters back. */
  detaches?: boolean;
  /** The interface had a clsact qdisc before the change. */
  qdiscBefore: boolean;
  restore: { deletes: MapOperation[]; updates: MapOperation[] };
}

/**
 * What the host runs if the revert timer fires (or the provider rolls back a
 * failed change), see tcRevertScript. A batch that stops at a key the change
 * never wrote is retried line by line.
 */
export function revertScript(plan: RevertPlan): string {
  const maps = [`tolerant_batch() { f=$(mktemp); cat > "$f"; bpftool batch file "$f" 2>/dev/null || while IFS= read -r line; do bpftool $line 2>/dev/null; done < "$f"; rm -f "$f"; }`];
  for (const [name, ops] of [["DELETES", plan.restore.deletes], ["UPDATES", plan.restore.updates]] as const) {
    if (ops.length > 0) maps.push(`tolerant_batch <<'BPFLEET_${name}'\n${batchText(ops)}BPFLEET_${name}`);
  }
  const filters: FilterRevert[] = [];
  for (const direction of DIRECTIONS) {
    const slot = { ...plan.slots[direction], direction };
    if (!plan.hookedBefore[direction] || plan.fresh) filters.push({ slot });
    else if (plan.swapsPrograms || plan.detaches) filters.push({ slot, program: `/${PROGRAMS[direction]}` });
  }
  if (!plan.fresh) filters.push(...plan.strays.map((slot) => ({ slot, program: `/${PROGRAMS[slot.direction]}`, quiet: true })));
  return tcRevertScript({ ...plan, maps, programPin: "progs", filters, restoresProgram: plan.swapsPrograms, after: [] });
}
