/**
 * TcPolicy on a host: create, read, update, delete. Rules change in place (the
 * plan's map writes, never a detach); a new BPF object is loaded against the
 * same pinned maps, so rules and live flows survive, and swapped into both TC
 * filters in place (cls_bpf replaces a filter's program under RCU). Only this
 * policy's filters and pins are ever removed. A change on the interface that
 * carries the management session runs under the lockout guard (guard.ts).
 */
import { formatAddress, type Prefix } from "../cidr";
import type { Kind } from "../dynamicAdapter";
import { packagedObject } from "../objects";
import { applyMapOperations } from "../remote/mapOperations";
import { objectRemotePath, uploadObject } from "../remote/objectUpload";
import { removePins } from "../remote/pins";
import { HostPreconditionError, preflight, requireHelpers, requireProgramType } from "../remote/preflight";
import { loadAllPrograms } from "../remote/programLoad";
import { connectResource, resourceId } from "../remote/resource";
import { proveManagementPath } from "../remote/lockout";
import { armRevert, type RevertTimer } from "../remote/revertTimer";
import type { SshSession } from "../remote/ssh";
import {
  bpfFilterCommand,
  deleteBpfFilter,
  deleteBpfFilterCommand,
  findFilter,
  formatHandle,
  addClsactCommand,
  removeClsactIfEmpty,
  type TcFilter,
  type TcFilterSlot,
} from "../remote/tc";
import { MAPS, PROGRAMS, TRIE_MAPS } from "./codec";
import { failsafeOf, managementCut, peerAddress, restoreOperations, revertScript, type RevertPlan } from "./guard";
import { programsDir, surveyPolicy, type PolicyHostState } from "./hostState";
import { desiredPolicy, observePolicy, planPolicy, type ObservedPolicy } from "./plan";
import { countersOf, policyAsLoaded, rawEntries, ruleHitsOf } from "./report";
import { checkTcPolicy, DEFAULT_PRIORITY, DIRECTIONS, rulesOf, tcPolicySchema, type Direction, type PolicyRule, type TcPolicyInputs, type TcPolicyOutputs } from "./schema";

const KIND = "tc-policy";
const OBJECT = "tc_policy";

/**
 * TC priority of both filters unless the policy's `priority` says otherwise.
 * Lower runs first: after a TrafficMirror at its default priority 1 (so mirrors
 * still show what arrived, including what the policy drops), before every
 * filter added without a priority (tc numbers those from 49152 down). A filter
 * before ours that returns TC_ACT_OK ends the hook's processing, and the policy
 * never sees those packets.
 */
export const TC_PRIORITY = DEFAULT_PRIORITY;

/**
 * Helpers the programs call (the flow table's clock, pulling headers out of
 * paged fragments). Flows expire on lookup, without BPF timers, so the object
 * needs no helper newer than Linux 4.9 (its BPF-to-BPF calls need 5.6).
 */
const POLICY_HELPERS = ["bpf_ktime_get_ns", "bpf_skb_pull_data"];

/** What planning reads from the host. */
const POLICY_MAPS: readonly string[] = [MAPS.config, MAPS.rules, ...TRIE_MAPS];

/** The state of a TcPolicy: its outputs and where its filters sit. */
export interface TcPolicyState extends TcPolicyOutputs {
  /** Priority and handle of the policy's TC filters on both hooks (what `tc filter show` lists). */
  tcPriority: number;
  tcHandle: number;
  /** Whether the policy added the interface's clsact qdisc (removed on delete when no filter is left). */
  qdiscCreated: boolean;
}

/**
 * The TC handle of a policy's filters: FNV-1a of its kind and pin name, never 0
 * (0 asks the kernel to pick one). Two policies on one host have different pin
 * names, so their filters never share a slot.
 */
export function tcHandle(pinName: string): number {
  let hash = 0x811c9dc5;
  for (const byte of Buffer.from(`${KIND}/${pinName}`, "utf8")) hash = Math.imul(hash ^ byte, 0x01000193) >>> 0;
  return hash || 1;
}

