/**
 * XdpFirewall on a host: create, read, update, delete. Entries change in place
 * (maps written, never detached); a new BPF object is swapped in atomically
 * against the same pinned maps; another program on the interface is never
 * replaced.
 */
import { defineKind } from "../dynamicAdapter";
import { packagedObject } from "../objects";
import { applyMapOperations } from "../remote/mapOperations";
import type { LocalObject } from "../remote/objectUpload";
import { removePins, type PinLayout } from "../remote/pins";
import { programState, type ResourceSurvey } from "../remote/resourceSurvey";
import { DISPATCHER_OBJECT, dispatcherDir, hookPosition, HookPlan, releaseHook, type XdpPlacement } from "../remote/xdpHook";
import { bootRestoreSteps, removeBootRestore, removeBootRestoreStep } from "../remote/bootRestore";
import { uploadObject } from "../remote/objectUpload";
import { runSteps, scriptStep, StepQueue, type ShellStep } from "../remote/shellSteps";
import { guardedChange, ignoreFailure } from "../remote/guardedChange";
import { expectationCheck, xdpProbeTarget } from "../expect/hostRun";
import { connectResource } from "../remote/resource";
import { RemoteCommandError, type ExecResult, type SshSession } from "../remote/ssh";
import { surveyXdp, XdpProgramChange } from "../remote/xdpChange";
import { DENY_MAPS, STATS_MAP } from "./codec";
import { INDEX_MAPS } from "./index";
import { refuseManagementDeny, revertScript } from "./guard";
import { mapPinsStep, missingIndex, missingIndexIn, observe, observeEntries, observeProgram, programReadback, type Observed, type ObservedProgram } from "./hostState";
import { denyOperations, driftOf, indexFromScratch, invertPlan, planBetween, planDeny } from "./plan";
import { checkXdpFirewall, xdpFirewallSchema, type XdpFirewallInputs, type XdpFirewallOutputs } from "./schema";
import { candidatePeers, managementSession, recordedSession, sessionFromCheck, type ManagementSession } from "./managementSession";
import { writeEntries } from "./writeEntries";
import {
  appliedEntries,
  appliedPath,
  holdAppliedStep,
  parseAppliedDigest,
  patchAppliedStep,
  readApplied,
  readAppliedDigestStep,
  removeApplied,
  removeAppliedStep,
  writeAppliedStep,
  type AppliedVersion,
} from "../remote/appliedSets";
import { HostPreconditionError } from "../remote/preflight";
import { contentDigest, registeredContent } from "../sharedContent";
import { boundContent } from "../boundList";
import { sortedRecord } from "../validation";

const KIND = "xdp-firewall";
const OBJECT = "xdp_firewall";
/** What a firewall without pins holds: one array, so every host created with the same list shares one plan (planBetween) and its batch text (writeEntries). */
const NO_ENTRIES: readonly string[] = Object.freeze([]);

function placementOf(inputs: XdpFirewallInputs): XdpPlacement {
  return { iface: inputs.interface, mode: inputs.mode, chainPriority: inputs.chainPriority };
}

/**
 * `management`: the session as the host saw it in this create/update (kept from
 * `inputs` when they are a state's, on a read, which does not look).
 */
function outputsOf(inputs: XdpFirewallInputs, observed: Observed, objectSha256: string, expectResults?: XdpFirewallOutputs["expectResults"], management?: ManagementSession): XdpFirewallOutputs {
  // An absent drift is no key at all: the engine's struct encoding refuses undefined values.
  if (inputs.denyDrift === undefined) {
    const { denyDrift: _none, ...rest } = inputs;
    inputs = rest;
  }
  const session = management ?? recordedSession(inputs as { managementSession?: unknown });
  const { managementSession: _kept, ...rest } = inputs as XdpFirewallInputs & { managementSession?: unknown };
  return {
    ...rest,
    ...(session ? { managementSession: session } : {}),
    // With a DenyList the entries are held once, in the list's state (issue 10): this
    // firewall's state carries the list's digest and count, and drift, not the entries.
    deny: inputs.denyList ? {} : observed.deny,
    attached: observed.attachment !== undefined,
    objectSha256,
    programId: observed.programId,
    programTag: observed.programTag,
    attachMode: observed.attachment?.mode ?? "detached",
    counters: observed.counters,
    mapMemoryBytes: observed.mapMemoryBytes,
    // A read keeps the last create/update's results.
    expectResults: expectResults ?? (inputs as Partial<XdpFirewallOutputs>).expectResults ?? {},
  };
}

