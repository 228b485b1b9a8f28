/**
 * MaglevService on a host: create, read, update, delete. Backends and VIPs
 * change in place through one ordered batch of map writes (plan.ts); a new BPF
 * object is swapped in atomically against the same pinned maps (tables and
 * flow state survive); another program on the interface is never replaced.
 *
 * Reading a table costs the host ~30 µs per slot (bpftool has no bulk read),
 * so updates do not read tables back: they trust the tables the last run
 * wrote, and a marker map (`<pin dir>/table_digest`) proves it. Every batch
 * that touches a table clears the marker first and writes the digest of the
 * new tables last; an update whose previous state's digest is not what the
 * marker holds (a batch that died half way, a refresh that found drift)
 * rewrites every slot. `read` does read the tables, so drift shows.
 */
import { defineKind, UNKNOWN } from "../dynamicAdapter";
import { packagedObject } from "../objects";
import { applyMapOperations } from "../remote/mapOperations";
import { removePins, type PinLayout } from "../remote/pins";
import { programState } from "../remote/resourceSurvey";
import { guardedChange, ignoreFailure } from "../remote/guardedChange";
import { expectationCheck, xdpProbeTarget } from "../expect/hostRun";
import { connectResource } from "../remote/resource";
import type { SshSession } from "../remote/ssh";
import { surveyXdp, XdpProgramChange } from "../remote/xdpChange";
import { DISPATCHER_OBJECT, dispatcherDir, hookPosition, releaseHook, type XdpPlacement } from "../remote/xdpHook";
import { MAPS } from "./codec";
import { guardManagementPath } from "./guard";
import { createMarker, mapPin, markerPin, observeMaps, observeProgram, readCountersAndTables, restoreMaps, type DumpedMaps } from "./hostState";
import { addressesToResolve, nextHopMacs, nextHopMtus, surveyRouting, tunnelSources } from "./neighbours";
import { observe } from "./observe";
import { planService, tableDigest, tableImage, type ServicePlan, type TableImage } from "./plan";
import { maglevServiceSchema, type MaglevServiceInputs, type MaglevServiceOutputs } from "./schema";
import { appliedBackendLines } from "./backendLines";
import { boundOutputs, registeredBackends, resolveBackendSet } from "./backendSet";
import { removeApplied, writeAppliedStep } from "../remote/appliedSets";
import { runSteps } from "../remote/shellSteps";

const KIND = "maglev";
const OBJECT = "xdp_maglev";

function placementOf(inputs: MaglevServiceInputs): XdpPlacement {
  return { iface: inputs.interface, mode: inputs.xdpMode, chainPriority: inputs.chainPriority };
}

