/**
 * XdpFirewall on a host: create, read, update, delete. Entries change in place
 * (maps written, never detached); a new BPF object is swapped in atomically
 * against the same pinned maps; another program on the interface is never
 * replaced.
 */
import { parsePrefix, prefixContains } from "../cidr";
import type { Kind } from "../dynamicAdapter";
import { packagedObject } from "../objects";
import { applyMapOperations, batchText, dumpMaps, type MapOperation } from "../remote/mapOperations";
import { uploadObject } from "../remote/objectUpload";
import { listPins, removePins, type PinLayout } from "../remote/pins";
import { HostPreconditionError, preflight, requireProgramType } from "../remote/preflight";
import { loadProgram } from "../remote/programLoad";
import { programState, requireInterface, surveyResource } from "../remote/resourceSurvey";
import type { XdpAttachment } from "../remote/xdpAttach";
import { claimHook, DISPATCHER_OBJECT, dispatcherDir, HookPlan, hookPosition, placedAttachment, releaseHook, type HookChange, type XdpPlacement } from "../remote/xdpHook";
import { persistBootRestore, removeBootRestore } from "../remote/bootRestore";
import { connectResource, resourceId } from "../remote/resource";
import { proveManagementPath } from "../remote/lockout";
import { armRevert, type RevertTimer } from "../remote/revertTimer";
import { RemoteCommandError, type SshSession } from "../remote/ssh";
import { sortedRecord } from "../validation";
import { sumCounters } from "../counters";
import { decodeDenyEntry, DENY_MAPS, encodeDenyEntry, STATS_MAP } from "./codec";
import { INDEX_MAPS } from "./index";
import { denyOperations, indexFromScratch, invertPlan, planDeny, type DenyPlan } from "./plan";
import { checkXdpFirewall, xdpFirewallSchema, type XdpFirewallInputs, type XdpFirewallOutputs } from "./schema";
import { hostJson, mapShow } from "../remote/hostJson";

const KIND = "xdp-firewall";
const OBJECT = "xdp_firewall";

interface ObservedProgram {
  programId: number;
  programTag: string;
  attachment: XdpAttachment | undefined;
  counters: XdpFirewallOutputs["counters"];
  mapMemoryBytes: number;
}

interface Observed extends ObservedProgram {
  deny: Record<string, "deny">;
}

function placementOf(inputs: XdpFirewallInputs): XdpPlacement {
  return { iface: inputs.interface, mode: inputs.mode, chainPriority: inputs.chainPriority };
}

/**
 * The loaded program, its attachment and counters, or undefined when the firewall's
 * pins are gone. It counts as attached only where `placement` wants it: alone, or in
 * its chain slot with the dispatcher on the hook.
 */
async function observeProgram(session: SshSession, layout: PinLayout, placement: XdpPlacement): Promise<ObservedProgram | undefined> {
  const state = await programState(session, placement.iface, layout, STATS_MAP, dispatcherDir(placement.iface));
  if (!state.program) return undefined;
  const pass = sumCounters(state.stats[0]?.values ?? []);
  const drop = sumCounters(state.stats[1]?.values ?? []);
  return {
    programId: state.program.id,
    programTag: state.program.tag,
    attachment: placedAttachment(hookPosition(state.xdp, state.chain, [state.program.id]), placement),
    counters: { passPackets: pass.packets, passBytes: pass.bytes, dropPackets: drop.packets, dropBytes: drop.bytes },
    mapMemoryBytes: await mapMemoryBytes(session, layout),
  };
}

// One JSON object per pinned map; bytes_memlock is the kernel's own account of the
// map's memory (its real usage, for maps that allocate on demand, since Linux 6.4).
const MAP_MEMORY_SCRIPT = `for pin in "$1"/*; do [ -e "$pin" ] && bpftool -j map show pinned "$pin" && echo; done; exit 0`;

/** What the firewall's maps cost the host's kernel, summed over its pinned maps. */
async function mapMemoryBytes(session: SshSession, layout: PinLayout): Promise<number> {
  const { stdout } = await session.runScript(MAP_MEMORY_SCRIPT, [layout.maps]);
  let total = 0;
  for (const line of stdout.split("\n")) {
    if (!line.trim()) continue;
    const info = hostJson(mapShow, line, { host: session.label, command: `bpftool -j map show pinned ${layout.maps}/*` });
    total += info.bytes_memlock ?? 0;
  }
  return total;
}