/**
 * What brings the firewall back after a reboot, when the inputs ask for it: its
 * steps, computed before the change (a large list's batch takes a while to build,
 * and the revert window is running once the change is live).
 */
function bootRestoreOf(layout: PinLayout, object: LocalObject, inputs: XdpFirewallInputs): ReturnType<typeof bootRestoreSteps> | undefined {
  if (!inputs.bootRestore) return undefined;
  // Records and index alike, from empty maps (the restore loads the object afresh and
  // fills it before it goes on the hook: no reader yet).
  const mapOperations = denyOperations(planDeny(Object.keys(inputs.deny), []), (map) => `${layout.maps}/${map}`, true);
  // A chain member comes back behind the interface's dispatcher, in its slot.
  const chain = inputs.chainPriority === undefined ? undefined : { slot: inputs.chainPriority, dispatcher: packagedObject(DISPATCHER_OBJECT) };
  const xdp = inputs.attached ? { interface: inputs.interface, mode: inputs.mode, chain } : undefined;
  return bootRestoreSteps({ kind: KIND, name: inputs.name, layout, object, mapOperations, xdp });
}

/**
 * The entries the firewall must hold: its own `deny`, or its DenyList's, found by
 * digest among the versions this deployment's lists registered (sharedContent.ts) or,
 * failing that (`pulumi up --target` of the firewall alone), in the copy the host
 * records as applied (`applied`, read when its digest, `version`, is the wanted one).
 */
function desiredEntries(session: SshSession, inputs: XdpFirewallInputs, version: AppliedVersion | undefined, applied: readonly string[] | undefined): readonly string[] {
  const list = inputs.denyList;
  if (!list) return Object.keys(inputs.deny);
  const entries = boundContent(list, () => applied);
  if (entries) return entries;
  const holds = version ? `holds version ${version.digest.slice(0, 12)} (${version.count} entries)` : "records no applied list";
  throw new HostPreconditionError(
    `${session.label}: firewall ${inputs.name} must apply version ${list.digest.slice(0, 12)} of DenyList '${list.name}' (${list.count} entries), which is not part of this deployment, and the host ${holds}. ` +
      `With \`pulumi up --target\`, target the DenyList resource '${list.name}' too. Nothing was changed.`,
  );
}

/** Whether an update plans from the list the host recorded as applied (entriesBefore). */
function plansFromRecord(inputs: XdpFirewallInputs, olds: XdpFirewallOutputs | undefined): boolean {
  return !!(olds?.denyList && inputs.denyList && !olds.denyDrift);
}

/**
 * What the host's maps hold before the change. An update of a firewall that applied a
 * DenyList plans from the list the host recorded as applied (read with the survey, no
 * map dump); a create (perhaps adopting pins), a firewall that refresh found drifted, or a
 * host without that record (an upgrade from inline entries, a cut run) dumps the maps.
 */
async function entriesBefore(session: SshSession, layout: PinLayout, inputs: XdpFirewallInputs, olds: XdpFirewallOutputs | undefined, applied: readonly string[] | undefined): Promise<{ entries: readonly string[]; recorded: boolean }> {
  if (plansFromRecord(inputs, olds) && applied) return { entries: applied, recorded: true };
  return { entries: Object.keys(await observeEntries(session, layout)), recorded: false };
}

/**
 * A DenyList's entries in the form `deny` holds them, built once per list version:
 * every firewall of a deployment gets the same registered array (sharedContent.ts),
 * and a 100k-key record took a provider process 0.1–0.4 s per host to build.
 */
const denyRecords = new WeakMap<readonly string[], Record<string, "deny">>();

function denyRecord(entries: readonly string[]): Record<string, "deny"> {
  let record = denyRecords.get(entries);
  if (!record) denyRecords.set(entries, (record = sortedRecord([...entries], "deny" as const)));
  return record;
}