type Placement = Pick<TcPolicyInputs, "interface" | "name" | "priority">;

// State written before `priority` existed has none: its filters are at the default.
function slotOf(inputs: Placement, direction: Direction): TcFilterSlot {
  return { iface: inputs.interface, direction, priority: inputs.priority ?? TC_PRIORITY, handle: tcHandle(inputs.name) };
}

/** The kernel keeps 15 characters of a program's name. */
const kernelName = (direction: Direction) => PROGRAMS[direction].slice(0, 15);

function isOurs(filter: TcFilter, host: PolicyHostState, direction: Direction): boolean {
  return filter.programId === host.programs[direction]?.id || filter.programName === kernelName(direction);
}

// ------------------------------------------------------------ refusals, before anything changes

function requireEthernet(session: SshSession, host: PolicyHostState, iface: string): void {
  const link = host.links.find((l) => l.ifname === iface);
  if (!link) {
    throw new HostPreconditionError(`${session.label}: interface "${iface}" does not exist on the host (it has: ${host.links.map((l) => l.ifname).join(", ")}). Nothing was changed.`);
  }
  if (link.linkType !== "ether") {
    throw new HostPreconditionError(
      `${session.label}: interface "${iface}" is not an Ethernet interface (link type ${link.linkType}); the policy parses Ethernet frames and would judge these packets wrongly. ` +
        `Attach it to an Ethernet interface (the physical NIC, a veth or a bridge). Nothing was changed.`,
    );
  }
}

function requireHook(session: SshSession, host: PolicyHostState, iface: string): void {
  if (host.hookQdisc !== undefined && host.hookQdisc !== "clsact") {
    throw new HostPreconditionError(
      `${session.label}: interface ${iface} has an "${host.hookQdisc}" qdisc on its ingress hook, which rules out the clsact qdisc TC programs attach to. ` +
        `Migrate its filters to clsact (tc qdisc del dev ${iface} ${host.hookQdisc}; tc qdisc add dev ${iface} clsact) or pick another interface. Nothing was changed.`,
    );
  }
}

/**
 * This policy's filters at a priority other than `inputs.priority`: those of the
 * priority before a change of it (or of a run that died half way through one).
 */
function strayFilters(host: PolicyHostState, inputs: Placement): TcFilterSlot[] {
  const handle = tcHandle(inputs.name);
  return host.filters
    .filter((f) => f.handle === handle && f.priority !== slotOf(inputs, f.direction).priority && isOurs(f, host, f.direction))
    .map((f) => ({ iface: inputs.interface, direction: f.direction, priority: f.priority, handle }));
}

/**
 * Refuses a priority/handle on either hook that holds a filter this policy did not
 * attach, and a priority whose filters are of another kind or protocol (the kernel
 * keeps one kind and protocol per priority, and would refuse ours with EINVAL).
 */
function claimSlots(session: SshSession, host: PolicyHostState, inputs: TcPolicyInputs): void {
  for (const direction of DIRECTIONS) {
    const slot = slotOf(inputs, direction);
    const clash = host.filters.find((f) => f.direction === direction && f.priority === slot.priority && (f.kind !== "bpf" || f.protocol !== "all"));
    if (clash) {
      throw new HostPreconditionError(
        `${session.label}: ${inputs.interface} ${direction} has a ${clash.kind} filter for protocol ${clash.protocol} at priority ${slot.priority}; ` +
          `the kernel keeps one filter kind and protocol per priority, so the policy's bpf filters (protocol all) cannot join it. Choose another priority. Nothing was changed.`,
      );
    }
    const existing = findFilter(host.filters, slot);
    if (!existing || isOurs(existing, host, direction)) continue;
    throw new HostPreconditionError(
      `${session.label}: ${inputs.interface} ${direction} already has a ${existing.kind} filter at priority ${slot.priority} handle ${formatHandle(slot.handle)}` +
        `${existing.programName ? ` (program ${existing.programName}, id ${existing.programId})` : ""} that this policy did not attach. ` +
        `Remove it, or give the policy another name (the handle follows from it). Nothing was changed.`,
    );
  }
}

