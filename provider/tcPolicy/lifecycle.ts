/**
 * TcPolicy on a host: create, read, update, delete. Rules change in place (the
 * plan's map writes, never a detach); a new BPF object is loaded against the
 * same pinned maps, so rules and live flows survive, and swapped into both TC
 * filters in place (cls_bpf replaces a filter's program under RCU). Only this
 * policy's filters and pins are ever removed. A change on the interface that
 * carries the management session runs under the lockout guard (guard.ts).
 */
import { formatAddress } from "../cidr";
import { defineKind } from "../dynamicAdapter";
import { packagedObject } from "../objects";
import { applyMapOperations, type MapOperation } from "../remote/mapOperations";
import { objectRemotePath, uploadObject, type LocalObject } from "../remote/objectUpload";
import { removePins, type PinLayout } from "../remote/pins";
import { HostPreconditionError, preflight, requireHelpers, requireProgramType } from "../remote/preflight";
import { loadAllPrograms } from "../remote/programLoad";
import { guardedChange } from "../remote/guardedChange";
import { expectationCheck, tcProbeTarget } from "../expect/hostRun";
import type { SshSession } from "../remote/ssh";
import { connectResource } from "../remote/resource";
import { deleteBpfFilterCommand, removeClsactIfEmpty, type TcFilterSlot } from "../remote/tc";
import { requireClsactHook, tcHandle as tcHookHandle, type TcHookPlan } from "../remote/tcHook";
import { MAPS, PROGRAMS, TRIE_MAPS } from "./codec";
import { failsafeOf, peerAddress, refuseManagementCut, restoreOperations, revertScript, type RevertPlan } from "./guard";
import { hookPlan, isOurs, refuseProtocolClash, strayFilters } from "./hooks";
import { programsDir, surveyPolicy, type PolicyHostState } from "./hostState";
import { attachedOn, KIND, observedFrom, outputsOf, type TcPolicyState } from "./outputs";
import { desiredPolicy, planPolicy, policyFromHost } from "./plan";
import { requireEthernet, requireKernelBtf } from "./preconditions";
import { policyAsLoaded } from "./report";
import { checkTcPolicy, DEFAULT_PRIORITY, DIRECTIONS, policyIssues, rulesOf, tcPolicySchema, type Direction, type TcPolicyInputs } from "./schema";
import { shellScriptCommand } from "../remote/shellScript";
import { readApplied, removeApplied, writeAppliedStep } from "../remote/appliedSets";
import { runSteps } from "../remote/shellSteps";
import { boundContent, unknownVersionError } from "../boundList";
import { appliedLines, appliedRulesOf, boundAsRead, boundDirections, withRuleSets } from "./ruleSets";

export type { TcPolicyState } from "./outputs";

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
const POLICY_MAPS: readonly string[] = [MAPS.config, MAPS.rules, ...TRIE_MAPS, MAPS.peer4];

/** The TC handle of a policy's filters (tcHook.ts): two policies on one host have different pin names. */
export const tcHandle = (pinName: string): number => tcHookHandle(KIND, pinName);


/**
 * The inputs with the rules of hooks bound to a TcRuleSet filled in (ruleSets.ts): the
 * version this deployment registered or, for a set not in the deployment, the host's
 * own rules when they are that version. Judged like inline rules before anything changes.
 */
function resolveRules(session: SshSession, inputs: TcPolicyInputs, host: PolicyHostState): TcPolicyInputs {
  if (boundDirections(inputs).length === 0) return inputs;
  const loaded = policyFromHost(observedFrom(host));
  // The hook whose version was found nowhere (withRuleSets stops at the first).
  let missing: Direction | undefined;
  const resolved = withRuleSets(inputs, (direction, ref) => {
    const lines = boundContent(ref, () => Object.keys(loaded[direction].rules));
    if (!lines) missing = direction;
    return lines;
  });
  if (!resolved) {
    const ref = inputs[missing!].ruleSet!;
    throw unknownVersionError(session.label, { subject: `policy ${inputs.name}`, listKind: "TcRuleSet", ref, items: "rules", where: ` on ${missing}`, holder: "the hook" });
  }
  const issues = policyIssues({ ...resolved, host: { port: inputs.host.port } });
  if (issues.length > 0) throw new HostPreconditionError(`${session.label}: policy ${inputs.name}: ${issues.map((i) => i.reason).join("; ")} Nothing was changed.`);
  return resolved;
}