/** The deny entries really in the host's maps. */
async function observeEntries(session: SshSession, layout: PinLayout): Promise<Record<string, "deny">> {
  const dumps = await dumpMaps(session, DENY_MAPS.map((m) => `${layout.maps}/${m}`));
  const entries: string[] = [];
  for (const map of DENY_MAPS) {
    for (const entry of dumps.get(`${layout.maps}/${map}`) ?? []) entries.push(decodeDenyEntry(map, entry.key));
  }
  return sortedRecord(entries, "deny" as const);
}

/**
 * Writes the plan's entries. A batch that fails half way (bpftool stops at the first
 * failing line: a full map, a cut session) would leave the host with entries the
 * stack does not record, and the next `up` would call it unchanged. So the host is
 * read back and, for an existing firewall (`before`), put back to what it had
 * (deletions first, so re-adding never runs into the same limit); a new one is
 * removed whole by the caller. The error names the map the batch stopped at, and
 * says "full" when the kernel said so.
 */
async function writeEntries(session: SshSession, layout: PinLayout, plan: DenyPlan, before: readonly string[] | undefined, desired: readonly string[]): Promise<void> {
  const mapPin = (map: string) => `${layout.maps}/${map}`;
  try {
    await applyMapOperations(session, denyOperations(plan, mapPin));
    return;
  } catch (err) {
    const now = await observeEntries(session, layout).catch(() => undefined);
    if (!now) throw err;
    const present = new Set(Object.keys(now));
    const steps = [...plan.add.map((entry) => ({ entry, applied: present.has(entry) })), ...plan.remove.map((entry) => ({ entry, applied: !present.has(entry) }))];
    const stoppedAt = steps.findIndex((s) => !s.applied);
    const map = stoppedAt >= 0 ? encodeDenyEntry(steps[stoppedAt]!.entry).map : undefined;
    let outcome = "it is removed again; nothing was recorded as applied.";
    if (before) {
      const back = planDeny(before, present);
      try {
        // Index words back from the new list's values to the previous list's (every word
        // the failed batch may have written), then the records: deletions first, so
        // re-adding never runs into the same limit.
        const undo = denyOperations({ add: back.add, remove: back.remove, desired: [...before], observed: [...desired] }, mapPin);
        const isRecordAdd = (op: MapOperation) => op.op === "update" && DENY_MAPS.some((m) => op.map === mapPin(m));
        await applyMapOperations(session, [...undo.filter((op) => !isRecordAdd(op)), ...undo.filter(isRecordAdd)]);
        outcome = `the entries written before the failure were taken out again: the host has its previous ${before.length} entries; nothing was recorded as applied.`;
      } catch {
        outcome = "putting the previous entries back failed too: the host's entries differ from the stack's until the next `pulumi up --refresh`.";
      }
    }
    const stderr = err instanceof RemoteCommandError ? (err.result?.stderr ?? "") : String(err);
    if (map && /No space left on device|Argument list too long/.test(stderr)) {
      const info = await session.run(["bpftool", "-j", "map", "show", "pinned", mapPin(map)], { allowFailure: true });
      const capacity = hostJson(mapShow, info.stdout || "{}", { host: session.label, command: `bpftool -j map show pinned ${mapPin(map)}` }).max_entries;
      const needed = desired.filter((entry) => encodeDenyEntry(entry).map === map).length;
      throw new HostPreconditionError(
        `${session.label}: writing the deny entries failed: map ${map} is full (it holds at most ${capacity ?? "?"} entries; the deny list needs ${needed} there, ${stoppedAt} of ${steps.length} writes went through); ${outcome} Split the list or use wider prefixes.`,
      );
    }
    throw new Error(`${(err as Error).message}\n  the batch stopped${map ? ` at map ${map}` : ""} after ${Math.max(stoppedAt, 0)} of ${steps.length} writes; ${outcome}`);
  }
}

