/**
 * Loading a BPF object on a host with bpftool, reusing the resource's pinned
 * maps, and reading back a pinned program.
 */
import { OBJECT_DIR, ROOT_DIRS_FUNCTION, STATE_DIR } from "./hostDirs";
import { hostJson, progShow } from "./hostJson";
import type { PinLayout } from "./pins";
import type { SshSession } from "./ssh";

export interface ProgramInfo {
  id: number;
  tag: string;
  name: string;
}

export async function pinnedProgram(session: SshSession, pin: string): Promise<ProgramInfo | undefined> {
  const result = await session.run(["bpftool", "-j", "prog", "show", "pinned", pin], { allowFailure: true });
  if (result.code !== 0) return undefined;
  return hostJson(progShow, result.stdout, { host: session.label, command: `bpftool -j prog show pinned ${pin}` });
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