/** The host as the policy finds it, refused where the policy cannot go (before anything changes). */
async function surveyAndRefuse(session: SshSession, layout: PinLayout, object: LocalObject, declared: TcPolicyInputs) {
  await preflight(session);
  await requireProgramType(session, "sched_cls");
  await requireHelpers(session, "sched_cls", POLICY_HELPERS, "the flow table's clock and header pulls; TC programs have both from Linux 4.9");
  const peer = peerAddress(await session.managementPeer());
  const host = await surveyPolicy(session, declared.interface, layout, { objectPath: objectRemotePath(object), peer: peer && formatAddress(peer.bytes), maps: POLICY_MAPS });
  const inputs = resolveRules(session, declared, host);
  requireKernelBtf(session, host);
  requireEthernet(session, host, inputs.interface);
  requireClsactHook(session, inputs.interface, host.hookQdisc);
  const hook = hookPlan(host, inputs);
  hook.claim(session, "policy", "Remove it, or give the policy another name (the handle follows from it).", (slot) => refuseProtocolClash(session, host, inputs.interface, slot));
  if (inputs.attached && !inputs.allowLockout && peer) refuseManagementCut(session, inputs, peer, host);
  return { peer, host, hook, inputs };
}

/** What undoes the change: the hooks, pins and qdisc as the survey found them, and the map entries the plan rewrites. */
function revertPlan(layout: PinLayout, inputs: TcPolicyInputs, host: PolicyHostState, hook: TcHookPlan, strays: TcFilterSlot[], needsLoad: boolean, operations: MapOperation[]): RevertPlan {
  const hadPins = host.programs.ingress !== undefined || host.programs.egress !== undefined;
  return {
    layout,
    iface: inputs.interface,
    slots: { ingress: hook.slot("ingress"), egress: hook.slot("egress") },
    fresh: !hadPins,
    swapsPrograms: needsLoad && hadPins,
    strays,
    hookedBefore: { ingress: hook.hooked("ingress") !== undefined, egress: hook.hooked("egress") !== undefined },
    detaches: !inputs.attached,
    qdiscBefore: host.hookQdisc === "clsact",
    restore: hadPins ? restoreOperations(new Map([...host.maps].map(([m, entries]) => [`${layout.maps}/${m}`, entries])), operations) : { deletes: [], updates: [] },
  };
}

/**
 * Brings the host to `inputs`. Create and update share it, so a run that died
 * half way (pins left, filters missing) converges on the next `up`.
 */
async function converge(declared: TcPolicyInputs, olds?: TcPolicyState): Promise<TcPolicyState> {
  const { session, layout } = await connectResource(KIND, declared);
  const object = packagedObject(OBJECT);
  // `inputs` holds every hook's rules; `declared` (what the state keeps) a bound hook's set.
  const { peer, host, hook, inputs } = await surveyAndRefuse(session, layout, object, declared);
  const needsLoad = !host.programs.ingress || !host.programs.egress || olds?.objectSha256 !== object.sha256;
  const mapPin = (map: string) => `${layout.maps}/${map}`;
  const plan = planPolicy(desiredPolicy(inputs, rulesOf(inputs), failsafeOf(inputs, peer)), observedFrom(host), mapPin);
  const wanted = inputs.attached ? DIRECTIONS : [];
  // After a change of priority, the filters at the old one go once the new ones are in.
  const strays = strayFilters(host, hook);
  const changesTraffic = inputs.attached && (plan.operations.length > 0 || needsLoad || !DIRECTIONS.every((d) => hook.runsOurs(d)) || strays.length > 0);
  // Taking the policy off its hooks changes traffic too: it is guarded like any other
  // change, and its revert (or rollback) puts the filters back.
  const detaching = !inputs.attached && DIRECTIONS.some((d) => hook.hooked(d) !== undefined);
  // Without a route to the peer there is no telling which interface carries the session.
  const managementInterface = host.managementRoute?.dev;
  const guarded = inputs.lockoutGuard && (changesTraffic || detaching) && (managementInterface === undefined || managementInterface === inputs.interface);
  const revert = revertPlan(layout, inputs, host, hook, strays, needsLoad, plan.operations);
  // Packet expectations run against the attached programs, under a revert armed for them.
  const expectations = inputs.attached ? expectationCheck(session, "tcPolicy", inputs.expect, () => tcProbeTarget(layout, inputs.interface)) : undefined;

  let qdiscCreated = olds?.qdiscCreated ?? false;
  let newPrograms: string | undefined;
  let mapsTouched = false;
  await guardedChange(session, {
    async stage() {
      if (needsLoad) newPrograms = await loadAllPrograms(session, layout, await uploadObject(session, object, host.objectPresent), "tc");
    },
    guard:
      guarded || expectations
        ? { revertScript: () => revertScript(revert), seconds: inputs.lockoutRevertSeconds, proof: { inputs, subject: "the policy", advice: lockoutAdvice(inputs) }, proveLogin: guarded }
        : undefined,
    expectations,
    async apply() {
      // Rules before hooks: a filter never runs against maps that are not written yet.
      mapsTouched = true;
      await applyMapOperations(session, plan.operations);
      // Every hook change and the pin swap in one round trip.
      const programs = newPrograms ?? programsDir(layout);
      const commands = hook.installCommands(wanted, (d) => `${programs}/${PROGRAMS[d]}`, newPrograms !== undefined);
      for (const stray of strays) commands.push(deleteBpfFilterCommand(stray));
      if (newPrograms) commands.push(shellScriptCommand("tc-policy-swap-programs", { dir: layout.dir }));
      if (commands.length > 0) await session.run(commands);
      if (hook.addsQdisc(wanted)) qdiscCreated = true;
    },
    // The steps the revert timer would run (the map writes only if the batch ran:
    // undoing writes that never happened is slow).
    rollback: () => session.run(["sh", "-c", revertScript(mapsTouched ? revert : { ...revert, restore: { deletes: [], updates: [] } })]).then(() => undefined),
    async cleanup() {
      if (revert.swapsPrograms) await session.run(["rm", "-rf", "--", `${layout.dir}/progs_old`]);
    },
  });
  // bpftool batch stops at the first failed write, so after it succeeded the maps hold
  // exactly the plan's result: only the program side and the counters are read back.
  const after = await surveyPolicy(session, inputs.interface, layout, { countFlows: true, maps: [MAPS.stats, MAPS.hits] });
  if (!after.programs.ingress || !after.programs.egress) throw new Error(`${session.label}: the policy's pins vanished right after it was applied`);
  // The host records the rule sets it applied, once the maps hold them: the baseline
  // refresh judges drift against. A policy that no longer binds any drops the record.
  const applied = appliedLines(inputs);
  if (applied.length > 0) await runSteps(session, [writeAppliedStep(KIND, inputs.name, applied)]);
  else if (olds && boundDirections(olds).length > 0) await removeApplied(session, KIND, inputs.name);
  const rules = new Map([...plan.kept, ...plan.fresh, ...plan.reused].map((r) => [r.index, r.rule]));
  return { ...outputsOf(declared, declared, inputs.attached && attachedOn(after, inputs), after, rules, object.sha256, qdiscCreated), expectResults: expectations?.results ?? {} };
}

