/**
 * TrafficMirror on a host: create, read, update, delete. The order of every
 * change keeps one promise: the program only ever points at a target that
 * exists. A tunnel is created before the config names it and removed only
 * after the config names something else (or the filters are gone); filters
 * change by flipping between two complete sets; a new BPF object is swapped
 * into the TC filters in place. Only this mirror's filters, tunnels and pins
 * are ever removed. A change on the path of the management SSH session runs
 * under the lockout guard (guard.ts).
 */
import { defineKind } from "../dynamicAdapter";
import { packagedObject } from "../objects";
import { applyMapOperations } from "../remote/mapOperations";
import { objectRemotePath, uploadObject } from "../remote/objectUpload";
import { pathExists, removePins, type PinLayout } from "../remote/pins";
import { HostPreconditionError, preflight, requireProgramType } from "../remote/preflight";
import { loadProgram, pinnedProgram } from "../remote/programLoad";
import { guardedChange, ignoreFailure, swapInCommands } from "../remote/guardedChange";
import { connectResource } from "../remote/resource";
import type { SshSession } from "../remote/ssh";
import { deleteBpfFilterCommand, findFilter, hookQdisc, removeClsactIfEmpty, TC_DIRECTIONS, tcFilters, type TcDirection } from "../remote/tc";
import { requireClsactHook, slotOf, tcHandle as tcHookHandle, TcHookPlan } from "../remote/tcHook";
import { readApplied, removeApplied, writeAppliedStep } from "../remote/appliedSets";
import { runSteps } from "../remote/shellSteps";
import { boundOutputs, resolveFilterSet } from "./filterSets";
import { changedPaths, mirrorRevertScript, touchesManagementPath, type MirrorRevertPlan } from "./guard";
import { KIND, observe, readMaps, type MapsState, type Observed } from "./hostState";
import { mirrorOperations, planMirror, type DesiredMirror } from "./plan";
import { trafficMirrorSchema, type Direction, type TrafficMirrorInputs, type TrafficMirrorOutputs } from "./schema";
import { interfaceList, readyTunnel, resolveLocalTarget } from "./targets";
import { ensureTunnel, linkNamed, listLinks, removeOwnedTunnels, tunnelDeviceName, tunnelGuard, type LinkInfo } from "./tunnel";

const OBJECT = "tc_mirror";
/** The program's name in the kernel (its function name, cut to 15 characters). */
const PROGRAM_NAME = "tc_mirror";

/** The TC handle of a mirror's filters (tcHook.ts): two mirrors on one host have different pin names. */
export const tcHandle = (pinName: string): number => tcHookHandle(KIND, pinName);

export function directionsOf(direction: Direction): TcDirection[] {
  if (direction === "none") return [];
  return direction === "both" ? ["ingress", "egress"] : [direction];
}

function outputsOf(inputs: TrafficMirrorInputs, observed: Observed, objectSha256: string, qdiscCreated: boolean): TrafficMirrorOutputs {
  return {
    ...inputs,
    direction: observed.direction,
    filters: observed.filters,
    sampleRate: observed.sampleRate,
    target: observed.target,
    objectSha256,
    programId: observed.programId,
    programTag: observed.programTag,
    tcHandle: tcHandle(inputs.name),
    targetInterface: observed.targetInterface,
    targetIfindex: observed.targetIfindex,
    qdiscCreated,
    counters: observed.counters,
  };
}

function desiredMirror(inputs: TrafficMirrorInputs, targetIfindex: number): DesiredMirror {
  return {
    targetIfindex,
    sampleRate: inputs.sampleRate,
    guard: inputs.target.tunnel ? tunnelGuard(inputs.target.tunnel) : undefined,
    filters: inputs.filters,
  };
}

/**
 * The host as the mirror finds it, refused where the mirror cannot go (before
 * anything changes): the interface, the local target, the hooks' slots, and
 * the qdisc when a hook is wanted.
 */
async function surveyAndRefuse(session: SshSession, layout: PinLayout, inputs: TrafficMirrorInputs) {
  await preflight(session);
  await requireProgramType(session, "sched_cls");
  const links = await listLinks(session);
  const mirrored = linkNamed(links, inputs.interface);
  if (!mirrored) {
    throw new HostPreconditionError(`${session.label}: interface "${inputs.interface}" does not exist on the host (it has: ${interfaceList(links)}). Nothing was changed.`);
  }
  const localTarget = inputs.target.interface !== undefined ? resolveLocalTarget(session, links, mirrored, inputs.target.interface, inputs.name) : undefined;
  const program = await pinnedProgram(session, layout.program);
  const hooks = await tcFilters(session, inputs.interface);
  const qdisc = await hookQdisc(session, inputs.interface);
  const hook = new TcHookPlan(KIND, inputs, hooks, (f) => f.programId === program?.id || f.programName === PROGRAM_NAME, () => program?.id, qdisc);
  hook.claim(session, "mirror", "Choose another priority.");
  if (directionsOf(inputs.direction).length > 0) requireClsactHook(session, inputs.interface, qdisc);
  return { links, localTarget, program, hook };
}