/** The tables `olds` describes, when the host provably holds them (the marker says so). */
function knownTables(olds: MaglevServiceOutputs | undefined, marker: string | undefined): TableImage | undefined {
  if (!olds?.tableDigest || !olds.backendIndexes || marker === undefined || marker !== olds.tableDigest) return undefined;
  try {
    const { image } = tableImage(olds, olds.backendIndexes);
    return tableDigest(image) === marker ? image : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Brings the host to `inputs`. Used by create and update alike, so a
 * half-finished earlier run (pins left, program not attached) converges on
 * the next `up`.
 */
async function converge(declared: MaglevServiceInputs, olds?: MaglevServiceOutputs): Promise<MaglevServiceOutputs> {
  const { session, layout } = await connectResource(KIND, declared);
  // `inputs` holds the backends; `declared` (what the state keeps) a bound set's ref;
  // `previous` the old state with the backends it applied (backendSet.ts).
  const { inputs, previous } = await resolveBackendSet(session, KIND, declared, olds);
  const object = packagedObject(OBJECT);
  const { survey, hook } = await surveyXdp(session, layout, object, placementOf(inputs), true, "load balancer");
  await guardManagementPath(session, inputs.vips);
  const routing = await surveyRouting(session, inputs.interface, addressesToResolve(inputs.backends));
  const macs = nextHopMacs(session.label, inputs, routing);
  const mtus = nextHopMtus(macs, inputs.backends, routing);
  const sources = tunnelSources(inputs.mode, inputs.backends, routing);
  const program = new XdpProgramChange(session, layout, hook, survey.program?.id, !survey.program || olds?.objectSha256 !== object.sha256 || hook.rebinds);
  // Map writes only steer VIP traffic; what could cut SSH is a program (new or
  // swapped) on the interface that carries it.
  const guarded = inputs.lockoutGuard && (program.needsLoad || !hook.inPlace) && survey.managementInterface === inputs.interface;
  // Packet expectations run through what is attached, under a revert armed for them;
  // the backend is named by the rewritten frame (NAT/IPIP: its address, DSR: its next hop's MAC).
  const expectations = expectationCheck(
    session,
    "maglevService",
    inputs.expect,
    () => xdpProbeTarget("maglevService", OBJECT, layout, placementOf(inputs), survey.chain, program.ownIds),
    () => ({ mode: inputs.mode, backends: Object.entries(inputs.backends).map(([id, b]) => ({ address: b.address, port: b.port, mac: macs[id] })) }),
  );

  let plan: ServicePlan | undefined;
  let before: { dumps: DumpedMaps; tables: TableImage | undefined } | undefined;
  let mapsTouched = false;
  // An existing service's map entries as they were before the batch (whole or in part) changed them.
  const restoreTables = async () => {
    if (mapsTouched && program.hadPins && before) await restoreMaps(session, layout, plan!.operations, before.dumps, before.tables);
  };
  await guardedChange(session, {
    async stage() {
      await program.stage(object, survey.objectPresent, () => packagedObject(DISPATCHER_OBJECT));
      const observed = await observeMaps(session, layout);
      if (!observed.markerExists) await createMarker(session, layout);
      const desired = { ...inputs, macs, nextHopMtus: mtus, tunnelSources: sources };
      const tables = knownTables(previous, observed.marker);
      before = { dumps: observed.dumps, tables };
      plan = planService(desired, { ...observed, tables }, { nextBackendIndex: olds?.nextBackendIndex }, mapPin(layout), markerPin(layout));
    },
    // Map contents stay on a revert: they only steer VIP traffic, and a VIP can
    // never be the management SSH endpoint (guardManagementPath).
    guard:
      guarded || expectations
        ? { revertScript: () => hook.revertShell(program.change), seconds: inputs.lockoutRevertSeconds, proof: { inputs, subject: "attaching the load balancer" }, proveLogin: guarded }
        : undefined,
    expectations,
    async apply() {
      mapsTouched = true;
      await applyMapOperations(session, plan!.operations);
      await program.install();
    },
    // A fresh service is detached and removed whole (the revert timer's own steps).
    // An existing one gets back the map entries the batch (whole or in part) changed:
    // each write was valid on its own, but the state still records the old
    // inputs, so going back to them must find the host as they left it.
    async rollback() {
      await restoreTables().catch(ignoreFailure);
      await program.rollback(hook.revertShell("new"));
      if (!program.hadPins) await removePins(session, layout).catch(ignoreFailure);
    },
    // A missed expectation fired the revert: it swapped the program and hook back
    // (a new service it removed whole); the tables the batch wrote come back here.
    async afterRevert() {
      await restoreTables();
    },
    cleanup: () => program.cleanup(),
  });
  // The host records the set's backends it applied, once the maps hold them: the baseline
  // refresh judges drift against. A service that no longer binds a set drops the record.
  if (inputs.backendSet) await runSteps(session, [writeAppliedStep(KIND, inputs.name, appliedBackendLines(inputs.backends))]);
  else if (olds?.backendSet) await removeApplied(session, KIND, inputs.name);
  const outputs = await outputsOf(session, layout, inputs, plan!, macs, object.sha256);
  return { ...(declared.backendSet ? boundOutputs(outputs, declared) : outputs), expectResults: expectations?.results ?? {} };
}

/**
 * bpftool batch stops at the first failed write, so after it succeeded the
 * maps hold exactly the plan: only the program side and counters are read.
 */
async function outputsOf(session: SshSession, layout: PinLayout, inputs: MaglevServiceInputs, plan: ServicePlan, macs: Record<string, string | undefined>, objectSha256: string): Promise<MaglevServiceOutputs> {
  const program = await observeProgram(session, layout, placementOf(inputs));
  if (!program) throw new Error(`${session.label}: the load balancer's pins vanished right after it was applied`);
  const { backendIndexes, vipIndexes, nextBackendIndex } = plan.allocation;
  const counters = await readCountersAndTables(session, layout, vipIndexes, backendIndexes, []);
  return {
    ...inputs,
    objectSha256,
    programId: program.programId,
    programTag: program.programTag,
    attachMode: program.attachment?.mode ?? "detached",
    backendIndexes,
    nextBackendIndex,
    vipIndexes,
    backendMacs: Object.fromEntries(Object.keys(inputs.backends).map((id) => [id, macs[id] ?? ""])),
    nextHopDrift: [],
    tableDigest: plan.tableDigest,
    reverseNat: inputs.mode === "nat" && Object.keys(inputs.vips).length > 0,
    counters: { vips: counters.vips, backends: counters.backends, totals: program.totals },
    expectResults: {},
  };
}

function hasUnknown(value: unknown): boolean {
  return JSON.stringify(value ?? null).includes(UNKNOWN);
}

export const maglevServiceKind = defineKind<MaglevServiceInputs, MaglevServiceOutputs>({
  kind: KIND,
  schema: maglevServiceSchema,
  replaceOn: ["host", "interface", "name", "xdpMode"],
  object: OBJECT,
  outputOnly: {
    objectSha256: true, programId: true, programTag: true, attachMode: true, backendIndexes: true, nextBackendIndex: true,
    vipIndexes: true, backendMacs: true, nextHopDrift: true, tableDigest: true, reverseNat: true, counters: true, expectResults: true,
  },
  converge,
  observe: (olds) => observe(KIND, placementOf(olds), olds),

  /**
   * What an update must fix beyond the inputs and the object: tables
   * that are not what the backends give (changed on the host, seen by the last
   * refresh), or lb_config's reverse-NAT flag out of step with the mode.
   */
  pendingChanges(olds, news) {
    const pending: string[] = [];
    if ([news.vips, news.backends, news.backendSet, news.mode, news.tableSize].some(hasUnknown)) return pending;
    // A bound service's backends are its set's version, when this deployment registered it.
    const backends = news.backendSet ? registeredBackends(news) : news.backends;
    const ids = Object.keys(backends ?? {});
    if (backends && olds.tableDigest && olds.backendIndexes && ids.every((id) => olds.backendIndexes[id] !== undefined)) {
      try {
        const expected = tableDigest(tableImage({ ...news, backends }, olds.backendIndexes).image);
        if (expected !== olds.tableDigest) pending.push("maglev_table does not hold the tables these backends give (changed on the host)");
      } catch {
        // Inputs check() refuses; the update reports them.
      }
    }
    if (olds.nextHopDrift?.length) pending.push(`next hops changed on the host: ${olds.nextHopDrift.join("; ")}`);
    // Pins without the program on its hook serve no VIP (a delete stopped after the detach,
    // or someone took it off): the inputs read back alike, only the attachment shows it.
    if (olds.attachMode === "detached") pending.push("the load balancer's program is not on its hook (detached)");
    const wantNat = news.mode === "nat" && Object.keys(news.vips ?? {}).length > 0;
    if (olds.reverseNat !== undefined && olds.reverseNat !== wantNat) pending.push(`lb_config reverse NAT ${olds.reverseNat ? "on" : "off"} -> ${wantNat ? "on" : "off"}`);
    return pending;
  },

  async delete(_id, olds) {
    const { session, layout } = await connectResource(KIND, olds);
    const state = await programState(session, olds.interface, layout, MAPS.stats, dispatcherDir(olds.interface));
    // Take off only what this service attached (alone, or its chain slot); whatever else is on the hook stays.
    const ids = state.program ? [state.program.id] : [];
    await releaseHook(session, olds.interface, hookPosition(state.xdp, state.chain, ids), ids);
    await removePins(session, layout);
    if (olds.backendSet) await removeApplied(session, KIND, olds.name);
  },
});
