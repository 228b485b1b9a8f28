/**
 * What a TrafficMirror has on its host, read back: its program, the hooks that
 * run it, the config, filters and counters in its maps, and where its copies go.
 */
import { dumpMaps } from "../remote/mapOperations";
import type { PinLayout } from "../remote/pins";
import { pinnedProgram } from "../remote/programLoad";
import { RemoteCommandError, type SshSession } from "../remote/ssh";
import { findFilter, TC_DIRECTIONS, tcFilters, type TcDirection } from "../remote/tc";
import { slotOf, type TcPlacement } from "../remote/tcHook";
import { CLASSIFIER_MAPS, classifierDrift, classifierOf, CONFIG_MAP, countersOf, decodeConfig, EMPTY_CONFIG, FILTERS_MAP, liveFilterList, STATS_MAP, type MirrorConfig } from "./codec";
import type { ObservedMirror } from "./plan";
import { filterRecord, type Direction, type MirrorFilter, type MirrorTarget, type TrafficMirrorCounters } from "./schema";
import { listLinks, tunnelAlias, tunnelSpecOf } from "./tunnel";

export const KIND = "traffic-mirror";

function directionOf(attached: readonly TcDirection[]): Direction {
  if (attached.length === 2) return "both";
  return attached[0] ?? "none";
}

export interface MapsState extends ObservedMirror {
  /** The config entry as the map holds it, for the revert to write back. */
  configBytes: Uint8Array | undefined;
  stats: { values: Uint8Array[] }[];
}

export async function readMaps(session: SshSession, layout: PinLayout): Promise<MapsState> {
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

export interface Observed {
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

/**
 * How directly a failure of one of several commands sent together (one round trip)
 * says what went wrong: the command whose own session dropped the connection (-1),
 * a command that failed, or was running when the connection
 * dropped (0), before one that was lost before it started (1), before one sent once
 * the connection was already gone (2). When the connection drops, every command in
 * flight fails with it; the report must name the step where it happened, not
 * whichever failure settled first.
 */
function directness(err: unknown): number {
  if (!(err instanceof RemoteCommandError)) return 2;
  // The command whose own session dropped the connection (a fault injected after it
  // ran): the others in flight then lost their answers because of it.
  if (err.droppedConnection) return -1;
  return err.connectionLost && /before the command started/.test(err.explanation) ? 1 : 0;
}

/** Like Promise.all, but when several fail, the most direct failure (then the first in the order given) is thrown. */
async function allOrCause<T extends readonly unknown[]>(promises: { [K in keyof T]: Promise<T[K]> }): Promise<T> {
  const settled = await Promise.allSettled(promises);
  const failed = settled.filter((s): s is PromiseRejectedResult => s.status === "rejected").map((s) => s.reason as unknown);
  if (failed.length > 0) throw failed.reduce((best, err) => (directness(err) < directness(best) ? err : best));
  return settled.map((s) => (s as PromiseFulfilledResult<unknown>).value) as unknown as T;
}

/** What the host really has for this mirror, or undefined when its program pin is gone. */
export async function observe(session: SshSession, layout: PinLayout, placement: TcPlacement): Promise<Observed | undefined> {
  const program = await pinnedProgram(session, layout.program);
  if (!program) return undefined;
  const [maps, hooks, links] = await allOrCause([
    readMaps(session, layout),
    // A failed listing fails the read rather than reporting the mirror detached.
    tcFilters(session, placement.interface),
    listLinks(session),
  ] as const);
  const attached = TC_DIRECTIONS.filter((d) => findFilter(hooks, slotOf(KIND, placement, d))?.programId === program.id);
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
