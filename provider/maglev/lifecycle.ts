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
import type { Kind } from "../dynamicAdapter";
import { UNKNOWN } from "../dynamicAdapter";
import { packagedObject } from "../objects";
import { applyMapOperations } from "../remote/mapOperations";
import { uploadObject } from "../remote/objectUpload";
import { removePins } from "../remote/pins";
import { HostPreconditionError, preflight, requireProgramType } from "../remote/preflight";
import { loadProgram } from "../remote/programLoad";
import { programState, requireInterface, surveyResource } from "../remote/resourceSurvey";
import { connectResource, resourceId } from "../remote/resource";
import { claimHook, DISPATCHER_OBJECT, dispatcherDir, HookPlan, hookPosition, releaseHook, type XdpPlacement } from "../remote/xdpHook";
import { proveManagementPath } from "../remote/lockout";
import { armRevert, type RevertTimer } from "../remote/revertTimer";
import type { SshSession } from "../remote/ssh";
import { LB_TABLE_CAPACITY, MAPS, type BackendRecord, type LbMode } from "./codec";
import { createMarker, mapPin, markerPin, observeMaps, observeProgram, readCountersAndTables } from "./hostState";
import { addressesToResolve, nextHopMacs, nextHopMtus, surveyRouting, tunnelSources } from "./neighbours";
import { planService, recordKey, tableDigest, tableImage, type ServicePlan, type TableImage } from "./plan";
import { maglevServiceSchema, type Backend, type Counter, type MaglevServiceInputs, type MaglevServiceOutputs, type Vip } from "./schema";

const KIND = "maglev";
const OBJECT = "xdp_maglev";

function placementOf(inputs: MaglevServiceInputs): XdpPlacement {
  return { iface: inputs.interface, mode: inputs.xdpMode, chainPriority: inputs.chainPriority };
}

// ---------------------------------------------------------------- guards

/** Refuses a TCP VIP that is the very address and port this provider's SSH session talks to. */
async function guardManagementPath(session: SshSession, vips: Record<string, Vip>): Promise<void> {
  const result = await session.run(["sh", "-c", 'printf %s "$SSH_CONNECTION"'], { asLoginUser: true, allowFailure: true });
  const [, , serverAddress, serverPort] = result.stdout.trim().split(/\s+/);
  if (!serverAddress || !serverPort) return;
  const address = serverAddress.replace(/^::ffff:/, "");
  const hit = Object.entries(vips).find(([, v]) => v.protocol === "tcp" && v.port === Number(serverPort) && v.address === address);
  if (hit) {
    throw new HostPreconditionError(
      `${session.label}: VIP ${hit[0]} is the address and port of this provider's own SSH session: balancing it would send the management connection to the backends and lock the host out. Nothing was changed.`,
    );
  }
}

// ---------------------------------------------------------------- lockout guard

// ---------------------------------------------------------------- outputs

