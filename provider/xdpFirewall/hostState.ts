/**
 * What an XdpFirewall has on its host, read back: the program, where it runs,
 * its counters and map memory, and the deny entries in its maps.
 */
import { dumpMaps } from "../remote/mapOperations";
import { listPins, type PinLayout } from "../remote/pins";
import { programStateStep } from "../remote/resourceSurvey";
import { commandStep, runSteps, scriptStep, type ShellStep, type StepQueue } from "../remote/shellSteps";
import type { XdpAttachment } from "../remote/xdpAttach";
import type { ExecResult, SshSession } from "../remote/ssh";
import { dispatcherDir, hookPosition, placedAttachment, type XdpPlacement } from "../remote/xdpHook";
import { sortedRecord } from "../validation";
import { sumCounters } from "../counters";
import { decodeDenyEntry, DENY_MAPS, STATS_MAP } from "./codec";
import { INDEX_MAPS } from "./index";
import type { XdpFirewallOutputs } from "./schema";
import { hostJson, mapShow } from "../remote/hostJson";

export interface ObservedProgram {
  programId: number;
  programTag: string;
  attachment: XdpAttachment | undefined;
  counters: XdpFirewallOutputs["counters"];
  mapMemoryBytes: number;
}

export interface Observed extends ObservedProgram {
  deny: Record<string, "deny">;
}


/**
 * The loaded program, its attachment and counters, or undefined when the firewall's
 * pins are gone. It counts as attached only where `placement` wants it: alone, or in
 * its chain slot with the dispatcher on the hook.
 */
export async function observeProgram(session: SshSession, layout: PinLayout, placement: XdpPlacement, queue?: StepQueue): Promise<ObservedProgram | undefined> {
  // One exec for both (and, with `queue`, for whatever waits there: a change's cleanup).
  const reading = programReadback(session, layout, placement);
  return reading.parse(queue ? await queue.run(reading.steps) : await runSteps(session, reading.steps));
}

/**
 * observeProgram as steps of a larger exec (an update that carries its read-back in
 * the exec of its change) and the parse of their results.
 */
export function programReadback(session: SshSession, layout: PinLayout, placement: XdpPlacement): { steps: ShellStep[]; parse(results: readonly (ExecResult | undefined)[]): ObservedProgram | undefined } {
  const reading = programStateStep(session, placement.iface, layout, STATS_MAP, dispatcherDir(placement.iface));
  const memory = scriptStep("map-memory", { maps: layout.maps });
  return {
    steps: [reading.step, memory],
    parse([stateResult, memoryResult]) {
      if (!stateResult || !memoryResult) throw new Error(`${session.label}: the firewall's read-back did not run`);
      const state = reading.parse(stateResult);
      if (!state.program) return undefined;
      const pass = sumCounters(state.stats[0]?.values ?? []);
      const drop = sumCounters(state.stats[1]?.values ?? []);
      return {
        programId: state.program.id,
        programTag: state.program.tag,
        attachment: placedAttachment(hookPosition(state.xdp, state.chain, [state.program.id]), placement),
        counters: { passPackets: pass.packets, passBytes: pass.bytes, dropPackets: drop.packets, dropBytes: drop.bytes },
        mapMemoryBytes: mapMemoryBytes(session, layout, memoryResult.stdout),
      };
    },
  };
}

/**
 * What the firewall's maps cost the host's kernel, summed over its pinned maps
 * (sh/map-memory.sh; bytes_memlock is the kernel's own account of a map's memory:
 * its real usage, for maps that allocate on demand, since Linux 6.4).
 */
function mapMemoryBytes(session: SshSession, layout: PinLayout, stdout: string): number {
  let total = 0;
  for (const line of stdout.split("\n")) {
    if (!line.trim()) continue;
    const info = hostJson(mapShow, line, { host: session.label, command: `bpftool -j map show pinned ${layout.maps}/*` });
    total += info.bytes_memlock ?? 0;
  }
  return total;
}

/** The deny entries really in the host's maps. */
export async function observeEntries(session: SshSession, layout: PinLayout): Promise<Record<string, "deny">> {
  const dumps = await dumpMaps(session, DENY_MAPS.map((m) => `${layout.maps}/${m}`));
  const entries: string[] = [];
  for (const map of DENY_MAPS) {
    for (const entry of dumps.get(`${layout.maps}/${map}`) ?? []) entries.push(decodeDenyEntry(map, entry.key));
  }
  return sortedRecord(entries, "deny" as const);
}

/** Everything `read` reports, or undefined when the firewall is gone from the host. */
export async function observe(session: SshSession, layout: PinLayout, placement: XdpPlacement): Promise<Observed | undefined> {
  const program = await observeProgram(session, layout, placement);
  return program && { ...program, deny: await observeEntries(session, layout) };
}

/** Whether a map of the index is not pinned (pins of an object from before the index). */
export async function missingIndex(session: SshSession, layout: PinLayout): Promise<boolean> {
  return lacksIndex(await listPins(session, layout.maps));
}

/** missingIndex as a step of a larger exec: the listing of the maps' pin directory. */
export function mapPinsStep(layout: PinLayout): ShellStep {
  return commandStep(["ls", "-1", layout.maps], { allowFailure: true });
}

/** missingIndex's answer from mapPinsStep's result. */
export function missingIndexIn(result: ExecResult): boolean {
  return lacksIndex(result.code === 0 ? result.stdout.split("\n").filter(Boolean) : []);
}

function lacksIndex(pinnedMaps: readonly string[]): boolean {
  return !INDEX_MAPS.every((m) => pinnedMaps.includes(m));
}
