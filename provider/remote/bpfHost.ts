/**
 * Typed BPF operations on a host, all through bpftool and iproute2 over one SSH
 * session: preflight, content-addressed object upload, load with pinned-map
 * reuse, XDP attach/replace/detach, batched map writes and JSON map dumps.
 * Nothing of ours runs on the host between deployments.
 */
import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import { preludeFunctions } from "./shellScript";
import { RemoteCommandError, type SshSession } from "./ssh";

export const PIN_ROOT = "/sys/fs/bpf/bpfleet";
export const STATE_DIR = "/var/lib/bpfleet";
export const OBJECT_DIR = `${STATE_DIR}/objects`;
/** Locks, revert guards and markers that last until the host reboots. */
export const RUN_DIR = "/run/bpfleet";

// root_dirs DIR...: makes each directory and refuses one that root alone cannot write;
// defined, with its reasons, in the shared prelude (sh/prelude.sh).
export const ROOT_DIRS_FUNCTION = preludeFunctions("root_dirs");

export class HostPreconditionError extends Error {}

export interface HostFacts {
  kernel: string;
  bpftool: string;
  programTypes: Record<string, boolean>;
  /** Helpers each program type may call, by type ("xdp", "sched_cls"). */
  helpers: Record<string, readonly string[]>;
}

const preflightFacts = new WeakMap<SshSession, Promise<HostFacts>>();

// Exit codes 3 and 4 carry the two failures a user must fix on the host.
const PREFLIGHT_SCRIPT = `
missing=""
for tool in bpftool ip tc; do command -v "$tool" >/dev/null 2>&1 || missing="$missing $tool"; done
if [ -n "$missing" ]; then echo "missing:$missing" >&2; exit 3; fi
if [ "$(stat -f -c %T /sys/fs/bpf 2>/dev/null)" != "bpf_fs" ]; then
  mount -t bpf bpf /sys/fs/bpf 2>&1 >&2 || { echo "bpffs is not mounted at /sys/fs/bpf and mounting it failed" >&2; exit 4; }
fi
echo "kernel=$(uname -r)"
echo "bpftool=$(bpftool version | head -n 1)"
echo "@@features"
bpftool -j feature probe kernel
`;

/** Checks tools, bpffs and kernel support once per session. */
export function preflight(session: SshSession): Promise<HostFacts> {
  let facts = preflightFacts.get(session);
  if (!facts) {
    facts = runPreflight(session);
    preflightFacts.set(session, facts);
    facts.catch(() => preflightFacts.delete(session));
  }
  return facts;
}

async function runPreflight(session: SshSession): Promise<HostFacts> {
  const result = await session.runScript(PREFLIGHT_SCRIPT, [], { allowFailure: true });
  if (result.code === 3) {
    const missing = result.stderr.replace("missing:", "").trim();
    throw new HostPreconditionError(`${session.label}: required tools are missing on the host: ${missing}. Install bpftool and iproute2 (Debian/Ubuntu: apt-get install bpftool iproute2).`);
  }
  if (result.code !== 0) throw new RemoteCommandError(session.label, "preflight", result, "preflight failed");
  const [head = "", features = "{}"] = result.stdout.split("@@features\n");
  const field = (name: string) => head.match(new RegExp(`^${name}=(.*)$`, "m"))?.[1] ?? "unknown";
  const probed = JSON.parse(features) as { program_types?: Record<string, boolean>; helpers?: Record<string, string[]> };
  const programTypes: Record<string, boolean> = {};
  for (const [key, value] of Object.entries(probed.program_types ?? {})) {
    programTypes[key.replace(/^have_|_prog_type$/g, "")] = value;
  }
  const helpers: Record<string, readonly string[]> = {};
  for (const [key, list] of Object.entries(probed.helpers ?? {})) helpers[key.replace(/_available_helpers$/, "")] = list;
  return { kernel: field("kernel"), bpftool: field("bpftool"), programTypes, helpers };
}