/**
 * Brings the host to `inputs`. Used by create and update alike, so a half-finished
 * earlier run (pins left, program not attached) converges on the next `up`.
 *
 * Round trips (issue 10). The survey's exec carries the settle of an earlier run's
 * revert, the preflight, the survey, the map pins, the applied copy's digest (not the
 * copy: the controller holds the versions its lists registered) and which boot files
 * are there. An update that changes only entries, with no lockout guard or packet
 * expectations armed, then needs one more exec: the hold of the applied copy, the
 * batch, the copy's patch to the new version, the boot restore and the read-back;
 * nothing there needs rolling back, and the steps after the batch run only when it
 * succeeded. Otherwise the change's exec carries the hold, the revert's arm and the
 * batch, and the read-back's the disarm, the cleanup, the copy's patch and the boot
 * restore; when the lockout guard is armed, its proof is a fresh login, and that
 * login carries the read-back's exec (lockout.ts): three execs. A host whose copy is
 * a version the controller does not know costs one exec more, to read it.
 *
 * Most updates of a fleet's shared list skip the survey altogether: see
 * optimisticUpdate (one exec without the guard, two with it, and the survey's path
 * above, one exec later, when the host is not as the state says).
 */
async function converge(declared: XdpFirewallInputs, olds?: XdpFirewallOutputs): Promise<XdpFirewallOutputs> {
  try {
    return await convergeOnce(declared, olds, true);
  } catch (err) {
    if (!(err instanceof AssumptionMissed)) throw err;
    slowPathNote(err.host, declared.name, err.reason);
  }
  // The host is not as the state says (it missed an update, drifted, was changed by
  // hand, another address manages it): nothing was changed; survey it and plan from
  // what it really has.
  return convergeOnce(declared, olds, false);
}

/**
 * Why an update the state could plan took the survey after all (one exec more, on
 * every update while the cause stays): printed like the provider's other notes
 * (console.log reaches the user through the engine), so an SRE sees it in `pulumi up`.
 */
function slowPathNote(host: string, name: string, reason: string): void {
  console.log(`bpfleet: ${host}: firewall ${name}: the update planned from the state did not apply (${reason}); surveying the host and planning from what it has (one exec more).`);
}

/**
 * The first step's refusal in an update planned without a survey (see
 * optimisticUpdate): the host is not as the plan assumes, and nothing ran after it.
 * A RemoteCommandError of a step other than the batch, so writeEntries does not try
 * to put entries back. `reason`: what the check found different, in its words.
 */
class AssumptionMissed extends RemoteCommandError {
  readonly reason: string;

  constructor(host: string, command: string, result: ExecResult) {
    super(host, command, result, "the host is not as the state says");
    const said = result.stderr.split("\n").find((line) => line.startsWith("bpfleet: "));
    this.reason = said ? said.slice("bpfleet: ".length).trim() : `the host's check exited ${result.code}`;
  }
}

/**
 * An update planned from the provider's own state, with no survey (issue 10): the
 * common one-entry update of a fleet's shared list. The state says which version the
 * host applied last (`olds.denyList`), which program it runs and how it is attached;
 * when both versions are registered by this deployment's lists, the batch between
 * them is known before the host is asked anything. The exec that carries the change
 * then starts with sh/firewall-update-check.sh, which checks on the host, reading
 * only, what the survey would have found (the applied copy's digest, the program and
 * its hook, the map pins, the management session's address and, with the guard, its
 * interface); when any of it does not hold, that exec stops there, changing nothing,
 * and converge falls back to the survey. So an entries-only update is one exec without
 * the guard, and two with it (the second is the guard's fresh login, carrying disarm,
 * the copy's patch and the read-back), instead of one more for the survey.
 *
 * The address the session comes from may be this end's socket address (`peerGuess`)
 * or the one the host reported at the last create/update (`managementSession` in the
 * state): behind NAT, a TCP proxy or a jump host only the latter is right. The check
 * accepts either, comparing with $SSH_CONNECTION on the host, and judges the route of
 * the address it sees there: the guard's decision and the management-deny refusal
 * (made here for every candidate) thus refer to the session's real address, as the
 * survey's do. With the guard on, the plan assumes the interface the host routed the
 * session over last time (the firewall's when none is recorded), and the check holds
 * the host to it: the firewall's, guarded; another, not guarded, as the survey would
 * decide.
 *
 * Not for what the survey must see first: a create, a new object or placement (a
 * load, a chain slot), boot restore files, packet expectations, a management peer
 * known neither way (through a jump host from a state written before the record; a
 * sudo login, which hides $SSH_CONNECTION), or entries allowed to cover the management
 * session (allowManagementDeny). Those take the survey as before.
 */