/** What undoes the change: hooks, config, program and qdisc as the survey found them; a tunnel the change creates goes. */
function revertPlan(layout: PinLayout, inputs: TrafficMirrorInputs, hook: TcHookPlan, current: MapsState | undefined, links: readonly LinkInfo[]): MirrorRevertPlan {
  const tunnelDevice = inputs.target.tunnel && tunnelDeviceName(inputs.name, inputs.target.tunnel);
  return {
    layout,
    iface: inputs.interface,
    priority: inputs.priority,
    handle: tcHandle(inputs.name),
    fresh: current === undefined,
    hookedBefore: TC_DIRECTIONS.filter((d) => hook.hooked(d) !== undefined),
    config: current?.configBytes,
    newTunnel: tunnelDevice !== undefined && !links.some((l) => l.ifname === tunnelDevice) ? tunnelDevice : undefined,
    qdiscBefore: hook.hookQdisc === "clsact",
  };
}

/**
 * Brings the host to `inputs`. Create and update share it, so a run that died
 * half way (pins left, filters missing) converges on the next `up`. A change
 * on the path of the management session runs under the lockout guard (guard.ts).
 */
async function converge(declared: TrafficMirrorInputs, olds?: TrafficMirrorOutputs): Promise<TrafficMirrorOutputs> {
  const { session, layout } = await connectResource(KIND, declared);
  const { links, localTarget, program, hook } = await surveyAndRefuse(session, layout, declared);
  const wanted = directionsOf(declared.direction);
  const object = packagedObject(OBJECT);
  const fresh = program === undefined;
  const needsLoad = fresh || olds?.objectSha256 !== object.sha256;
  const hooksChange = TC_DIRECTIONS.some((d) => (wanted.includes(d) ? needsLoad || !hook.runsOurs(d) : hook.hooked(d) !== undefined));
  const tunnelDevice = declared.target.tunnel && tunnelDeviceName(declared.name, declared.target.tunnel);
  // Read before any change: loading reuses these very maps (a fresh mirror reads again after its load).
  let current = fresh ? undefined : await readMaps(session, layout);
  // `inputs` holds the filters; `declared` (what the state keeps) a bound MirrorFilterSet's ref.
  const inputs = await resolveFilterSet(session.label, declared, current?.filters, () => readApplied(session, KIND, declared.name));
  const knownTarget = inputs.target.tunnel ? readyTunnel(links, inputs) : localTarget;
  const rewritesConfig = !current || !knownTarget || mirrorOperations(planMirror(desiredMirror(inputs, knownTarget.ifindex), current), (map) => map).length > 0;
  const paths = inputs.lockoutGuard && (needsLoad || hooksChange || rewritesConfig) ? await changedPaths(session, inputs.target.tunnel?.remote) : undefined;
  const revert = revertPlan(layout, inputs, hook, current, links);
  const advice =
    `A mirror hands every packet on, so look at what else changed on ${inputs.interface}: the BPF object loaded` +
    `${tunnelDevice ? ` and the tunnel ${tunnelDevice} to ${inputs.target.tunnel!.remote}` : ""}.`;

  let qdiscCreated = olds?.qdiscCreated ?? false;
  let tunnel: { link: LinkInfo; created: boolean } | undefined;
  await guardedChange(session, {
    guard: paths && touchesManagementPath(paths, inputs.interface, tunnelDevice !== undefined)
      ? { revertScript: () => mirrorRevertScript(revert), seconds: inputs.lockoutRevertSeconds, proof: { inputs, iface: paths.management, subject: "the mirror", advice } }
      : undefined,
    async apply() {
      if (inputs.target.tunnel) tunnel = await ensureTunnel(session, inputs.name, inputs.target.tunnel, links);
      const target = tunnel?.link ?? localTarget!;
      let newProgram: string | undefined;
      if (needsLoad) newProgram = await loadProgram(session, layout, await uploadObject(session, object, await pathExists(session, objectRemotePath(object))), "tc");
      // A fresh load may have adopted map pins an earlier run left.
      current ??= await readMaps(session, layout);
      await applyMapOperations(session, mirrorOperations(planMirror(desiredMirror(inputs, target.ifindex), current), (map) => `${layout.maps}/${map}`));
      // The pin swap and every hook change in one round trip. The swap comes first so that
      // every filter is attached from the final pin: tc names a filter after the pin's file
      // ("prog:[*fsobj]"), and one attached from the staged pin would keep "prog_new" for good,
      // so hosts that reached one configuration by different paths would show two spellings.
      // Until the replace below, the hooks still run the old program (the kernel holds it,
      // not the pin), and the revert finds it at <pin>_old.
      const commands = newProgram ? swapInCommands(layout.program, newProgram, !fresh) : [];
      commands.push(...hook.installCommands(wanted, () => layout.program, newProgram !== undefined));
      if (commands.length > 0) await session.run(commands);
      if (hook.addsQdisc(wanted)) qdiscCreated = true;
    },
    // A fresh mirror is removed whole; an existing one gets its config, filters and
    // program back, and a tunnel the change made goes again.
    async rollback() {
      await session.run(["sh", "-c", mirrorRevertScript(revert)]).catch(ignoreFailure);
      if (fresh) await removePins(session, layout).catch(ignoreFailure);
    },
    async cleanup() {
      if (needsLoad && !fresh) await session.run(["rm", "-f", `${layout.program}_old`]);
      // Only now that the change is proven and the config names the current target may earlier tunnels go.
      await removeOwnedTunnels(session, inputs.name, tunnel?.link.ifname);
    },
  });
  // The host records the set it applied, once the maps hold it: the baseline refresh
  // judges drift against. A mirror that no longer binds one drops the record.
  if (declared.filterSet) await runSteps(session, [writeAppliedStep(KIND, declared.name, Object.keys(inputs.filters))]);
  else if (olds?.filterSet) await removeApplied(session, KIND, declared.name);
  const observed = await observe(session, layout, inputs);
  if (!observed) throw new Error(`${session.label}: the mirror's pins vanished right after it was applied`);
  return boundOutputs(outputsOf(declared, observed, object.sha256, qdiscCreated), observed.filters, Object.keys(inputs.filters));
}