export async function requireProgramType(session: SshSession, type: "xdp" | "sched_cls"): Promise<void> {
  const facts = await preflight(session);
  if (facts.programTypes[type] === false) {
    throw new HostPreconditionError(`${session.label}: kernel ${facts.kernel} does not support BPF program type ${type}`);
  }
}

/** What a resource needs to know about a host before it changes anything, read in one round trip. */
export interface ResourceSurvey {
  interfaces: string[];
  /** The XDP program on the interface, whoever attached it. */
  xdp: XdpAttachment | undefined;
  /** The resource's own pinned program, if its pins exist. */
  program: ProgramInfo | undefined;
  /** Whether the content-addressed object is already on the host. */
  objectPresent: boolean;
  /** The interface the host routes the management SSH session's replies through. */
  managementInterface: string | undefined;
  /** The interface's XDP chain, when asked for. */
  chain: ChainSurvey;
}

/** An interface's bpfleet XDP dispatcher and chain (see xdpHook.ts), as found on the host. */
export interface ChainSurvey {
  /** Program id of the interface's pinned dispatcher; undefined when there is none. */
  dispatcherId: number | undefined;
  /** Chain slot -> program id. */
  slots: Map<number, number>;
  /** Program id -> the bpfleet pin holding it ("xdp-firewall/edge"), for messages. */
  owners: Map<number, string>;
}

// $5: the dispatcher's pin dir; empty skips these sections.
const XDP_CHAIN_SECTIONS = `
if [ -n "$5" ]; then
  fallback=null
  echo "@@dispatcher"; json_or bpftool -j prog show pinned "$5/prog"
  fallback="[]"
  echo "@@chain"; json_or bpftool -j map dump pinned "$5/maps/xdp_chain"
  echo "@@owners"
  for pin in ${PIN_ROOT}/*/*/prog; do
    [ -e "$pin" ] || continue
    id=$(bpftool -j prog show pinned "$pin" 2>/dev/null | grep -o '"id":[0-9]*' | head -n 1 | cut -d: -f2)
    [ -n "$id" ] && echo "$id $pin"
  done
fi
`;

function parseChainSections(parts: Map<string, string>): ChainSurvey {
  const dispatcher = JSON.parse(parts.get("dispatcher") || "null") as { id: number } | null;
  const rows = JSON.parse(parts.get("chain") || "[]") as { formatted?: { key: number; value: number } }[];
  const slots = new Map<number, number>();
  for (const row of rows) if (row.formatted) slots.set(row.formatted.key, row.formatted.value);
  const owners = new Map<number, string>();
  for (const line of (parts.get("owners") ?? "").split("\n")) {
    const [id, pin] = line.trim().split(" ");
    if (id && pin) owners.set(Number(id), pin.slice(PIN_ROOT.length + 1).replace(/\/prog$/, ""));
  }
  return { dispatcherId: dispatcher?.id, slots, owners };
}

// Each section is framed by a marker line; a missing thing prints "null" (bpftool -j
// prints its error as JSON on stdout, so a failed command's output is dropped).
const JSON_OR_NULL = `json_or() { out=$("$@" 2>/dev/null) && printf '%s\\n' "$out" || echo "$fallback"; }`;

const SURVEY_SCRIPT = `
${JSON_OR_NULL}
fallback=null
echo "@@links"; ip -j link show
echo "@@net"; json_or bpftool -j net show dev "$1"
echo "@@prog"; json_or bpftool -j prog show pinned "$2"
echo "@@object"; if [ -f "$3" ]; then echo true; else echo false; fi
echo "@@route"; if [ -n "$4" ]; then json_or ip -j route get "$4"; else echo null; fi
${XDP_CHAIN_SECTIONS}
`;

/** Splits the output of a script that frames each part with an "@@name" line. */
export function sections(stdout: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const part of stdout.split(/^@@/m).slice(1)) {
    const newline = part.indexOf("\n");
    out.set(part.slice(0, newline).trim(), part.slice(newline + 1).trim());
  }
  return out;
}