/** Everything `read` reports, or undefined when the firewall is gone from the host. */
async function observe(session: SshSession, layout: PinLayout, placement: XdpPlacement): Promise<Observed | undefined> {
  const program = await observeProgram(session, layout, placement);
  return program && { ...program, deny: await observeEntries(session, layout) };
}

function outputsOf(inputs: XdpFirewallInputs, observed: Observed, objectSha256: string): XdpFirewallOutputs {
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
  };
}

/** Refuses deny entries that would drop this provider's own SSH session. */
async function refuseManagementDeny(session: SshSession, inputs: XdpFirewallInputs): Promise<void> {
  if (inputs.allowManagementDeny || !inputs.attached) return;
  const peer = await session.managementPeer();
  if (!peer) return;
  let address;
  try {
    address = parsePrefix(peer.replace(/^::ffff:/, ""));
  } catch {
    return;
  }
  const covering = Object.keys(inputs.deny).filter((entry) => prefixContains(parsePrefix(entry), address));
  if (covering.length > 0) {
    throw new HostPreconditionError(
      `${session.label}: deny entr${covering.length === 1 ? "y" : "ies"} ${covering.join(", ")} would drop ${peer}, the address this provider's SSH session comes from, and lock the host out of management. ` +
        `Remove the entry, or set allowManagementDeny: true if another path manages this host. Nothing was changed.`,
    );
  }
}

/**
 * What the host runs if the revert timer fires: restore the entries, then put the
 * hook back as it was (see hookRevertShell). Every value is quoted.
 */
function revertScript(layout: PinLayout, hook: HookPlan, inverse: MapOperation[], change: HookChange): string {
  const batch = inverse.length > 0 ? `bpftool batch file - <<'BPFLEET_BATCH'\n${batchText(inverse)}BPFLEET_BATCH\n` : "";
  return batch + hook.revertShell(change);
}

/**
 * Brings the host to `inputs`. Used by create and update alike, so a half-finished
 * earlier run (pins left, program not attached) converges on the next `up`.
 */
