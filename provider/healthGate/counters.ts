/**
 * The counters a health gate can watch, per resource kind: which pinned map
 * holds them and how its entries decode. A kind is added here when its codec
 * exists; the gate refuses a counter it cannot read rather than guessing.
 */
import type { MapEntry } from "../remote/mapOperations";
import { sumCounters } from "../counters";
import { STATS_MAP as XDP_FIREWALL_STATS } from "../xdpFirewall/codec";

export interface CounterSource {
  /** Map name under the resource's maps/ pin directory. */
  map: string;
  /** Counter names this kind reports (as in the resource's `counters` output). */
  names: readonly string[];
  read(entries: readonly MapEntry[]): Record<string, number>;
}

export const COUNTER_SOURCES: Readonly<Record<string, CounterSource>> = {
  "xdp-firewall": {
    map: XDP_FIREWALL_STATS,
    names: ["passPackets", "passBytes", "dropPackets", "dropBytes"],
    read(entries) {
      // fw_stats is a per-CPU array: index 0 counts passed packets, 1 dropped ones.
      const pass = sumCounters(entries[0]?.values ?? []);
      const drop = sumCounters(entries[1]?.values ?? []);
      return { passPackets: pass.packets, passBytes: pass.bytes, dropPackets: drop.packets, dropBytes: drop.bytes };
    },
  },
};

/** Every counter name some kind knows, for check() (which cannot know the kind of each target yet). */
export const KNOWN_COUNTERS: readonly string[] = [...new Set(Object.values(COUNTER_SOURCES).flatMap((s) => s.names))];