export const trafficMirrorKind = defineKind<TrafficMirrorInputs, TrafficMirrorOutputs>({
  kind: KIND,
  schema: trafficMirrorSchema,
  replaceOn: ["host", "interface", "name", "priority"],
  object: OBJECT,
  outputOnly: { objectSha256: true, programId: true, programTag: true, tcHandle: true, targetInterface: true, targetIfindex: true, qdiscCreated: true, counters: true },
  converge,

  async observe(olds) {
    const { session, layout } = await connectResource(KIND, olds);
    // A bound mirror is judged against what the host recorded as applied, not the set's
    // state: a host a failed wave left behind holds another version than the stack's.
    const [observed, recorded] = await Promise.all([observe(session, layout, olds), olds.filterSet ? readApplied(session, KIND, olds.name) : undefined]);
    return observed && boundOutputs(outputsOf(olds, observed, olds.objectSha256, olds.qdiscCreated), observed.filters, recorded);
  },

  async delete(_id, olds) {
    const { session, layout } = await connectResource(KIND, olds);
    const program = await pinnedProgram(session, layout.program);
    // Not ignored: a listing that failed would read as "no filters", and the pins would go
    // while a filter still ran the program. An interface that is gone lists none (tcFilters).
    const hooks = await tcFilters(session, olds.interface);
    // Detach first: once no hook runs the program, nothing points at the tunnel. Both
    // hooks in one round trip, so that a lost connection never leaves one of them mirrored.
    const detach = TC_DIRECTIONS.map((direction) => slotOf(KIND, olds, direction)).filter((slot) => {
      const existing = findFilter(hooks, slot);
      return existing && (existing.programId === program?.id || existing.programName === PROGRAM_NAME);
    });
    if (detach.length > 0) await session.run(detach.map(deleteBpfFilterCommand));
    await removeOwnedTunnels(session, olds.name);
    await removePins(session, layout);
    if (olds.filterSet) await removeApplied(session, KIND, olds.name);
    // Not ignored: a delete that failed here would leave an empty clsact qdisc behind
    // and still report success; failing names the step, and the next delete removes it.
    await removeClsactIfEmpty(session, olds.interface, olds.qdiscCreated);
  },
});
