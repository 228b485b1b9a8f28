/**
 * What a resource needs to know about a host, read in one round trip: the
 * interfaces, the XDP attachment, the resource's pinned program, whether its
 * object is uploaded, the management route and the interface's XDP chain; and
 * programState, the same for a read (program, attachment, counters, chain).
 */
import { chainDump, hostJson, ipLinks, ipRouteGet, netShow, progId, progShow, xdpOfNetShow } from "./hostJson";
import { PIN_ROOT } from "./hostDirs";
import { parseMapDump, type MapEntry } from "./mapOperations";
import { objectRemotePath, type LocalObject } from "./objectUpload";
import { HostPreconditionError } from "./preflight";
import type { PinLayout } from "./pins";
import type { ProgramInfo } from "./programLoad";
import type { SshSession } from "./ssh";
import type { XdpAttachment } from "./xdpAttach";

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

function parseChainSections(parts: Map<string, string>, host: string, dispatcherDir: string): ChainSurvey {
  const dispatcher = hostJson(progId.nullable(), parts.get("dispatcher") || "null", { host, command: `bpftool -j prog show pinned ${dispatcherDir}/prog` });
  const rows = hostJson(chainDump, parts.get("chain") || "[]", { host, command: `bpftool -j map dump pinned ${dispatcherDir}/maps/xdp_chain` });
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
  const host = session.label;
  const links = hostJson(ipLinks, parts.get("links") || "[]", { host, command: "ip -j link show" });
  const net = hostJson(netShow.nullable(), parts.get("net") || "null", { host, command: `bpftool -j net show dev ${iface}` });
  const prog = hostJson(progShow.nullable(), parts.get("prog") || "null", { host, command: `bpftool -j prog show pinned ${layout.program}` });
  const route = hostJson(ipRouteGet.nullable(), parts.get("route") || "null", { host, command: `ip -j route get ${peer}` });
  return {
    interfaces: links.map((l) => l.ifname),
    xdp: xdpOfNetShow(net),
    program: prog ?? undefined,
    objectPresent: parts.get("object") === "true",
    managementInterface: route?.[0]?.dev,
    chain: parseChainSections(parts, host, dispatcherDir),
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
  const host = session.label;
  const prog = hostJson(progShow.nullable(), parts.get("prog") || "null", { host, command: `bpftool -j prog show pinned ${layout.program}` });
  const net = hostJson(netShow.nullable(), parts.get("net") || "null", { host, command: `bpftool -j net show dev ${iface}` });
  return {
    program: prog ?? undefined,
    xdp: xdpOfNetShow(net),
    stats: parseMapDump(parts.get("stats") || "[]", { host, command: `bpftool -j map dump pinned ${layout.maps}/${statsMap}` }),
    chain: parseChainSections(parts, host, dispatcherDir),
  };
}

/** Fails with the host's interface list when `name` does not exist there. */
export function requireInterface(session: SshSession, survey: ResourceSurvey, name: string): void {
  if (!survey.interfaces.includes(name)) {
    throw new HostPreconditionError(`${session.label}: interface "${name}" does not exist on the host (it has: ${survey.interfaces.join(", ")})`);
  }
}