/**
 * With `dispatcherDir` (XDP resources), the survey also reads the interface's
 * bpfleet dispatcher and chain and who owns which bpfleet program.
 */
export async function surveyResource(session: SshSession, iface: string, layout: PinLayout, object: LocalObject, dispatcherDir = ""): Promise<ResourceSurvey> {
  const peer = (await session.managementPeer()) ?? "";
  const result = await session.runScript(SURVEY_SCRIPT, [iface, layout.program, objectRemotePath(object), peer, dispatcherDir]);
  const parts = sections(result.stdout);
  const links = JSON.parse(parts.get("links") || "[]") as { ifname: string }[];
  const net = JSON.parse(parts.get("net") || "null") as { xdp?: { mode: string; id: number }[] }[] | null;
  const xdp = net?.[0]?.xdp?.[0];
  const prog = JSON.parse(parts.get("prog") || "null") as ProgramInfo | null;
  return {
    interfaces: links.map((l) => l.ifname),
    xdp: xdp ? { mode: xdp.mode, programId: xdp.id } : undefined,
    program: prog ? { id: prog.id, tag: prog.tag, name: prog.name } : undefined,
    objectPresent: parts.get("object") === "true",
    managementInterface: (JSON.parse(parts.get("route") || "null") as { dev?: string }[] | null)?.[0]?.dev,
    chain: parseChainSections(parts),
  };
}

export interface ProgramState {
  program: ProgramInfo | undefined;
  /** The XDP program on the interface, whoever attached it. */
  xdp: XdpAttachment | undefined;
  /** Entries of the resource's counters map. */
  stats: MapEntry[];
  /** The interface's XDP chain, when asked for. */
  chain: ChainSurvey;
}

const PROGRAM_STATE_SCRIPT = `
${JSON_OR_NULL}
fallback=null
echo "@@prog"; json_or bpftool -j prog show pinned "$2"
echo "@@net"; json_or bpftool -j net show dev "$1"
fallback="[]"
echo "@@stats"; json_or bpftool -j map dump pinned "$3"
${XDP_CHAIN_SECTIONS.replaceAll("$5", "$4")}
`;

/** A resource's program, the interface's XDP attachment and the resource's counters, in one round trip. */
/** With `dispatcherDir` (XDP resources), also reads the interface's XDP chain. */
export async function programState(session: SshSession, iface: string, layout: PinLayout, statsMap: string, dispatcherDir = ""): Promise<ProgramState> {
  const result = await session.runScript(PROGRAM_STATE_SCRIPT, [iface, layout.program, `${layout.maps}/${statsMap}`, dispatcherDir]);
  const parts = sections(result.stdout);
  const prog = JSON.parse(parts.get("prog") || "null") as ProgramInfo | null;
  const net = JSON.parse(parts.get("net") || "null") as { xdp?: { mode: string; id: number }[] }[] | null;
  const xdp = net?.[0]?.xdp?.[0];
  return {
    program: prog ? { id: prog.id, tag: prog.tag, name: prog.name } : undefined,
    xdp: xdp ? { mode: xdp.mode, programId: xdp.id } : undefined,
    stats: parseMapDump(parts.get("stats") || "[]"),
    chain: parseChainSections(parts),
  };
}

/** Fails with the host's interface list when `name` does not exist there. */
export function requireInterface(session: SshSession, survey: ResourceSurvey, name: string): void {
  if (!survey.interfaces.includes(name)) {
    throw new HostPreconditionError(`${session.label}: interface "${name}" does not exist on the host (it has: ${survey.interfaces.join(", ")})`);
  }
}

export interface LocalObject {
  path: string;
  bytes: Buffer;
  sha256: string;
}

export function localObject(path: string): LocalObject {
  const bytes = readFileSync(path);
  return { path, bytes, sha256: createHash("sha256").update(bytes).digest("hex") };
}