function optimisticUpdate(
  session: SshSession,
  layout: PinLayout,
  declared: XdpFirewallInputs,
  olds: XdpFirewallOutputs,
): { survey: ResourceSurvey; check: ShellStep; peers: string[]; seen: () => ManagementSession | undefined; before: readonly string[]; desired: readonly string[] } | undefined {
  if (!olds.denyList || !declared.denyList || olds.denyDrift || olds.denyList.digest === declared.denyList.digest) return undefined;
  if (!olds.attached || !declared.attached || olds.attachMode === "detached" || !olds.programId) return undefined;
  if (olds.objectSha256 !== packagedObject(OBJECT).sha256 || olds.chainPriority !== undefined || declared.chainPriority !== undefined) return undefined;
  if (declared.bootRestore || Object.keys(declared.expect ?? {}).length > 0 || declared.allowManagementDeny) return undefined;
  const before = registeredContent(olds.denyList.digest);
  const desired = registeredContent(declared.denyList.digest);
  const recorded = recordedSession(olds);
  const peers = session.seesLoginEnvironment ? candidatePeers(session.peerGuess(), recorded) : [];
  if (!before || !desired || peers.length === 0) return undefined;
  // The guard's decision as the survey makes it, from the interface the host routes
  // the session over (armed when that is the firewall's), held to by the check.
  const routeDev = declared.lockoutGuard ? (recorded?.interface ?? declared.interface) : "";
  const maps = [...DENY_MAPS, ...INDEX_MAPS].map((m) => `${layout.maps}/${m}`);
  let seen: ManagementSession | undefined;
  const check = scriptStep(
    "firewall-update-check",
    [layout.program, String(olds.programId), declared.interface, olds.attachMode, appliedPath(KIND, declared.name), olds.denyList.digest, peers.join(" "), routeDev, ...maps],
    {
      failure: (result) => (result.code === 10 ? new AssumptionMissed(session.label, check.command, result) : undefined),
      onResult: (result) => {
        if (result?.code !== 0) return;
        seen = sessionFromCheck(result);
        // What the guard's lockout report names, should the proof fail: no exec to ask.
        session.notePeer(seen?.address);
      },
    },
  );
  const survey: ResourceSurvey = {
    interfaces: [declared.interface],
    xdp: { mode: olds.attachMode, programId: olds.programId },
    program: { id: olds.programId, tag: olds.programTag, name: "" },
    objectPresent: true,
    managementInterface: routeDev || undefined,
    chain: { dispatcherId: undefined, slots: new Map(), owners: new Map() },
  };
  return { survey, check, peers, seen: () => seen, before, desired };
}