function counterRecord(keys: readonly string[], counters: Record<string, Counter>): Record<string, Counter> {
  return Object.fromEntries(keys.map((k) => [k, counters[k] ?? { packets: 0, bytes: 0 }]));
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
async function converge(inputs: MaglevServiceInputs, olds?: MaglevServiceOutputs): Promise<MaglevServiceOutputs> {
  const { session, layout } = await connectResource(KIND, inputs);
  const object = packagedObject(OBJECT);
  await preflight(session);
  await requireProgramType(session, "xdp");
  const placement = placementOf(inputs);
  const survey = await surveyResource(session, inputs.interface, layout, object, dispatcherDir(inputs.interface));
  requireInterface(session, survey, inputs.interface);
  const hook = new HookPlan(placement, true, survey.xdp, survey.chain, layout, survey.program?.id);
  claimHook(session.label, "load balancer", placement, survey.xdp, survey.chain, hook.position);
  await guardManagementPath(session, inputs.vips);
  const routing = await surveyRouting(session, inputs.interface, addressesToResolve(inputs.backends));
  const macs = nextHopMacs(session.label, inputs, routing);
  const mtus = nextHopMtus(macs, inputs.backends, routing);
  const sources = tunnelSources(inputs.mode, inputs.backends, routing);
  const hadPins = survey.program !== undefined;
  const ownIds = survey.program ? [survey.program.id] : [];
  const needsLoad = !hadPins || olds?.objectSha256 !== object.sha256 || hook.rebinds;
  const swapsProgram = needsLoad && hadPins;
  // Map writes only steer VIP traffic; what could cut SSH is a program (new or
  // swapped) on the interface that carries it.
  const guarded = inputs.lockoutGuard && (needsLoad || !hook.inPlace) && survey.managementInterface === inputs.interface;
  const change = hook.change(hadPins, needsLoad);

  let newProgram: string | undefined;
  let timer: RevertTimer | undefined;
  let plan: ServicePlan;
  try {
    await hook.prepare(session, () => uploadObject(session, packagedObject(DISPATCHER_OBJECT)));
    if (needsLoad) newProgram = await loadProgram(session, layout, await uploadObject(session, object, survey.objectPresent), "xdp", hook.sharedChain);
    const observed = await observeMaps(session, layout);
    if (!observed.markerExists) await createMarker(session, layout);
    plan = planService(
      { ...inputs, macs, nextHopMtus: mtus, tunnelSources: sources },
      { ...observed, tables: knownTables(olds, observed.marker) },
      { nextBackendIndex: olds?.nextBackendIndex },
      mapPin(layout),
      markerPin(layout),
    );
    // Map contents stay on a revert: they only steer VIP traffic, and a VIP can
    // never be the management SSH endpoint (guardManagementPath).
    if (guarded) timer = await armRevert(session, hook.revertShell(change), inputs.lockoutRevertSeconds);
    await applyMapOperations(session, plan.operations);
    if (newProgram) {
      await session.run([
        ...hook.installCommands(newProgram, ownIds),
        // The previous program stays pinned as prog_old until the change is proven.
        ...(swapsProgram ? [["mv", "-f", layout.program, `${layout.program}_old`]] : []),
        ["mv", "-f", newProgram, layout.program],
      ]);
    } else if (!hook.inPlace) {
      await session.run(hook.installCommands(layout.program, ownIds));
    }
  } catch (err) {
    // Leave the host as it was: a fresh service is detached and removed whole
    // (the revert timer's own steps); an existing one keeps its program (the
    // staged one is dropped).
    await timer?.disarm().catch(() => undefined);
    if (!hadPins) {
      await session.run(["sh", "-c", hook.revertShell("new")]).catch(() => undefined);
      await removePins(session, layout).catch(() => undefined);
    } else if (newProgram) await session.run(["rm", "-f", newProgram]).catch(() => undefined);
    throw err;
  }
  if (timer) {
    await proveManagementPath(session, timer, {
      inputs,
      subject: "attaching the load balancer",
    });
  }
  const cleanup = hook.cleanupCommands(ownIds);
  if (cleanup.length > 0) await session.run(cleanup);
  if (swapsProgram) await session.run(["rm", "-f", `${layout.program}_old`]);

  // bpftool batch stops at the first failed write, so after it succeeded the
  // maps hold exactly the plan: only the program side and counters are read.
  const program = await observeProgram(session, layout, placement);
  if (!program) throw new Error(`${session.label}: the load balancer's pins vanished right after it was applied`);
  const { backendIndexes, vipIndexes, nextBackendIndex } = plan.allocation;
  const counters = await readCountersAndTables(session, layout, vipIndexes, backendIndexes, []);
  return {
    ...inputs,
    objectSha256: object.sha256,
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
  };
}

/** The value most VIPs agree on, preferring one that differs from `previous` so that drift shows. */
function observedSetting<T>(values: readonly T[], previous: T): T {
  return values.find((v) => v !== previous) ?? previous;
}

/**
 * The next-hop cache against the host as it is now: each backend whose record
 * carries another MAC or MTU than `up` would write (a neighbour that moved, a
 * route or MTU that changed), or why the host cannot serve the backends any
 * more. The program trusts the cache, so only this shows such a change.
 */
async function nextHopDrift(
  session: SshSession,
  olds: MaglevServiceOutputs,
  records: Map<number, BackendRecord>,
  backendIndexes: Record<string, number>,
  sourcesOnHost: { v4?: string; v6?: string },
): Promise<string[]> {
  const backends = olds.backends ?? {};
  const routing = await surveyRouting(session, olds.interface, addressesToResolve(backends));
  let macs: Record<string, string | undefined>;
  try {
    macs = nextHopMacs(session.label, olds, routing);
  } catch (err) {
    return [(err as Error).message];
  }
  const mtus = nextHopMtus(macs, backends, routing);
  const drift: string[] = [];
  const sources = tunnelSources(olds.mode, backends, routing);
  for (const family of ["v4", "v6"] as const) {
    if ((sources[family] ?? "") !== (sourcesOnHost[family] ?? "")) drift.push(`IPIP tunnel source (${family}): lb_config ${sourcesOnHost[family] ?? "none (FIB)"}, host now ${sources[family] ?? "none (FIB)"}`);
  }
  const show = (mac: string | undefined, mtu: number | undefined) => (mac === undefined ? "no MAC (FIB)" : `${mac}${mtu !== undefined ? ` mtu ${mtu}` : ""}`);
  for (const id of Object.keys(backends)) {
    const index = backendIndexes[id];
    const record = index !== undefined ? records.get(index) : undefined;
    if (!record) continue; // a missing record is drift of the backends themselves
    if (record.mac !== macs[id] || record.mtu !== mtus[id]) drift.push(`${id}: record ${show(record.mac, record.mtu)}, host now ${show(macs[id], mtus[id])}`);
  }
  return drift;
}

/** Everything `read` reports, or undefined when the service's pins are gone. */
async function observe(olds: MaglevServiceOutputs): Promise<MaglevServiceOutputs | undefined> {
  const { session, layout } = await connectResource(KIND, olds);
  const program = await observeProgram(session, layout, placementOf(olds));
  if (!program) return undefined;
  const maps = await observeMaps(session, layout);

  const backends: Record<string, Backend> = {};
  const backendIndexes: Record<string, number> = {};
  const backendMacs: Record<string, string> = {};
  for (const [index, record] of [...maps.backends].sort((a, b) => a[0] - b[0])) {
    const id = recordKey(record);
    if (backends[id]) continue;
    const previous = olds.backends?.[id];
    backends[id] = {
      address: record.address,
      ...(record.port !== 0 ? { port: record.port } : {}),
      weight: previous?.weight ?? 1,
      ...(previous?.mac !== undefined ? { mac: record.mac ?? "" } : {}),
    };
    backendIndexes[id] = index;
    backendMacs[id] = record.mac ?? "";
  }
  const vips: Record<string, Vip> = {};
  const vipIndexes: Record<string, number> = {};
  for (const [key, value] of maps.vips) {
    vips[key] = maps.vipAddresses.get(key)!;
    vipIndexes[key] = value.vipIndex;
  }
  const values = [...maps.vips.values()];
  const regions = new Map<number, number>();
  for (const v of values) {
    if (v.tableSize > 0 && v.tableOffset < LB_TABLE_CAPACITY) regions.set(v.tableOffset, Math.max(regions.get(v.tableOffset) ?? 0, Math.min(v.tableSize, LB_TABLE_CAPACITY - v.tableOffset)));
  }
  const drift = await nextHopDrift(session, olds, maps.backends, backendIndexes, maps.tunnelSources);
  const read = await readCountersAndTables(
    session,
    layout,
    vipIndexes,
    backendIndexes,
    [...regions].sort((a, b) => a[0] - b[0]).map(([offset, size]) => ({ offset, size })),
  );
  return {
    ...olds,
    vips: sortedLike(vips, olds.vips),
    backends: sortedLike(backends, olds.backends),
    mode: observedSetting<LbMode>(values.map((v) => v.mode), olds.mode),
    tableSize: observedSetting(values.map((v) => v.tableSize), olds.tableSize),
    connectionTable: observedSetting(values.map((v) => v.flowTable), olds.connectionTable),
    programId: program.programId,
    programTag: program.programTag,
    attachMode: program.attachment?.mode ?? "detached",
    backendIndexes,
    vipIndexes,
    backendMacs,
    nextHopDrift: drift,
    tableDigest: tableDigest(read.tables),
    reverseNat: maps.reverseNat,
    counters: { vips: counterRecord(Object.keys(vips), read.vips), backends: counterRecord(Object.keys(backends), read.backends), totals: program.totals },
  };
}

/** `observed` with the keys that `previous` also has in previous's order first, so that state does not churn. */
function sortedLike<T>(observed: Record<string, T>, previous: Record<string, T> | undefined): Record<string, T> {
  const keys = [...Object.keys(previous ?? {}).filter((k) => k in observed), ...Object.keys(observed).filter((k) => !(k in (previous ?? {})))];
  return Object.fromEntries(keys.map((k) => [k, observed[k]!]));
}

const OUTPUT_ONLY = ["objectSha256", "programId", "programTag", "attachMode", "backendIndexes", "nextBackendIndex", "vipIndexes", "backendMacs", "nextHopDrift", "tableDigest", "reverseNat", "counters"] as const;

function hasUnknown(value: unknown): boolean {
  return JSON.stringify(value ?? null).includes(UNKNOWN);
}

export const maglevServiceKind: Kind<MaglevServiceInputs, MaglevServiceOutputs> = {
  kind: KIND,
  schema: maglevServiceSchema,
  replaceOn: ["host", "interface", "name", "xdpMode"],

  /**
   * What an update must fix beyond the inputs: a newer BPF object, tables
   * that are not what the backends give (changed on the host, seen by the last
   * refresh), or lb_config's reverse-NAT flag out of step with the mode.
   */
  pendingChanges(olds, news) {
    const pending: string[] = [];
    const sha = packagedObject(OBJECT).sha256;
    if (olds.objectSha256 !== sha) pending.push(`BPF object ${olds.objectSha256?.slice(0, 12)} -> ${sha.slice(0, 12)}`);
    if ([news.vips, news.backends, news.mode, news.tableSize].some(hasUnknown)) return pending;
    const ids = Object.keys(news.backends ?? {});
    if (olds.tableDigest && olds.backendIndexes && ids.every((id) => olds.backendIndexes[id] !== undefined)) {
      try {
        const expected = tableDigest(tableImage(news, olds.backendIndexes).image);
        if (expected !== olds.tableDigest) pending.push("maglev_table does not hold the tables these backends give (changed on the host)");
      } catch {
        // Inputs check() refuses; the update reports them.
      }
    }
    if (olds.nextHopDrift?.length) pending.push(`next hops changed on the host: ${olds.nextHopDrift.join("; ")}`);
    const wantNat = news.mode === "nat" && Object.keys(news.vips ?? {}).length > 0;
    if (olds.reverseNat !== undefined && olds.reverseNat !== wantNat) pending.push(`lb_config reverse NAT ${olds.reverseNat ? "on" : "off"} -> ${wantNat ? "on" : "off"}`);
    return pending;
  },

  async create(inputs) {
    return { id: resourceId(KIND, inputs), outs: await converge(inputs) };
  },

  async read(_id, olds) {
    const outs = await observe(olds);
    if (!outs) return undefined;
    const inputs = { ...outs } as Record<string, unknown>;
    for (const key of OUTPUT_ONLY) delete inputs[key];
    return { outs, inputs: inputs as MaglevServiceInputs };
  },

  async update(_id, olds, news) {
    return converge(news, olds);
  },

  async delete(_id, olds) {
    const { session, layout } = await connectResource(KIND, olds);
    const state = await programState(session, olds.interface, layout, MAPS.stats, dispatcherDir(olds.interface));
    // Take off only what this service attached (alone, or its chain slot); whatever else is on the hook stays.
    const ids = state.program ? [state.program.id] : [];
    await releaseHook(session, olds.interface, hookPosition(state.xdp, state.chain, ids), ids);
    await removePins(session, layout);
  },
};