/** check() judged the rules against an unknown manager; this repeats it with the real one. */
function refuseManagementCut(session: SshSession, inputs: TcPolicyInputs, peer: Prefix, host: PolicyHostState): void {
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

// ------------------------------------------------------------ reading the host

function observedFrom(host: PolicyHostState): ObservedPolicy {
  return observePolicy({
    rules: rawEntries(host.maps.get(MAPS.rules)),
    tries: Object.fromEntries(TRIE_MAPS.map((m) => [m, rawEntries(host.maps.get(m))])),
    config: host.maps.get(MAPS.config)?.[0]?.values[0],
  });
}

/**
 * The object picks its flow clock when it loads (the coarse clock where the
 * kernel has it, a CO-RE relocation that libbpf resolves against the kernel's
 * BTF), so libbpf refuses it on a kernel that does not expose its BTF.
 */
function requireKernelBtf(session: SshSession, host: PolicyHostState): void {
  if (host.kernelBtf) return;
  throw new HostPreconditionError(
    `${session.label}: the kernel does not expose its BTF (/sys/kernel/btf/vmlinux is missing), which loading the TcPolicy object needs; use a kernel built with CONFIG_DEBUG_INFO_BTF=y (distribution kernels usually are; Debian 11's 5.10 is). Nothing was changed.`,
  );
}

/** Both hooks run this policy's programs. */
function attachedOn(host: PolicyHostState, inputs: Placement): boolean {
  return DIRECTIONS.every((d) => {
    const filter = findFilter(host.filters, slotOf(inputs, d));
    return filter !== undefined && filter.programId !== undefined && filter.programId === host.programs[d]?.id;
  });
}

function outputsOf(
  inputs: TcPolicyInputs,
  policy: Pick<TcPolicyInputs, "ingress" | "egress" | "stateful" | "timeouts">,
  attached: boolean,
  host: PolicyHostState,
  rules: ReadonlyMap<number, PolicyRule>,
  objectSha256: string,
  qdiscCreated: boolean,
): TcPolicyState {
  const program = (d: Direction) => ({ id: host.programs[d]?.id ?? 0, tag: host.programs[d]?.tag ?? "" });
  return {
    ...inputs,
    ...policy,
    attached,
    objectSha256,
    programs: { ingress: program("ingress"), egress: program("egress") },
    counters: countersOf(host.maps.get(MAPS.stats)),
    ruleHits: ruleHitsOf(host.maps.get(MAPS.hits), rules),
    liveFlows: host.liveFlows ?? 0,
    tcPriority: inputs.priority ?? TC_PRIORITY,
    tcHandle: tcHandle(inputs.name),
    qdiscCreated,
  };
}

// The programs just loaded become <dir>/progs; the previous ones stay at
// progs_old until the change is proven (the revert script moves them back).
const SWAP_SCRIPT = `
set -e
rm -rf -- "$1/progs_old"
if [ -d "$1/progs" ]; then mv "$1/progs" "$1/progs_old"; fi
mv "$1/progs_new" "$1/progs"
`;

/**
 * Brings the host to `inputs`. Create and update share it, so a run that died
 * half way (pins left, filters missing) converges on the next `up`.
 */
async function converge(inputs: TcPolicyInputs, olds?: TcPolicyState): Promise<TcPolicyState> {
  const { session, layout } = await connectResource(KIND, inputs);
  const object = packagedObject(OBJECT);
  await preflight(session);
  await requireProgramType(session, "sched_cls");
  await requireHelpers(session, "sched_cls", POLICY_HELPERS, "the flow table's clock and header pulls; TC programs have both from Linux 4.9");
  const peer = peerAddress(await session.managementPeer());
  const host = await surveyPolicy(session, inputs.interface, layout, {
    objectPath: objectRemotePath(object),
    peer: peer && formatAddress(peer.bytes),
    maps: POLICY_MAPS,
  });
  requireKernelBtf(session, host);
  requireEthernet(session, host, inputs.interface);
  requireHook(session, host, inputs.interface);
  claimSlots(session, host, inputs);
  if (inputs.attached && !inputs.allowLockout && peer) refuseManagementCut(session, inputs, peer, host);

  const hadPins = host.programs.ingress !== undefined || host.programs.egress !== undefined;
  const needsLoad = !host.programs.ingress || !host.programs.egress || olds?.objectSha256 !== object.sha256;
  const swapsPrograms = needsLoad && hadPins;
  const mapPin = (map: string) => `${layout.maps}/${map}`;
  const plan = planPolicy(desiredPolicy(inputs, rulesOf(inputs), failsafeOf(inputs, peer)), observedFrom(host), mapPin);
  const hooked = Object.fromEntries(DIRECTIONS.map((d) => [d, findFilter(host.filters, slotOf(inputs, d))])) as Record<Direction, TcFilter | undefined>;
  const runsOurs = (d: Direction) => hooked[d]?.programId !== undefined && hooked[d]?.programId === host.programs[d]?.id;
  const attachesNew = inputs.attached && (needsLoad || !DIRECTIONS.every(runsOurs));
  // After a change of priority, the filters at the old one go once the new ones are in.
  const strays = strayFilters(host, inputs);
  const changesTraffic = inputs.attached && (plan.operations.length > 0 || attachesNew || strays.length > 0);
  const managementInterface = host.managementRoute?.dev;
  // Without a route to the peer there is no telling which interface carries the session.
  const guarded = inputs.lockoutGuard && changesTraffic && (managementInterface === undefined || managementInterface === inputs.interface);
  const revert: RevertPlan = {
    layout,
    iface: inputs.interface,
    slots: { ingress: slotOf(inputs, "ingress"), egress: slotOf(inputs, "egress") },
    fresh: !hadPins,
    swapsPrograms,
    strays,
    hookedBefore: { ingress: hooked.ingress !== undefined, egress: hooked.egress !== undefined },
    qdiscBefore: host.hookQdisc === "clsact",
    restore: hadPins ? restoreOperations(new Map([...host.maps].map(([m, entries]) => [mapPin(m), entries])), plan.operations) : { deletes: [], updates: [] },
  };

  let qdiscCreated = olds?.qdiscCreated ?? false;
  let timer: RevertTimer | undefined;
  let mapsTouched = false;
  try {
    const newPrograms = needsLoad ? await loadAllPrograms(session, layout, await uploadObject(session, object, host.objectPresent), "tc") : undefined;
    if (guarded) timer = await armRevert(session, revertScript(revert), inputs.lockoutRevertSeconds);
    // Rules before hooks: a filter never runs against maps that are not written yet.
    mapsTouched = true;
    await applyMapOperations(session, plan.operations);
    // Every hook change and the pin swap in one round trip.
    const programs = newPrograms ?? programsDir(layout);
    const hookCommands: string[][] = [];
    const addsQdisc = inputs.attached && host.hookQdisc === undefined;
    if (addsQdisc) hookCommands.push(addClsactCommand(inputs.interface));
    for (const direction of DIRECTIONS) {
      const slot = slotOf(inputs, direction);
      const pin = `${programs}/${PROGRAMS[direction]}`;
      if (inputs.attached && !hooked[direction]) hookCommands.push(bpfFilterCommand("add", slot, pin));
      else if (inputs.attached && (newPrograms || !runsOurs(direction))) hookCommands.push(bpfFilterCommand("replace", slot, pin));
      else if (!inputs.attached && hooked[direction]) hookCommands.push(deleteBpfFilterCommand(slot));
    }
    for (const stray of strays) hookCommands.push(deleteBpfFilterCommand(stray));
    if (newPrograms) hookCommands.push(["sh", "-c", SWAP_SCRIPT, "bpfleet", layout.dir]);
    if (hookCommands.length > 0) await session.run(hookCommands);
    if (addsQdisc) qdiscCreated = true;
  } catch (err) {
    // Leave the host as it was: the steps the revert timer would run (the map
    // writes only if the batch ran: undoing writes that never happened is slow).
    await timer?.disarm().catch(() => undefined);
    const rollback = mapsTouched ? revert : { ...revert, restore: { deletes: [], updates: [] } };
    await session.run(["sh", "-c", revertScript(rollback)]).catch(() => undefined);
    throw err;
  }
  if (timer) {
    await proveManagementPath(session, timer, {
      inputs,
      subject: "the policy",
      advice:
        `Allow inbound TCP to port ${inputs.host.port} from the addresses this host is managed from` +
        `${inputs.allowLockout ? ", or drop allowLockout so that the failsafe keeps the provider's own session open" : ""}.`,
    });
  }
  if (swapsPrograms) await session.run(["rm", "-rf", "--", `${layout.dir}/progs_old`]);
  // bpftool batch stops at the first failed write, so after it succeeded the maps hold
  // exactly the plan's result: only the program side and the counters are read back.
  const after = await surveyPolicy(session, inputs.interface, layout, { countFlows: true, maps: [MAPS.stats, MAPS.hits] });
  if (!after.programs.ingress || !after.programs.egress) throw new Error(`${session.label}: the policy's pins vanished right after it was applied`);
  const rules = new Map([...plan.kept, ...plan.fresh, ...plan.reused].map((r) => [r.index, r.rule]));
  return outputsOf(inputs, inputs, inputs.attached && attachedOn(after, inputs), after, rules, object.sha256, qdiscCreated);
}

export const tcPolicyKind: Kind<TcPolicyInputs, TcPolicyState> = {
  kind: KIND,
  schema: tcPolicySchema,
  check: checkTcPolicy,
  replaceOn: ["host", "interface", "name"],

  pendingChanges(olds) {
    const sha = packagedObject(OBJECT).sha256;
    return olds.objectSha256 === sha ? [] : [`BPF object ${olds.objectSha256?.slice(0, 12)} -> ${sha.slice(0, 12)}`];
  },

  async create(inputs) {
    return { id: resourceId(KIND, inputs), outs: await converge(inputs) };
  },

  async read(_id, olds) {
    const { session, layout } = await connectResource(KIND, olds);
    const host = await surveyPolicy(session, olds.interface, layout, { countFlows: true, maps: [...POLICY_MAPS, MAPS.stats, MAPS.hits] });
    if (!host.programs.ingress && !host.programs.egress) return undefined;
    const observed = observedFrom(host);
    const outs = outputsOf(olds, policyAsLoaded(observed), attachedOn(host, olds), host, observed.rules, olds.objectSha256, olds.qdiscCreated ?? false);
    const {
      objectSha256: _sha, programs: _programs, counters: _counters, ruleHits: _hits, liveFlows: _flows, tcPriority: _priority, tcHandle: _handle, qdiscCreated: _qdisc,
      ...inputs
    } = outs;
    return { outs, inputs };
  },

  async update(_id, olds, news) {
    return converge(news, olds);
  },

  async delete(_id, olds) {
    const { session, layout } = await connectResource(KIND, olds);
    const host = await surveyPolicy(session, olds.interface, layout, {});
    // Only the filters with this policy's handle that run its programs (at its priority, or at an
    // earlier one a priority change died before removing); whatever else is on the hooks stays.
    const handle = tcHandle(olds.name);
    for (const filter of host.filters) {
      if (filter.handle !== handle || !isOurs(filter, host, filter.direction)) continue;
      await deleteBpfFilter(session, { iface: olds.interface, direction: filter.direction, priority: filter.priority, handle });
    }
    await removePins(session, layout);
    await removeClsactIfEmpty(session, olds.interface, olds.qdiscCreated).catch(() => undefined);
  },
};