function lockoutAdvice(inputs: TcPolicyInputs): string {
  return (
    `Allow inbound TCP to port ${inputs.host.port} from the addresses this host is managed from` +
    `${inputs.allowLockout ? ", or drop allowLockout so that the failsafe keeps the provider's own session open" : ""}.`
  );
}

export const tcPolicyKind = defineKind<TcPolicyInputs, TcPolicyState>({
  kind: KIND,
  schema: tcPolicySchema,
  check: checkTcPolicy,
  replaceOn: ["host", "interface", "name"],
  object: OBJECT,
  outputOnly: { objectSha256: true, programs: true, counters: true, ruleHits: true, liveFlows: true, tcPriority: true, tcHandle: true, qdiscCreated: true, expectResults: true },
  converge,

  async observe(olds) {
    const { session, layout } = await connectResource(KIND, olds);
    const host = await surveyPolicy(session, olds.interface, layout, { countFlows: true, maps: [...POLICY_MAPS, MAPS.stats, MAPS.hits] });
    if (!host.programs.ingress && !host.programs.egress) return undefined;
    const observed = observedFrom(host);
    const loaded = policyAsLoaded(observed);
    const bound = boundDirections(olds);
    if (bound.length > 0) {
      // Judged against what the host recorded as applied, not the set's state: refresh
      // reads resources in no particular order, and a host a failed wave left behind
      // holds another version than the stack's.
      const recorded = await readApplied(session, KIND, olds.name);
      for (const d of bound) loaded[d] = boundAsRead(loaded[d], olds[d].ruleSet!, recorded && appliedRulesOf(recorded, d));
    }
    return outputsOf(olds, loaded, attachedOn(host, olds), host, observed.rules, olds.objectSha256, olds.qdiscCreated ?? false);
  },

  async delete(_id, olds) {
    const { session, layout } = await connectResource(KIND, olds);
    const host = await surveyPolicy(session, olds.interface, layout, {});
    // Only the filters with this policy's handle that run its programs (at its priority, or at an
    // earlier one a priority change died before removing); whatever else is on the hooks stays.
    const handle = tcHandle(olds.name);
    // Every filter in one round trip: one at a time, a connection lost between them left
    // the policy on egress only, a half policy neither old nor gone (fault matrix, issue 15).
    const ours = host.filters.filter((filter) => filter.handle === handle && isOurs(filter, host));
    if (ours.length > 0) await session.run(ours.map((filter) => deleteBpfFilterCommand({ iface: olds.interface, direction: filter.direction, priority: filter.priority, handle })));
    await removePins(session, layout);
    if (boundDirections(olds).length > 0) await removeApplied(session, KIND, olds.name);
    // Not ignored: a delete that failed here would leave an empty clsact qdisc behind
    // and still report success; failing names the step, and the next delete removes it.
    await removeClsactIfEmpty(session, olds.interface, olds.qdiscCreated);
  },
});