// The upload is checked against the digest on the host before it is renamed into place.
// A failed write (a full disk) or a cut session must not leave the partial file behind.
const UPLOAD_SCRIPT = `${ROOT_DIRS_FUNCTION}
set -e
root_dirs "\${1%/*}" "$1"
tmp="$2.upload.$$"
trap 'rm -f "$tmp"' EXIT
trap 'exit 1' HUP INT TERM PIPE
cat > "$tmp"
echo "$3  $tmp" | sha256sum -c --status || { rm -f "$tmp"; echo "checksum mismatch after upload" >&2; exit 1; }
mv "$tmp" "$2"
`;

export function objectRemotePath(object: LocalObject): string {
  return `${OBJECT_DIR}/${object.sha256}.bpf.o`;
}

/**
 * Uploads an object to its content-addressed path unless it is there already
 * (as a survey found, or as a test on the host says); returns the remote path.
 */
export async function uploadObject(session: SshSession, object: LocalObject, alreadyPresent?: boolean): Promise<string> {
  const remotePath = objectRemotePath(object);
  const present = alreadyPresent ?? (await session.run(["test", "-f", remotePath], { allowFailure: true })).code === 0;
  if (!present) await session.runScript(UPLOAD_SCRIPT, [OBJECT_DIR, remotePath, object.sha256], { stdin: object.bytes });
  return remotePath;
}

export interface PinLayout {
  dir: string;
  program: string;
  maps: string;
}

export function pinLayout(kind: string, name: string): PinLayout {
  const dir = `${PIN_ROOT}/${kind}/${name}`;
  return { dir, program: `${dir}/prog`, maps: `${dir}/maps` };
}

export interface ProgramInfo {
  id: number;
  tag: string;
  name: string;
}

export async function pinnedProgram(session: SshSession, pin: string): Promise<ProgramInfo | undefined> {
  const result = await session.run(["bpftool", "-j", "prog", "show", "pinned", pin], { allowFailure: true });
  if (result.code !== 0) return undefined;
  const info = JSON.parse(result.stdout) as { id: number; tag: string; name: string };
  return { id: info.id, tag: info.tag, name: info.name };
}

// Existing map pins are reused (flow state and entries survive an upgrade); maps the
// object adds are pinned beside them. The new program is pinned as prog_new (`load`),
// or every program as progs_new/<function> (`loadall`: programs sharing their maps),
// so the caller can swap hooks before they replace prog(s). $1 object, $2 pin dir,
// $3 type, $4 load|loadall, $5 (optional) the interface's shared xdp_chain pin, used
// instead of a private one and never pinned into the resource's own maps.
// A failing load names its command line on stderr, so the error says which it was.
const LOAD_SCRIPT = `${ROOT_DIRS_FUNCTION}
set -e
maps="$2/maps"; staged="$2/maps_staged"; chain="\${5:-}"
case "$1" in ${OBJECT_DIR}/*) root_dirs ${STATE_DIR} ${OBJECT_DIR} ;; esac
case "$4" in load) new="$2/prog_new" ;; loadall) new="$2/progs_new" ;; *) echo "bad load verb $4" >&2; exit 2 ;; esac
mkdir -p "$maps"
rm -rf "$staged" "$new"
set -- bpftool prog "$4" "$1" "$new" type "$3"
for pin in "$maps"/*; do
  [ -e "$pin" ] || continue
  name=$(basename "$pin")
  if [ -n "$chain" ] && [ "$name" = xdp_chain ]; then continue; fi
  set -- "$@" map name "$name" pinned "$pin"
done
if [ -n "$chain" ]; then set -- "$@" map name xdp_chain pinned "$chain"; fi
"$@" pinmaps "$staged" || { echo "failed: $*" >&2; exit 1; }
if [ -n "$chain" ]; then rm -f "$staged/xdp_chain"; fi
for pin in "$staged"/*; do
  [ -e "$pin" ] || continue
  name=$(basename "$pin")
  if [ -e "$maps/$name" ]; then rm -f "$pin"; else mv "$pin" "$maps/$name"; fi
done
rmdir "$staged"
`;

