/**
 * Typed BPF operations on a host, all through bpftool and iproute2 over one SSH
 * session: preflight, content-addressed object upload, load with pinned-map
 * reuse, XDP attach/replace/detach, batched map writes and JSON map dumps.
 * Nothing of ours runs on the host between deployments.
 */
import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import { RemoteCommandError, type SshSession } from "./ssh";

export const PIN_ROOT = "/sys/fs/bpf/bpfleet";
export const OBJECT_DIR = "/var/lib/bpfleet/objects";

export class HostPreconditionError extends Error {}

export interface HostFacts {
  kernel: string;
  bpftool: string;
  programTypes: Record<string, boolean>;
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
  const probed = JSON.parse(features) as { program_types?: Record<string, boolean> };
  const programTypes: Record<string, boolean> = {};
  for (const [key, value] of Object.entries(probed.program_types ?? {})) {
    programTypes[key.replace(/^have_|_prog_type$/g, "")] = value;
  }
  return { kernel: field("kernel"), bpftool: field("bpftool"), programTypes };
}

export async function requireProgramType(session: SshSession, type: "xdp" | "sched_cls"): Promise<void> {
  const facts = await preflight(session);
  if (facts.programTypes[type] === false) {
    throw new HostPreconditionError(`${session.label}: kernel ${facts.kernel} does not support BPF program type ${type}`);
  }
}

/** Fails with the host's interface list when `name` does not exist there. */
export async function requireInterface(session: SshSession, name: string): Promise<void> {
  const result = await session.run(["ip", "-j", "link", "show"]);
  const links = JSON.parse(result.stdout) as { ifname: string }[];
  if (!links.some((l) => l.ifname === name)) {
    throw new HostPreconditionError(`${session.label}: interface "${name}" does not exist on the host (it has: ${links.map((l) => l.ifname).join(", ")})`);
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
const UPLOAD_SCRIPT = `
set -e
mkdir -p "$1"
tmp="$2.upload.$$"
cat > "$tmp"
echo "$3  $tmp" | sha256sum -c --status || { rm -f "$tmp"; echo "checksum mismatch after upload" >&2; exit 1; }
mv "$tmp" "$2"
`;

/** Uploads an object to its content-addressed path unless it is already there; returns the remote path. */
export async function uploadObject(session: SshSession, object: LocalObject): Promise<string> {
  const remotePath = `${OBJECT_DIR}/${object.sha256}.bpf.o`;
  const present = await session.run(["test", "-f", remotePath], { allowFailure: true });
  if (present.code !== 0) {
    await session.runScript(UPLOAD_SCRIPT, [OBJECT_DIR, remotePath, object.sha256], { stdin: object.bytes });
  }
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
// object adds are pinned beside them. The new program is pinned as prog.new so the
// caller can swap the hook before it replaces prog.
const ADOPT_NEW_MAPS_SCRIPT = `
set -e
for staged in "$1"/*; do
  [ -e "$staged" ] || continue
  name=$(basename "$staged")
  if [ -e "$2/$name" ]; then rm -f "$staged"; else mv "$staged" "$2/$name"; fi
done
rmdir "$1"
`;

/**
 * Loads `objectPath` as `<dir>/prog.new`, reusing every map already pinned under
 * `<dir>/maps` and pinning any others there. Returns the new program's pin path.
 */
export async function loadProgram(session: SshSession, layout: PinLayout, objectPath: string, type: "xdp" | "tc"): Promise<string> {
  const existing = await listPins(session, layout.maps);
  const staged = `${layout.dir}/maps_staged`;
  const newPin = `${layout.program}_new`;
  const reuse = existing.flatMap((name) => ["map", "name", name, "pinned", `${layout.maps}/${name}`]);
  await session.run([
    ["mkdir", "-p", layout.maps],
    ["rm", "-rf", staged, newPin],
    ["bpftool", "prog", "load", objectPath, newPin, "type", type, ...reuse, "pinmaps", staged],
  ]);
  await session.runScript(ADOPT_NEW_MAPS_SCRIPT, [staged, layout.maps]);
  return newPin;
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
export async function attachXdp(session: SshSession, iface: string, programPin: string, mode: XdpMode, replacing?: XdpAttachment): Promise<void> {
  const type = replacing ? (ATTACH_TYPE_OF_REPORTED_MODE[replacing.mode] ?? ATTACH_TYPE[mode]) : ATTACH_TYPE[mode];
  await session.run(["bpftool", "net", "attach", type, "pinned", programPin, "dev", iface, ...(replacing ? ["overwrite"] : [])]);
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
// go too, so that a destroyed stack leaves the host as it found it.
const REMOVE_PINS_SCRIPT = `
rm -rf -- "$1"
rmdir -- "$2" 2>/dev/null
if rmdir -- "$3" 2>/dev/null; then rm -rf -- "$4"; fi
exit 0
`;

/** Removes a resource's pin directory (programs and maps); absent is fine. */
export async function removePins(session: SshSession, layout: PinLayout): Promise<void> {
  const kindDir = layout.dir.slice(0, layout.dir.lastIndexOf("/"));
  await session.runScript(REMOVE_PINS_SCRIPT, [layout.dir, kindDir, PIN_ROOT, OBJECT_DIR.replace(/\/objects$/, "")]);
}
