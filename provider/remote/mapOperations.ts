/**
 * Pinned maps through bpftool: writes and lookups batched into one round trip
 * (`bpftool batch`), and JSON dumps of one map or several.
 */
import type { z } from "zod";
import { batchLookups, HostOutputError, hostJson, mapDump, type JsonSource } from "./hostJson";
import { runShellScript } from "./shellScript";
import { commandStep, runSteps, type ShellStep } from "./shellSteps";
import { RemoteCommandError, type SshSession } from "./ssh";

export type MapOperation =
  | { op: "update"; map: string; key: Uint8Array; value: Uint8Array }
  | { op: "delete"; map: string; key: Uint8Array };

const HEX = Array.from({ length: 256 }, (_, b) => b.toString(16).padStart(2, "0"));

/** "0a 00 00 01", from a table: a 100k-entry list is ~170k keys and values, 2.5× faster than formatting each byte. */
function hexBytes(bytes: Uint8Array): string {
  const parts = new Array<string>(bytes.length);
  for (let i = 0; i < bytes.length; i++) parts[i] = HEX[bytes[i]!]!;
  return parts.join(" ");
}

/** The bpftool batch text for `operations`, one command per line, in order. */
export function batchText(operations: readonly MapOperation[]): string {
  return operations
    .map((o) =>
      o.op === "update"
        ? `map update pinned ${o.map} key hex ${hexBytes(o.key)} value hex ${hexBytes(o.value)}\n`
        : `map delete pinned ${o.map} key hex ${hexBytes(o.key)}\n`,
    )
    .join("");
}

/** Applies map writes in one round trip; bpftool stops at the first failing line. */
export async function applyMapOperations(session: SshSession, operations: readonly MapOperation[]): Promise<void> {
  if (operations.length === 0) return;
  await runSteps(session, [mapOperationsStep(operations)]);
}

/** applyMapOperations as a step of a larger exec (shellSteps.ts). */
export function mapOperationsStep(operations: readonly MapOperation[]): ShellStep {
  for (const o of operations) assertPinPath(o.map);
  return commandStep(["bpftool", "batch", "file", "-"], { stdin: batchText(operations) });
}

/**
 * Where the pins of a batch text built for no host in particular are: a text whose
 * operations name `${PIN_DIR_PLACEHOLDER}/<map>` serves every host with the same writes
 * (the hosts of a fleet given one list), each through batchStepUnder with its own
 * directory. Nothing on a host is ever pinned there (bpffs names do not start with a
 * dot in anything we pin), and the texts are hex after the path, so the path is the
 * only thing in a line that can match it.
 */
export const PIN_DIR_PLACEHOLDER = "/sys/fs/bpf/.bpfleet-pin-dir";

/** mapOperationsStep for a text built with pins under PIN_DIR_PLACEHOLDER, its pins moved under `dir`. */
export function batchStepUnder(text: string, dir: string): ShellStep {
  assertPinPath(dir);
  return commandStep(["bpftool", "batch", "file", "-"], { stdin: text.replaceAll(`pinned ${PIN_DIR_PLACEHOLDER}/`, `pinned ${dir}/`) });
}

// Pin paths end up unquoted inside bpftool batch lines, so they must never carry spaces or quotes.
function assertPinPath(path: string): void {
  if (!/^\/sys\/fs\/bpf\/[A-Za-z0-9_./-]+$/.test(path)) throw new Error(`unsafe pin path for a bpftool batch: ${JSON.stringify(path)}`);
}

export interface MapEntry {
  key: Uint8Array;
  /** One value, or one per CPU for per-CPU maps. */
  values: Uint8Array[];
}

function parseHexArray(bytes: string[]): Uint8Array {
  return Uint8Array.from(bytes.map((b) => parseInt(b, 16)));
}

/** Parses `bpftool -j map dump`; `source` names the host and command in the error when the output is not a dump. */
export function parseMapDump(json: string, source: JsonSource = { command: "bpftool -j map dump" }): MapEntry[] {
  const rows = hostJson(mapDump, json, source);
  return rows.map((row) => ({
    key: parseHexArray(row.key),
    values: row.values ? row.values.map((v) => parseHexArray(v.value)) : [parseHexArray(row.value ?? [])],
  }));
}

/** Dumps several pinned maps at once; a missing map yields undefined. */
export async function dumpMaps(session: SshSession, pins: readonly string[]): Promise<Map<string, MapEntry[] | undefined>> {
  const result = await runShellScript(session, "dump-maps", pins);
  const dumps = new Map<string, MapEntry[] | undefined>();
  for (const section of result.stdout.split("@@map ").slice(1)) {
    const newline = section.indexOf("\n");
    const pin = section.slice(0, newline);
    const body = section.slice(newline + 1).trim();
    dumps.set(pin, body.includes("@@missing") || !body ? undefined : parseMapDump(body, { host: session.label, command: `bpftool -j map dump pinned ${pin}` }));
  }
  return dumps;
}

/** One key to look up in a pinned map. */
export interface MapLookup {
  map: string;
  key: Uint8Array;
}

/**
 * Looks keys up in one round trip (`bpftool -j batch`), in order; returns each
 * entry's value, or one value per CPU for per-CPU maps. bpftool ends the batch
 * at the first key that is not in the map, so this is for keys that exist
 * (array maps): a missing one fails the call. Costs the host ~30 µs per key.
 */
export async function lookupMapEntries(session: SshSession, lookups: readonly MapLookup[]): Promise<Uint8Array[][]> {
  if (lookups.length === 0) return [];
  for (const l of lookups) assertPinPath(l.map);
  const text = lookups.map((l) => `map lookup pinned ${l.map} key hex ${hexBytes(l.key)}\n`).join("");
  const command = "bpftool -j batch file -";
  const result = await session.run(["bpftool", "-j", "batch", "file", "-"], { stdin: text, allowFailure: true });
  let rows: z.output<typeof batchLookups>;
  try {
    rows = hostJson(batchLookups, result.stdout || "[]", { host: session.label, command });
  } catch (err) {
    // Keep bpftool's stderr in the error: it says why the batch printed no JSON.
    if (err instanceof HostOutputError) throw new RemoteCommandError(session.label, command, result, `bpftool printed ${err.problem}`);
    throw err;
  }
  const failed = rows.findIndex((row) => !row.output);
  if (failed >= 0 || rows.length < lookups.length) {
    const at = failed >= 0 ? failed : rows.length;
    throw new RemoteCommandError(session.label, command, result, `lookup ${at + 1} of ${lookups.length} failed (${lookups[at]?.map} key ${hexBytes(lookups[at]?.key ?? new Uint8Array())})`);
  }
  return rows.map((row) => (row.output!.values ? row.output!.values.map((v) => parseHexArray(v.value)) : [parseHexArray(row.output!.value ?? [])]));
}