// bpftool's name for each program type. TC is "classifier", never "tc": bpftool
// before libbpf 0.6 (Debian 11's 5.10) knows only "classifier", every later one both.
const BPFTOOL_TYPE: Record<"xdp" | "tc", string> = { xdp: "xdp", tc: "classifier" };

/**
 * Loads `objectPath` as `<dir>/prog_new`, reusing every map already pinned under
 * `<dir>/maps` and pinning any others there; with `sharedChain`, the program's
 * xdp_chain is that pin (see xdpHook.ts). Returns the new program's pin path.
 */
export async function loadProgram(session: SshSession, layout: PinLayout, objectPath: string, type: "xdp" | "tc", sharedChain?: string): Promise<string> {
  await session.runScript(LOAD_SCRIPT, [objectPath, layout.dir, BPFTOOL_TYPE[type], "load", ...(sharedChain ? [sharedChain] : [])]);
  return `${layout.program}_new`;
}

/**
 * As loadProgram, for an object whose programs share its maps (e.g. TC ingress and
 * egress): returns the directory holding the new programs, one pin per program,
 * named after its function.
 */
export async function loadAllPrograms(session: SshSession, layout: PinLayout, objectPath: string, type: "xdp" | "tc"): Promise<string> {
  await session.runScript(LOAD_SCRIPT, [objectPath, layout.dir, BPFTOOL_TYPE[type], "loadall"]);
  return `${layout.dir}/progs_new`;
}

export async function listPins(session: SshSession, dir: string): Promise<string[]> {
  const result = await session.run(["ls", "-1", dir], { allowFailure: true });
  if (result.code !== 0) return [];
  return result.stdout.split("\n").filter(Boolean);
}

export async function pathExists(session: SshSession, path: string): Promise<boolean> {
  return (await session.run(["test", "-e", path], { allowFailure: true })).code === 0;
}

export type XdpMode = "native" | "generic" | "auto";

export interface XdpAttachment {
  /** As bpftool reports it: "driver", "generic", "offload" (or "multi"). */
  mode: string;
  programId: number;
}

export async function xdpAttachment(session: SshSession, iface: string): Promise<XdpAttachment | undefined> {
  const result = await session.run(["bpftool", "-j", "net", "show", "dev", iface]);
  const parsed = JSON.parse(result.stdout) as { xdp?: { mode: string; id: number }[] }[];
  const xdp = parsed[0]?.xdp?.[0];
  return xdp ? { mode: xdp.mode, programId: xdp.id } : undefined;
}

const ATTACH_TYPE: Record<XdpMode, string> = { native: "xdpdrv", generic: "xdpgeneric", auto: "xdp" };
const ATTACH_TYPE_OF_REPORTED_MODE: Record<string, string> = { driver: "xdpdrv", generic: "xdpgeneric", offload: "xdpoffload" };

/**
 * Attaches the pinned program to `iface`. With `replacing`, the program already
 * there is swapped in one netlink call, in the mode it is attached in, so packets
 * never pass unfiltered.
 */
export function attachXdpCommand(iface: string, programPin: string, mode: XdpMode, replacing?: XdpAttachment): string[] {
  const type = replacing ? (ATTACH_TYPE_OF_REPORTED_MODE[replacing.mode] ?? ATTACH_TYPE[mode]) : ATTACH_TYPE[mode];
  return ["bpftool", "net", "attach", type, "pinned", programPin, "dev", iface, ...(replacing ? ["overwrite"] : [])];
}

export async function detachXdp(session: SshSession, iface: string, attachment: XdpAttachment): Promise<void> {
  const type = ATTACH_TYPE_OF_REPORTED_MODE[attachment.mode] ?? "xdp";
  await session.run(["bpftool", "net", "detach", type, "dev", iface]);
}

export type MapOperation =
  | { op: "update"; map: string; key: Uint8Array; value: Uint8Array }
  | { op: "delete"; map: string; key: Uint8Array };