async function convergeOnce(declared: XdpFirewallInputs, olds: XdpFirewallOutputs | undefined, optimistic: boolean): Promise<XdpFirewallOutputs> {
  const { session, layout, settle } = await connectResource(KIND, declared, { settleInSurvey: true });
  const queue = new StepQueue(session);
  const object = packagedObject(OBJECT);
  const placement = placementOf(declared);
  // Read with the survey: the applied copy's digest when a DenyList needs it (the
  // baseline of an update, or the entries themselves when the list is not part of this
  // deployment), and which boot files are there when the entries are known already.
  const baselineFromRecord = plansFromRecord(declared, olds);
  const needsApplied = !!declared.denyList && (baselineFromRecord || !registeredContent(declared.denyList.digest));
  const knownEntries = !declared.denyList || registeredContent(declared.denyList.digest) !== undefined;
  const asInline = (entries: readonly string[]): XdpFirewallInputs => (declared.denyList ? { ...declared, deny: denyRecord(entries) } : declared);
  const bootEarly = knownEntries ? bootRestoreOf(layout, object, asInline(desiredEntries(session, declared, undefined, undefined))) : undefined;
  const pins = mapPinsStep(layout);
  const appliedRead = needsApplied ? readAppliedDigestStep(KIND, declared.name) : undefined;
  const then = [pins, ...(appliedRead ? [appliedRead] : []), ...(bootEarly ? [bootEarly.check] : [])];
  let applied: readonly string[] | undefined;
  let desired: readonly string[] = [];
  // The entries as if given inline, for the steps that need them all (the management
  // check, boot restore); outputs are built from `declared`.
  let inputs = declared;
  // When the survey-free path does not apply, the survey below runs in this same pass.
  const assumed = optimistic && olds ? optimisticUpdate(session, layout, declared, olds) : undefined;
  let survey: ResourceSurvey;
  let hook: HookPlan;
  let after: (step: ShellStep) => ExecResult | undefined;
  // The session as the host sees it, for the state (managementSession.ts): from the
  // check, or from the survey (which reads $SSH_CONNECTION, or asked the login user).
  let management: () => Promise<ManagementSession | undefined>;
  if (assumed) {
    // The check (and an earlier run's settle) ride in front of the change's own exec.
    queue.add(...(settle ? [settle] : []), assumed.check);
    applied = assumed.before;
    desired = assumed.desired;
    inputs = asInline(desired);
    // The check lets the change run for any of them: none may be covered.
    for (const peer of assumed.peers) {
      try {
        await refuseManagementDeny(session, inputs, peer);
      } catch {
        // Refused for a candidate address: only the survey knows the one the host sees
        // (the guess is wrong behind NAT, a record may be stale), and it refuses again
        // when the refused one is right.
        slowPathNote(session.label, declared.name, `a deny entry covers ${peer}, an address the management session may come from`);
        return convergeOnce(declared, olds, false);
      }
    }
    survey = assumed.survey;
    hook = new HookPlan(placement, true, survey.xdp, survey.chain, layout, olds!.programId);
    after = () => undefined;
    management = async () => assumed.seen();
  } else {
    let results: (ExecResult | undefined)[];
    ({ survey, hook, results } = await surveyXdp(session, layout, object, placement, declared.attached, "firewall", async (extra) => {
      const appliedResult = appliedRead && extra[then.indexOf(appliedRead) + (settle ? 1 : 0)];
      const version = appliedResult ? parseAppliedDigest(appliedResult) : undefined;
      applied = (await appliedEntries(version, { baseline: baselineFromRecord, wanted: declared.denyList?.digest }, () => readApplied(session, KIND, declared.name))).entries;
      desired = desiredEntries(session, declared, version, applied);
      inputs = asInline(desired);
      await refuseManagementDeny(session, inputs);
    }, { first: settle ? [settle] : [], then }));
    after = (step) => results[then.indexOf(step) + (settle ? 1 : 0)];
    const routed = survey.managementInterface;
    management = async () => managementSession(await session.managementPeer().catch(() => undefined), routed);
  }
  const hadPins = survey.program !== undefined;
  // Pins of an object without the index (an upgrade from it): the load below creates
  // the index maps empty, and they are filled from the records before the new program
  // sees a packet. A missing index pin forces that load too. (An optimistic update's
  // check found them all.)
  const pinsListed = after(pins);
  const indexMissing = !assumed && hadPins && (pinsListed ? missingIndexIn(pinsListed) : await missingIndex(session, layout));
  const program = new XdpProgramChange(session, layout, hook, survey.program?.id, !hadPins || olds?.objectSha256 !== object.sha256 || hook.rebinds || indexMissing);
  const mapPin = (map: string) => `${layout.maps}/${map}`;
  const before = hadPins ? await entriesBefore(session, layout, declared, olds, applied) : { entries: NO_ENTRIES, recorded: false };
  const observedBefore = before.entries;
  const plan = planBetween(desired, observedBefore);
  const changesEntries = plan.add.length + plan.remove.length > 0;
  const changesTraffic = changesEntries || (inputs.attached && (program.needsLoad || !hook.inPlace));
  const guarded = inputs.lockoutGuard && changesTraffic && survey.managementInterface === inputs.interface;
  // Packet expectations run against what is attached, under a revert armed for them.
  const expectations = inputs.attached
    ? expectationCheck(session, "xdpFirewall", inputs.expect, () => xdpProbeTarget("xdpFirewall", OBJECT, layout, placement, survey.chain, program.ownIds))
    : undefined;
  const boot = bootEarly ?? bootRestoreOf(layout, object, inputs);
  const bootFiles = boot && (bootEarly ? after(bootEarly.check) : undefined);
  // The copy the host records goes aside before the maps change (a run cut in between
  // leaves no record, and the next one dumps the maps instead of trusting a stale copy)
  // and is brought to the new list by the difference once they did; when the host's
  // copy does not come out as the new list's digest, it is written whole.
  const patchesCopy = !!declared.denyList && hadPins && before.recorded && changesEntries;
  let patched = true;
  const appliedSteps = (): ShellStep[] => {
    if (declared.denyList) {
      if (patchesCopy) return [patchAppliedStep(KIND, declared.name, contentDigest(desired), plan.add, plan.remove, (ok) => (patched = ok))];
      if (changesEntries || !before.recorded) return [writeAppliedStep(KIND, declared.name, desired)];
      return [];
    }
    return olds?.denyList ? [removeAppliedStep(KIND, declared.name)] : [];
  };
  const bootSteps = async (): Promise<ShellStep[]> => {
    // Only once the change is proven: a reboot must never bring back what the host reverted.
    if (!boot) return [removeBootRestoreStep(KIND, declared.name)];
    const persist = boot.persist(bootFiles ?? (await runSteps(session, [boot.check]))[0]!);
    // Objects missing from the host's cache (rare) go up first; an object is inert until loaded.
    for (const missing of persist.uploads) await uploadObject(session, missing, false);
    return [persist.step];
  };
  // An update of entries alone with nothing armed: nothing to roll back (the program
  // stays, and a batch that stops half way is put back by writeEntries), so the
  // cleanup and the read-back ride in the batch's exec, behind it. Not when the
  // entries may cut the management session (its peer allowed on its interface, the
  // guard off): the host would send that exec's whole answer before it needs an ACK,
  // and only a later exec shows the provider it has lost the host.
  const mayCutSession = survey.managementInterface === inputs.interface && inputs.allowManagementDeny;
  // And only with the program staying where it runs: a hook that moves leaves its old
  // place in the cleanup, which must follow the batch.
  const carriesReadback = hadPins && changesEntries && !guarded && !expectations && !program.needsLoad && inputs.attached && hook.inPlace && hook.cleanupCommands(program.ownIds).length === 0 && !mayCutSession;
  let observed: ObservedProgram | undefined;

  await guardedChange(session, {
    queue,
    async stage() {
      await program.stage(object, survey.objectPresent, () => packagedObject(DISPATCHER_OBJECT));
      if (indexMissing) await applyMapOperations(session, indexFromScratch(plan.observed, mapPin));
      // A new firewall protects nothing yet: its maps are filled before it goes on the
      // hook, so a session that dies half way never leaves a half-built firewall live
      // (the rollback, or the next up, removes the unattached pins).
      if (!hadPins) await writeEntries(session, layout, plan, undefined, desired);
      else if (before.recorded && changesEntries) queue.add(holdAppliedStep(KIND, declared.name));
    },
    guard: guarded || expectations
      ? {
          revertScript: () => revertScript(hook, hadPins ? denyOperations(invertPlan(plan), mapPin) : [], program.change),
          seconds: inputs.lockoutRevertSeconds,
          proof: { inputs, subject: "the change", advice: "Check the deny entries against the addresses this host is managed from." },
          proveLogin: guarded,
        }
      : undefined,
    expectations,
    // An existing firewall: the hook first, the entries after: an entry that cuts the
    // management session must not also cut the command that swaps the program (the
    // revert could not tell).
    async apply() {
      await program.install(queue);
      if (!inputs.attached) {
        await queue.flush();
        await hook.release(session, program.ownIds);
      }
      if (!hadPins) return;
      if (!carriesReadback) {
        await writeEntries(session, layout, plan, observedBefore, desired, queue);
        return;
      }
      const readback = programReadback(session, layout, placement);
      const behind = [...appliedSteps(), ...(await bootSteps())];
      try {
        const ran = await writeEntries(session, layout, plan, observedBefore, desired, queue, [...behind, ...readback.steps]);
        observed = readback.parse(ran.slice(behind.length));
      } catch (err) {
        // The host refused the plan's assumptions before anything ran: nothing to undo.
        if (err instanceof AssumptionMissed) throw err;
        // The exec may have ended after the copy was patched and before the read-back
        // (a lost connection), and writeEntries may have put the previous entries back:
        // no record then, so the next run reads the maps.
        await removeApplied(session, KIND, declared.name).catch(ignoreFailure);
        throw err;
      }
    },
    // A fresh firewall that never attached is removed whole (the steps the revert timer would run).
    rollback: () => program.rollback(revertScript(hook, [], "new")),
    // Queued behind the disarm: they run only once the change is proven.
    cleanup: carriesReadback
      ? undefined
      : async () => {
          await program.cleanup(queue);
          queue.add(...appliedSteps(), ...(await bootSteps()));
        },
  });
  // bpftool batch stops at the first failed write, so after it succeeded the maps hold
  // exactly the desired entries: only the program side is read back, in the exec that
  // carries the disarm and the cleanup (or, above, the batch itself).
  if (!carriesReadback) observed = await observeProgram(session, layout, placement, queue);
  if (!observed) throw new Error(`${session.label}: the firewall's pins vanished right after it was applied`);
  if (!patched) await runSteps(session, [writeAppliedStep(KIND, declared.name, desired)]);
  const { denyDrift: _repaired, ...converged } = declared;
  return outputsOf(converged, { ...observed, deny: inputs.deny }, object.sha256, expectations?.results ?? {}, await management());
}

