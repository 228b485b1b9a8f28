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
import type { Kind } from "../dynamicAdapter";
import { packagedObject } from "../objects";
import { applyMapOperations, dumpMaps } from "../remote/mapOperations";
import { objectRemotePath, uploadObject } from "../remote/objectUpload";
import { pathExists, removePins, type PinLayout } from "../remote/pins";
import { HostPreconditionError, preflight, requireProgramType } from "../remote/preflight";
import { loadProgram, pinnedProgram } from "../remote/programLoad";
import { connectResource, resourceId } from "../remote/resource";
import { proveManagementPath } from "../remote/lockout";
import { armRevert, type RevertTimer } from "../remote/revertTimer";
import type { SshSession } from "../remote/ssh";
import {
  addBpfFilter,
  deleteBpfFilter,
  ensureClsact,
  findFilter,
  formatHandle,
  hasClsact,
  removeClsactIfEmpty,
  replaceBpfFilter,
  TC_DIRECTIONS,
  tcFilters,
  type TcDirection,
  type TcFilter,
  type TcFilterSlot,
} from "../remote/tc";
import {
  CLASSIFIER_MAPS, classifierDrift, classifierOf, CONFIG_MAP, countersOf, decodeConfig, EMPTY_CONFIG, FILTERS_MAP, liveFilterList, STATS_MAP, type MirrorConfig,
} from "./codec";
import { changedPaths, mirrorRevertScript, touchesManagementPath, type MirrorRevertPlan } from "./guard";
import { mirrorOperations, planMirror, type DesiredMirror, type ObservedMirror } from "./plan";
import {
  filterRecord,
  trafficMirrorSchema,
  type Direction,
  type MirrorFilter,
  type MirrorTarget,
  type TrafficMirrorCounters,
  type TrafficMirrorInputs,
  type TrafficMirrorOutputs,
} from "./schema";
import {
  ensureTunnel,
  linkNamed,
  listLinks,
  removeOwnedTunnels,
  sameTunnel,
  tunnelAlias,
  tunnelDeviceName,
  tunnelGuard,
  tunnelSpecOf,
  type LinkInfo,
} from "./tunnel";

const KIND = "traffic-mirror";
const OBJECT = "tc_mirror";
/** The program's name in the kernel (its function name, cut to 15 characters). */
const PROGRAM_NAME = "tc_mirror";

/**
 * The TC handle of a mirror's filters: FNV-1a of its pin name, never 0 (0 asks
 * the kernel to pick one). Two mirrors on one host have different pin names,
 * so they get different handles even at the same priority.
 */
export function tcHandle(pinName: string): number {
  let hash = 0x811c9dc5;
  for (const byte of Buffer.from(`${KIND}/${pinName}`, "utf8")) hash = Math.imul(hash ^ byte, 0x01000193) >>> 0;
  return hash || 1;
}

export function directionsOf(direction: Direction): TcDirection[] {
  if (direction === "none") return [];
  return direction === "both" ? ["ingress", "egress"] : [direction];
}

function directionOf(attached: readonly TcDirection[]): Direction {
  if (attached.length === 2) return "both";
  return attached[0] ?? "none";
}

type Placement = Pick<TrafficMirrorInputs, "interface" | "priority" | "name">;

function slotOf(placement: Placement, direction: TcDirection): TcFilterSlot {
  return { iface: placement.interface, direction, priority: placement.priority, handle: tcHandle(placement.name) };
}

interface MapsState extends ObservedMirror {
  /** The config entry as the map holds it, for the revert to write back. */
  configBytes: Uint8Array | undefined;
  stats: { values: Uint8Array[] }[];
}

async function readMaps(session: SshSession, layout: PinLayout): Promise<MapsState> {
  const pin = (m: string) => `${layout.maps}/${m}`;
  const dumps = await dumpMaps(session, [pin(CONFIG_MAP), pin(FILTERS_MAP), pin(STATS_MAP), ...CLASSIFIER_MAPS.map(pin)]);
  const configEntry = dumps.get(pin(CONFIG_MAP))?.[0]?.values[0];
  const config: MirrorConfig = configEntry ? decodeConfig(configEntry) : EMPTY_CONFIG;
  const byIndex = (map: string) => {
    const entries = dumps.get(pin(map));
    if (!entries) return undefined;
    const slots = new Map<number, Uint8Array>();
    for (const entry of entries) {
      const index = new DataView(entry.key.buffer, entry.key.byteOffset, 4).getUint32(0, true);
      if (entry.values[0]) slots.set(index, entry.values[0]);
    }
    return slots;
  };
  // Records the classifier does not enforce as written read as absent, so that the plan rewrites them.
  const records = liveFilterList(config, byIndex(FILTERS_MAP) ?? new Map());
  const classifier = classifierOf(config.activeSet, Object.fromEntries(CLASSIFIER_MAPS.map((m) => [m, byIndex(m)])) as Parameters<typeof classifierOf>[1]);
  const drifted = classifierDrift(records, classifier);
  const filters = filterRecord(records.filter((_, i) => !drifted.has(i)));
  return { config, configBytes: configEntry, filters, stats: dumps.get(pin(STATS_MAP)) ?? [] };
}

