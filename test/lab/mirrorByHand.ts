/**
 * A filter slipped into a TrafficMirror's live set with bpftool, as someone on the host
 * would: the record in the next slot, the set's length in the config, and the set's
 * classifier head, so that the program really matches it. Only the head is rewritten:
 * a protocol-only filter (e.g. `{ protocol: "icmp" }`) changes no range bitmap.
 */
import { parseMapDump } from "../../provider/remote/mapOperations";
import { compileClassifier, CONFIG_MAP, decodeConfig, encodeConfig, encodeFilter, filterSlot, FILTERS_MAP, HEADS_MAP, liveFilterList } from "../../provider/trafficMirror/codec";
import { filterKey, type MirrorFilter } from "../../provider/trafficMirror/schema";
import type { Lab, LabHost } from "./lab";

const bytes = (b: Uint8Array) => Array.from(b, (x) => String(x));

/** Returns the live set's filters afterwards, as the program reads them. */
export async function slipFilterIn(lab: Lab, host: LabHost, pin: string, filter: MirrorFilter): Promise<MirrorFilter[]> {
  const dumpOf = async (map: string) => String((await lab.inHost(host, ["bpftool", "-j", "map", "dump", "pinned", `${pin}/maps/${map}`])).stdout);
  const dump = JSON.parse(await dumpOf(CONFIG_MAP)) as { value: string[] }[];
  const config = decodeConfig(Uint8Array.from(dump[0]!.value.map((b) => parseInt(b, 16))));
  const index = config.setLength[config.activeSet];
  await lab.inHost(host, ["bpftool", "map", "update", "pinned", `${pin}/maps/${FILTERS_MAP}`, "key", ...bytes(Uint8Array.of(filterSlot(config.activeSet, index), 0, 0, 0)), "value", ...bytes(encodeFilter(filter))]);
  const setLength: [number, number] = [...config.setLength];
  setLength[config.activeSet] = index + 1;
  await lab.inHost(host, ["bpftool", "map", "update", "pinned", `${pin}/maps/${CONFIG_MAP}`, "key", "0", "0", "0", "0", "value", ...bytes(encodeConfig({ ...config, setLength }))]);
  const records = parseMapDump(await dumpOf(FILTERS_MAP));
  const slots = new Map(records.map((e) => [new DataView(e.key.buffer, e.key.byteOffset).getUint32(0, true), e.values[0]!]));
  const live = liveFilterList({ ...config, setLength }, slots);
  await lab.inHost(host, ["bpftool", "map", "update", "pinned", `${pin}/maps/${HEADS_MAP}`, "key", ...bytes(Uint8Array.of(config.activeSet, 0, 0, 0)), "value", ...bytes(compileClassifier(live).head)]);
  return live;
}

/**
 * The filters a mirror's live set holds, as the program reads them (its config's active
 * half and length, then the records there), each as its text, sorted: what the host
 * applies, whatever the state or the applied record says.
 */
export async function liveFilters(lab: Lab, host: LabHost, pin: string): Promise<string[]> {
  const dumpOf = async (map: string) => String((await lab.inHost(host, ["bpftool", "-j", "map", "dump", "pinned", `${pin}/maps/${map}`])).stdout);
  const dump = JSON.parse(await dumpOf(CONFIG_MAP)) as { value: string[] }[];
  const config = decodeConfig(Uint8Array.from(dump[0]!.value.map((b) => parseInt(b, 16))));
  const records = parseMapDump(await dumpOf(FILTERS_MAP));
  const slots = new Map(records.map((e) => [new DataView(e.key.buffer, e.key.byteOffset).getUint32(0, true), e.values[0]!]));
  return liveFilterList(config, slots).map(filterKey).sort();
}