/**
 * Refresh of a firewall that applies a DenyList: the maps are judged against the list
 * the host recorded as applied (refresh reads resources in no particular order, so not
 * against the list's state), and only the difference is reported, in `denyDrift`, so a
 * reviewer sees the stray and missing entries of that host and the next `up` repairs
 * them. The recorded list's own digest becomes `denyList.digest`: a host that holds
 * another version than the stack thinks (a wave that failed) shows it. Without a
 * record, the maps' digest stands in for it.
 */
async function listDrift(session: SshSession, olds: XdpFirewallOutputs, inMaps: string[]): Promise<Pick<XdpFirewallOutputs, "denyList" | "denyDrift">> {
  const applied = await readApplied(session, KIND, olds.name);
  const baseline = applied ?? inMaps;
  const digest = contentDigest(baseline);
  const denyList = digest === olds.denyList!.digest ? olds.denyList : { ...olds.denyList!, digest, count: baseline.length };
  return { denyList, denyDrift: driftOf(baseline, inMaps) };
}

export const xdpFirewallKind = defineKind<XdpFirewallInputs, XdpFirewallOutputs>({
  kind: KIND,
  schema: xdpFirewallSchema,
  check: checkXdpFirewall,
  replaceOn: ["host", "interface", "name", "mode"],
  object: OBJECT,
  outputOnly: { objectSha256: true, programId: true, programTag: true, attachMode: true, counters: true, mapMemoryBytes: true, expectResults: true, managementSession: true },
  converge,

  async observe(olds) {
    const { session, layout } = await connectResource(KIND, olds);
    const observed = await observe(session, layout, placementOf(olds));
    if (!observed) return undefined;
    if (!olds.denyList) return outputsOf(olds, observed, olds.objectSha256);
    return outputsOf({ ...olds, ...(await listDrift(session, olds, Object.keys(observed.deny))) }, observed, olds.objectSha256);
  },

  async delete(_id, olds) {
    const { session, layout } = await connectResource(KIND, olds);
    const state = await programState(session, olds.interface, layout, STATS_MAP, dispatcherDir(olds.interface));
    // Take off only what this firewall attached (alone, or its chain slot); whatever else is on the hook stays.
    const ids = state.program ? [state.program.id] : [];
    await releaseHook(session, olds.interface, hookPosition(state.xdp, state.chain, ids), ids);
    await removeBootRestore(session, KIND, olds.name);
    await removeApplied(session, KIND, olds.name);
    await removePins(session, layout);
  },
});
