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
import { programState } from "../remote/resourceSurvey";
import { DISPATCHER_OBJECT, dispatcherDir, hookPosition, releaseHook, type XdpPlacement } from "../remote/xdpHook";
import { persistBootRestore, removeBootRestore } from "../remote/bootRestore";
import { guardedChange } from "../remote/guardedChange";
import { expectationCheck, xdpProbeTarget } from "../expect/hostRun";
import { connectResource } from "../remote/resource";
import type { SshSession } from "../remote/ssh";
import { surveyXdp, XdpProgramChange } from "../remote/xdpChange";
import { STATS_MAP } from "./codec";
import { refuseManagementDeny, revertScript } from "./guard";
import { missingIndex, observe, observeEntries, observeProgram, type Observed } from "./hostState";
import { denyOperations, indexFromScratch, invertPlan, planDeny } from "./plan";
import { checkXdpFirewall, xdpFirewallSchema, type XdpFirewallInputs, type XdpFirewallOutputs } from "./schema";
import { writeEntries } from "./writeEntries";

const KIND = "xdp-firewall";
const OBJECT = "xdp_firewall";

function placementOf(inputs: XdpFirewallInputs): XdpPlacement {
  return { iface: inputs.interface, mode: inputs.mode, chainPriority: inputs.chainPriority };
}

function outputsOf(inputs: XdpFirewallInputs, observed: Observed, objectSha256: string, expectResults?: XdpFirewallOutputs["expectResults"]): XdpFirewallOutputs {
  return {
    ...inputs,
    deny: observed.deny,
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

/** What brings the firewall back after a reboot, when the inputs ask for it (or nothing). */
async function bootRestore(session: SshSession, layout: PinLayout, object: LocalObject, inputs: XdpFirewallInputs): Promise<void> {
  if (!inputs.bootRestore) return removeBootRestore(session, KIND, inputs.name);
  // Records and index alike, from empty maps (the restore loads the object afresh).
  const mapOperations = denyOperations(planDeny(Object.keys(inputs.deny), []), (map) => `${layout.maps}/${map}`);
  // A chain member comes back behind the interface's dispatcher, in its slot.
  const chain = inputs.chainPriority === undefined ? undefined : { slot: inputs.chainPriority, dispatcher: packagedObject(DISPATCHER_OBJECT) };
  const xdp = inputs.attached ? { interface: inputs.interface, mode: inputs.mode, chain } : undefined;
  await persistBootRestore(session, { kind: KIND, name: inputs.name, layout, object, mapOperations, xdp });
}

/**
 * Brings the host to `inputs`. Used by create and update alike, so a half-finished
 * earlier run (pins left, program not attached) converges on the next `up`.
 */
async function converge(inputs: XdpFirewallInputs, olds?: XdpFirewallOutputs): Promise<XdpFirewallOutputs> {
  const { session, layout } = await connectResource(KIND, inputs);
  const object = packagedObject(OBJECT);
  const placement = placementOf(inputs);
  const { survey, hook } = await surveyXdp(session, layout, object, placement, inputs.attached, "firewall", () => refuseManagementDeny(session, inputs));
  const hadPins = survey.program !== undefined;
  // Pins of an object without the index (an upgrade from it): the load below creates
  // the index maps empty, and they are filled from the records before the new program
  // sees a packet. A missing index pin forces that load too.
  const indexMissing = hadPins && (await missingIndex(session, layout));
  const program = new XdpProgramChange(session, layout, hook, survey.program?.id, !hadPins || olds?.objectSha256 !== object.sha256 || hook.rebinds || indexMissing);
  const mapPin = (map: string) => `${layout.maps}/${map}`;
  const observedBefore = Object.keys(hadPins ? await observeEntries(session, layout) : {});
  const plan = planDeny(Object.keys(inputs.deny), observedBefore);
  const changesTraffic = plan.add.length + plan.remove.length > 0 || (inputs.attached && (program.needsLoad || !hook.inPlace));
  const guarded = inputs.lockoutGuard && changesTraffic && survey.managementInterface === inputs.interface;
  // Packet expectations run against what is attached, under a revert armed for them.
  const expectations = inputs.attached
    ? expectationCheck(session, "xdpFirewall", inputs.expect, () => xdpProbeTarget("xdpFirewall", OBJECT, layout, placement, survey.chain, program.ownIds))
    : undefined;

  await guardedChange(session, {
    async stage() {
      await program.stage(object, survey.objectPresent, () => packagedObject(DISPATCHER_OBJECT));
      if (indexMissing) await applyMapOperations(session, indexFromScratch(plan.observed, mapPin));
      // A new firewall protects nothing yet: its maps are filled before it goes on the
      // hook, so a session that dies half way never leaves a half-built firewall live
      // (the rollback, or the next up, removes the unattached pins).
      if (!hadPins) await writeEntries(session, layout, plan, undefined, Object.keys(inputs.deny));
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
      await program.install();
      await hook.release(session, program.ownIds);
      if (hadPins) await writeEntries(session, layout, plan, observedBefore, Object.keys(inputs.deny));
    },
    // A fresh firewall that never attached is removed whole (the steps the revert timer would run).
    rollback: () => program.rollback(revertScript(hook, [], "new")),
    async cleanup() {
      await program.cleanup();
      // Only once the change is proven: a reboot must never bring back what the host reverted.
      await bootRestore(session, layout, object, inputs);
    },
  });
  // bpftool batch stops at the first failed write, so after it succeeded the maps hold
  // exactly the desired entries: only the program side is read back.
  const observed = await observeProgram(session, layout, placement);
  if (!observed) throw new Error(`${session.label}: the firewall's pins vanished right after it was applied`);
  return outputsOf(inputs, { ...observed, deny: inputs.deny }, object.sha256, expectations?.results ?? {});
}

export const xdpFirewallKind = defineKind<XdpFirewallInputs, XdpFirewallOutputs>({
  kind: KIND,
  schema: xdpFirewallSchema,
  check: checkXdpFirewall,
  replaceOn: ["host", "interface", "name", "mode"],
  object: OBJECT,
  outputOnly: { objectSha256: true, programId: true, programTag: true, attachMode: true, counters: true, mapMemoryBytes: true, expectResults: true },
  converge,

  async observe(olds) {
    const { session, layout } = await connectResource(KIND, olds);
    const observed = await observe(session, layout, placementOf(olds));
    return observed && outputsOf(olds, observed, olds.objectSha256);
  },

  async delete(_id, olds) {
    const { session, layout } = await connectResource(KIND, olds);
    const state = await programState(session, olds.interface, layout, STATS_MAP, dispatcherDir(olds.interface));
    // Take off only what this firewall attached (alone, or its chain slot); whatever else is on the hook stays.
    const ids = state.program ? [state.program.id] : [];
    await releaseHook(session, olds.interface, hookPosition(state.xdp, state.chain, ids), ids);
    await removeBootRestore(session, KIND, olds.name);
    await removePins(session, layout);
  },
});