async function converge(inputs: XdpFirewallInputs, previousSha?: string): Promise<XdpFirewallOutputs> {
  const { session, layout } = await connectResource(KIND, inputs);
  const object = packagedObject(OBJECT);
  const placement = placementOf(inputs);
  await preflight(session);
  await requireProgramType(session, "xdp");
  const survey = await surveyResource(session, inputs.interface, layout, object, dispatcherDir(inputs.interface));
  requireInterface(session, survey, inputs.interface);
  await refuseManagementDeny(session, inputs);
  const hook = new HookPlan(placement, inputs.attached, survey.xdp, survey.chain, layout, survey.program?.id);
  if (inputs.attached) claimHook(session.label, "firewall", placement, survey.xdp, survey.chain, hook.position);
  const hadPins = survey.program !== undefined;
  const ownIds = survey.program ? [survey.program.id] : [];
  // Pins of an object without the index (an upgrade from it): the load below creates
  // the index maps empty, and they are filled from the records before the new program
  // sees a packet. A missing index pin forces that load too.
  const pinnedMaps = hadPins ? await listPins(session, layout.maps) : [];
  const indexMissing = hadPins && !INDEX_MAPS.every((m) => pinnedMaps.includes(m));
  const needsLoad = !hadPins || previousSha !== object.sha256 || hook.rebinds || indexMissing;
  const mapPin = (map: string) => `${layout.maps}/${map}`;
  const observedBefore = Object.keys(hadPins ? await observeEntries(session, layout) : {});
  const plan = planDeny(Object.keys(inputs.deny), observedBefore);
  const attachesNew = inputs.attached && (needsLoad || !hook.inPlace);
  const changesTraffic = plan.add.length + plan.remove.length > 0 || attachesNew;
  const guarded = inputs.lockoutGuard && changesTraffic && survey.managementInterface === inputs.interface;
  const swapsProgram = needsLoad && hadPins;
  const change = hook.change(hadPins, needsLoad);

  let newProgram: string | undefined;
  let timer: RevertTimer | undefined;
  try {
    await hook.prepare(session, () => uploadObject(session, packagedObject(DISPATCHER_OBJECT)));
    if (needsLoad) newProgram = await loadProgram(session, layout, await uploadObject(session, object, survey.objectPresent), "xdp", hook.sharedChain);
    if (indexMissing) await applyMapOperations(session, indexFromScratch(plan.observed, mapPin));
    // A new firewall protects nothing yet: its maps are filled before it goes on the
    // hook, so a session that dies half way never leaves a half-built firewall live
    // (the cleanup below, or the next up, removes the unattached pins).
    if (!hadPins) await writeEntries(session, layout, plan, undefined, Object.keys(inputs.deny));
    if (guarded) {
      const inverse = hadPins ? denyOperations(invertPlan(plan), mapPin) : [];
      timer = await armRevert(session, revertScript(layout, hook, inverse, change), inputs.lockoutRevertSeconds);
    }
    // An existing firewall: the hook first, the entries after: an entry that cuts the
    // management session must not also cut the command that swaps the program (the
    // revert could not tell).
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
    await hook.release(session, ownIds);
    if (hadPins) await writeEntries(session, layout, plan, observedBefore, Object.keys(inputs.deny));
  } catch (err) {
    // Leave the host as it was: a fresh firewall that never attached is removed whole;
    // an existing one keeps its program (the staged one is dropped).
    await timer?.disarm().catch(() => undefined);
    // The same steps the revert timer would run: take off what we attached, drop the pins.
    if (!hadPins) await session.run(["sh", "-c", revertScript(layout, hook, [], "new")]).catch(() => undefined);
    else if (newProgram) await session.run(["rm", "-f", newProgram]).catch(() => undefined);
    throw err;
  }
  if (timer) {
    await proveManagementPath(session, timer, {
      inputs,
      subject: "the change",
      advice: "Check the deny entries against the addresses this host is managed from.",
    });
  }
  const cleanup = hook.cleanupCommands(ownIds);
  if (cleanup.length > 0) await session.run(cleanup);
  if (swapsProgram) await session.run(["rm", "-f", `${layout.program}_old`]);
  // Only once the change is proven: a reboot must never bring back what the host reverted.
  if (inputs.bootRestore) {
    // Records and index alike, from empty maps (the restore loads the object afresh).
    const mapOperations = denyOperations(planDeny(Object.keys(inputs.deny), []), mapPin);
    // A chain member comes back behind the interface's dispatcher, in its slot.
    const chain = inputs.chainPriority === undefined ? undefined : { slot: inputs.chainPriority, dispatcher: packagedObject(DISPATCHER_OBJECT) };
    const xdp = inputs.attached ? { interface: inputs.interface, mode: inputs.mode, chain } : undefined;
    await persistBootRestore(session, { kind: KIND, name: inputs.name, layout, object, mapOperations, xdp });
  } else await removeBootRestore(session, KIND, inputs.name);
  // bpftool batch stops at the first failed write, so after it succeeded the maps hold
  // exactly the desired entries: only the program side is read back.
  const program = await observeProgram(session, layout, placement);
  if (!program) throw new Error(`${session.label}: the firewall's pins vanished right after it was applied`);
  return outputsOf(inputs, { ...program, deny: inputs.deny }, object.sha256);
}

export const xdpFirewallKind: Kind<XdpFirewallInputs, XdpFirewallOutputs> = {
  kind: KIND,
  schema: xdpFirewallSchema,
  check: checkXdpFirewall,
  replaceOn: ["host", "interface", "name", "mode"],

  pendingChanges(olds) {
    const sha = packagedObject(OBJECT).sha256;
    return olds.objectSha256 === sha ? [] : [`BPF object ${olds.objectSha256?.slice(0, 12)} -> ${sha.slice(0, 12)}`];
  },

  async create(inputs) {
    return { id: resourceId(KIND, inputs), outs: await converge(inputs) };
  },

  async read(_id, olds) {
    const { session, layout } = await connectResource(KIND, olds);
    const observed = await observe(session, layout, placementOf(olds));
    if (!observed) return undefined;
    const outs = outputsOf(olds, observed, olds.objectSha256);
    const { objectSha256: _sha, programId: _id2, programTag: _tag, attachMode: _mode, counters: _c, mapMemoryBytes: _mem, ...inputs } = outs;
    return { outs, inputs };
  },

  async update(_id, olds, news) {
    return converge(news, olds.objectSha256);
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
};