interface Observed {
  programId: number;
  programTag: string;
  direction: Direction;
  filters: Record<string, MirrorFilter>;
  sampleRate: number;
  target: MirrorTarget;
  targetInterface: string;
  targetIfindex: number;
  counters: TrafficMirrorCounters;
}

/** What the host really has for this mirror, or undefined when its program pin is gone. */
async function observe(session: SshSession, layout: PinLayout, placement: Placement): Promise<Observed | undefined> {
  const program = await pinnedProgram(session, layout.program);
  if (!program) return undefined;
  const [maps, hooks, links] = await Promise.all([
    readMaps(session, layout),
    tcFilters(session, placement.interface).catch((): TcFilter[] => []),
    listLinks(session),
  ]);
  const attached = TC_DIRECTIONS.filter((d) => findFilter(hooks, slotOf(placement, d))?.programId === program.id);
  const ifindex = maps.config.targetIfindex;
  const link = ifindex ? links.find((l) => l.ifindex === ifindex) : undefined;
  // A target that is gone reads as a name no input can have, so the next preview shows the change.
  let target: MirrorTarget = { interface: ifindex ? `(ifindex ${ifindex} is gone)` : "(none)" };
  if (link) {
    const tunnel = link.alias === tunnelAlias(placement.name) ? tunnelSpecOf(link) : undefined;
    target = tunnel ? { tunnel } : { interface: link.ifname };
  }
  return {
    programId: program.id,
    programTag: program.tag,
    direction: directionOf(attached),
    filters: maps.filters,
    sampleRate: Math.max(1, maps.config.sampleRate),
    target,
    targetInterface: link?.ifname ?? "",
    targetIfindex: ifindex,
    counters: countersOf(maps.stats),
  };
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

function interfaceList(links: readonly LinkInfo[]): string {
  return links.map((l) => l.ifname).join(", ");
}

/** The local target, refused when it is missing, down, loopback, the mirrored interface itself, or a tunnel this mirror owns. */
function resolveLocalTarget(session: SshSession, links: readonly LinkInfo[], mirrored: LinkInfo, name: string, pinName: string): LinkInfo {
  const target = linkNamed(links, name);
  if (!target) {
    throw new HostPreconditionError(`${session.label}: target interface "${name}" does not exist on the host (it has: ${interfaceList(links)}). Nothing was changed.`);
  }
  if (target.ifindex === mirrored.ifindex) {
    throw new HostPreconditionError(
      `${session.label}: target interface "${name}" is the mirrored interface ${mirrored.ifname} itself: every copy sent out of it would be mirrored again (a loop). Pick another target. Nothing was changed.`,
    );
  }
  if (target.ifname === "lo") {
    throw new HostPreconditionError(`${session.label}: target interface "lo" would hand every copy back to this host's own network stack as if it had been received. Use a dummy or veth. Nothing was changed.`);
  }
  if (target.alias === tunnelAlias(pinName)) {
    // It would be removed as a leftover tunnel right after the mirror pointed at it.
    throw new HostPreconditionError(`${session.label}: target interface "${name}" is a tunnel this mirror created; give target.tunnel with its parameters instead. Nothing was changed.`);
  }
  if (!target.up) {
    throw new HostPreconditionError(`${session.label}: target interface "${name}" is down, so every copy would be dropped. Bring it up (ip link set ${target.ifname} up); bpfleet does not manage it. Nothing was changed.`);
  }
  return target;
}

/** Refuses a priority/handle on the hook that holds a filter this mirror did not attach. */
function claimSlots(session: SshSession, hooks: readonly TcFilter[], placement: Placement, programId: number | undefined): void {
  for (const direction of TC_DIRECTIONS) {
    const slot = slotOf(placement, direction);
    const existing = findFilter(hooks, slot);
    if (!existing || existing.programId === programId || existing.programName === PROGRAM_NAME) continue;
    throw new HostPreconditionError(
      `${session.label}: ${placement.interface} ${direction} already has a ${existing.kind} filter at priority ${slot.priority} handle ${formatHandle(slot.handle)}` +
        `${existing.programName ? ` (program ${existing.programName}, id ${existing.programId})` : ""} that this mirror did not attach. Choose another priority. Nothing was changed.`,
    );
  }
}

function desiredMirror(inputs: TrafficMirrorInputs, targetIfindex: number): DesiredMirror {
  return {
    targetIfindex,
    sampleRate: inputs.sampleRate,
    guard: inputs.target.tunnel ? tunnelGuard(inputs.target.tunnel) : undefined,
    filters: inputs.filters,
  };
}

/** The tunnel `inputs` asks for, when it exists on the host already as this mirror's, up and with its parameters. */
function readyTunnel(links: readonly LinkInfo[], inputs: TrafficMirrorInputs): LinkInfo | undefined {
  const spec = inputs.target.tunnel;
  if (!spec) return undefined;
  const link = links.find((l) => l.ifname === tunnelDeviceName(inputs.name, spec));
  return link && link.alias === tunnelAlias(inputs.name) && link.up && sameTunnel(tunnelSpecOf(link), spec) ? link : undefined;
}

/**
 * Brings the host to `inputs`. Create and update share it, so a run that died
 * half way (pins left, filters missing) converges on the next `up`. A change
 * on the path of the management session runs under the lockout guard (guard.ts).
 */
async function converge(inputs: TrafficMirrorInputs, olds?: TrafficMirrorOutputs): Promise<TrafficMirrorOutputs> {
  const { session, layout } = await connectResource(KIND, inputs);
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
  claimSlots(session, hooks, inputs, program?.id);

  const object = packagedObject(OBJECT);
  const fresh = program === undefined;
  const needsLoad = fresh || olds?.objectSha256 !== object.sha256;
  const swapsProgram = needsLoad && !fresh;
  const wanted = directionsOf(inputs.direction);
  const hooked = (d: TcDirection) => findFilter(hooks, slotOf(inputs, d));
  const hooksChange = TC_DIRECTIONS.some((d) => (wanted.includes(d) ? needsLoad || hooked(d)?.programId !== program?.id : hooked(d) !== undefined));
  const tunnelBefore = readyTunnel(links, inputs);
  const tunnelDevice = inputs.target.tunnel && tunnelDeviceName(inputs.name, inputs.target.tunnel);
  // Read before any change: loading reuses these very maps (a fresh mirror reads again after its load).
  let current = fresh ? undefined : await readMaps(session, layout);
  const knownTarget = inputs.target.tunnel ? tunnelBefore : localTarget;
  const rewritesConfig = !current || !knownTarget || mirrorOperations(planMirror(desiredMirror(inputs, knownTarget.ifindex), current), (map) => map).length > 0;
  const changes = needsLoad || hooksChange || rewritesConfig;
  const paths = inputs.lockoutGuard && changes ? await changedPaths(session, inputs.target.tunnel?.remote) : undefined;
  const guarded = paths !== undefined && touchesManagementPath(paths, inputs.interface, tunnelDevice !== undefined);
  const revert: MirrorRevertPlan = {
    layout,
    iface: inputs.interface,
    priority: inputs.priority,
    handle: tcHandle(inputs.name),
    fresh,
    hookedBefore: TC_DIRECTIONS.filter((d) => hooked(d) !== undefined),
    config: current?.configBytes,
    newTunnel: tunnelDevice !== undefined && !links.some((l) => l.ifname === tunnelDevice) ? tunnelDevice : undefined,
    qdiscBefore: await hasClsact(session, inputs.interface),
  };

  let qdiscCreated = olds?.qdiscCreated ?? false;
  let timer: RevertTimer | undefined;
  let newProgram: string | undefined;
  let tunnel: { link: LinkInfo; created: boolean } | undefined;
  try {
    if (guarded) timer = await armRevert(session, mirrorRevertScript(revert), inputs.lockoutRevertSeconds);
    if (inputs.target.tunnel) tunnel = await ensureTunnel(session, inputs.name, inputs.target.tunnel, links);
    const target = tunnel?.link ?? localTarget!;
    if (needsLoad) {
      const present = await pathExists(session, objectRemotePath(object));
      newProgram = await loadProgram(session, layout, await uploadObject(session, object, present), "tc");
    }
    // A fresh load may have adopted map pins an earlier run left.
    current ??= await readMaps(session, layout);
    await applyMapOperations(session, mirrorOperations(planMirror(desiredMirror(inputs, target.ifindex), current), (map) => `${layout.maps}/${map}`));

    if (wanted.length > 0 && (await ensureClsact(session, inputs.interface)).created) qdiscCreated = true;
    for (const direction of TC_DIRECTIONS) {
      const slot = slotOf(inputs, direction);
      const existing = hooked(direction);
      if (wanted.includes(direction)) {
        if (!existing) await addBpfFilter(session, slot, newProgram ?? layout.program);
        else if (newProgram || existing.programId !== program?.id) await replaceBpfFilter(session, slot, newProgram ?? layout.program);
      } else if (existing) {
        await deleteBpfFilter(session, slot);
      }
    }
    // The previous program stays pinned as prog_old until the change is proven.
    if (newProgram) await session.run([...(swapsProgram ? [["mv", "-f", layout.program, `${layout.program}_old`]] : []), ["mv", "-f", newProgram, layout.program]]);
  } catch (err) {
    // Leave the host as it was: the steps the revert timer would run. A fresh
    // mirror is removed whole; an existing one gets its config, filters and
    // program back, and a tunnel the change made goes again.
    await timer?.disarm().catch(() => undefined);
    await session.run(["sh", "-c", mirrorRevertScript(revert)]).catch(() => undefined);
    if (fresh) await removePins(session, layout).catch(() => undefined);
    throw err;
  }
  if (timer) {
    await proveManagementPath(session, timer, {
      inputs,
      iface: paths?.management,
      subject: "the mirror",
      advice:
        `A mirror hands every packet on, so look at what else changed on ${inputs.interface}: the BPF object loaded` +
        `${tunnel ? ` and the tunnel ${tunnel.link.ifname} to ${inputs.target.tunnel!.remote}` : ""}.`,
    });
  }
  if (swapsProgram) await session.run(["rm", "-f", `${layout.program}_old`]);
  // Only now that the change is proven and the config names the current target may earlier tunnels go.
  await removeOwnedTunnels(session, inputs.name, tunnel?.link.ifname);
  const observed = await observe(session, layout, inputs);
  if (!observed) throw new Error(`${session.label}: the mirror's pins vanished right after it was applied`);
  return outputsOf(inputs, observed, object.sha256, qdiscCreated);
}

export const trafficMirrorKind: Kind<TrafficMirrorInputs, TrafficMirrorOutputs> = {
  kind: KIND,
  schema: trafficMirrorSchema,
  replaceOn: ["host", "interface", "name", "priority"],

  pendingChanges(olds) {
    const sha = packagedObject(OBJECT).sha256;
    return olds.objectSha256 === sha ? [] : [`BPF object ${olds.objectSha256?.slice(0, 12)} -> ${sha.slice(0, 12)}`];
  },

  async create(inputs) {
    return { id: resourceId(KIND, inputs), outs: await converge(inputs) };
  },

  async read(_id, olds) {
    const { session, layout } = await connectResource(KIND, olds);
    const observed = await observe(session, layout, olds);
    if (!observed) return undefined;
    const outs = outputsOf(olds, observed, olds.objectSha256, olds.qdiscCreated);
    const {
      objectSha256: _sha, programId: _pid, programTag: _tag, tcHandle: _handle, targetInterface: _ti, targetIfindex: _tx, qdiscCreated: _q, counters: _c,
      ...inputs
    } = outs;
    return { outs, inputs };
  },

  async update(_id, olds, news) {
    return converge(news, olds);
  },

  async delete(_id, olds) {
    const { session, layout } = await connectResource(KIND, olds);
    const program = await pinnedProgram(session, layout.program);
    const hooks = await tcFilters(session, olds.interface).catch((): TcFilter[] => []);
    // Detach first: once no hook runs the program, nothing points at the tunnel.
    for (const direction of TC_DIRECTIONS) {
      const slot = slotOf(olds, direction);
      const existing = findFilter(hooks, slot);
      if (existing && (existing.programId === program?.id || existing.programName === PROGRAM_NAME)) await deleteBpfFilter(session, slot);
    }
    await removeOwnedTunnels(session, olds.name);
    await removePins(session, layout);
    await removeClsactIfEmpty(session, olds.interface, olds.qdiscCreated).catch(() => undefined);
  },
};