function hexBytes(bytes: Uint8Array): string {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join(" ");
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
  for (const o of operations) assertPinPath(o.map);
  await session.run(["bpftool", "batch", "file", "-"], { stdin: batchText(operations) });
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

export function parseMapDump(json: string): MapEntry[] {
  const rows = JSON.parse(json) as { key: string[]; value?: string[]; values?: { cpu: number; value: string[] }[] }[];
  return rows.map((row) => ({
    key: parseHexArray(row.key),
    values: row.values ? row.values.map((v) => parseHexArray(v.value)) : [parseHexArray(row.value ?? [])],
  }));
}

// One round trip for every map a resource reads: each dump is framed by a marker line.
const DUMP_MAPS_SCRIPT = `
for pin in "$@"; do
  echo "@@map $pin"
  bpftool -j map dump pinned "$pin" || echo "@@missing"
  echo
done
`;

/** Dumps several pinned maps at once; a missing map yields undefined. */
export async function dumpMaps(session: SshSession, pins: readonly string[]): Promise<Map<string, MapEntry[] | undefined>> {
  const result = await session.runScript(DUMP_MAPS_SCRIPT, pins);
  const dumps = new Map<string, MapEntry[] | undefined>();
  for (const section of result.stdout.split("@@map ").slice(1)) {
    const newline = section.indexOf("\n");
    const pin = section.slice(0, newline);
    const body = section.slice(newline + 1).trim();
    dumps.set(pin, body.includes("@@missing") || !body ? undefined : parseMapDump(body));
  }
  return dumps;
}

// When the last bpfleet resource leaves a host, the pin root and the object cache
// go too, so that a destroyed stack leaves the host as it found it; but not while
// boot-restore files (bootRestore.ts) still name objects of that cache.
const REMOVE_PINS_SCRIPT = `
rm -rf -- "$1"
rmdir -- "$2" 2>/dev/null
if rmdir -- "$3" 2>/dev/null && [ -z "$(ls -A -- "$4/boot" 2>/dev/null)" ]; then rm -rf -- "$4"; fi
exit 0
`;

/** Removes a resource's pin directory (programs and maps); absent is fine. */
export async function removePins(session: SshSession, layout: PinLayout): Promise<void> {
  const kindDir = layout.dir.slice(0, layout.dir.lastIndexOf("/"));
  await session.runScript(REMOVE_PINS_SCRIPT, [layout.dir, kindDir, PIN_ROOT, OBJECT_DIR.replace(/\/objects$/, "")]);
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
  let rows: { output: { value?: string[]; values?: { value: string[] }[] } | null }[];
  try {
    rows = JSON.parse(result.stdout || "[]");
  } catch {
    throw new RemoteCommandError(session.label, command, result, "bpftool printed something other than JSON");
  }
  const failed = rows.findIndex((row) => !row.output);
  if (failed >= 0 || rows.length < lookups.length) {
    const at = failed >= 0 ? failed : rows.length;
    throw new RemoteCommandError(session.label, command, result, `lookup ${at + 1} of ${lookups.length} failed (${lookups[at]?.map} key ${hexBytes(lookups[at]?.key ?? new Uint8Array())})`);
  }
  return rows.map((row) => (row.output!.values ? row.output!.values.map((v) => parseHexArray(v.value)) : [parseHexArray(row.output!.value ?? [])]));
}

/**
 * Fails unless programs of `type` may call every helper in `helpers` on the host's
 * kernel (from the preflight probe), naming the missing ones and `why` they are needed.
 */
export async function requireHelpers(session: SshSession, type: "xdp" | "sched_cls", helpers: readonly string[], why: string): Promise<void> {
  const { kernel, helpers: available } = await preflight(session);
  const missing = helpers.filter((h) => !(available[type] ?? []).includes(h));
  if (missing.length > 0) {
    throw new HostPreconditionError(`${session.label}: kernel ${kernel} does not let ${type} programs call ${missing.join(", ")} (${why}). Nothing was changed.`);
  }
}
