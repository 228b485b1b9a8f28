/**
 * What a host has for one TcPolicy, read in one round trip: the interface (does
 * it exist, is it Ethernet), the qdisc on its TC hook and the filters of both
 * hooks, the policy's pinned programs, whether the BPF object is uploaded, the
 * route to the management peer, dumps of the maps asked for and, for read, the
 * number of live flows.
 */
import { parseMapDump, type MapEntry, type PinLayout, type ProgramInfo } from "../remote/bpfHost";
import type { SshSession } from "../remote/ssh";
import { parseTcFilters, type TcFilter } from "../remote/tc";
import { MAPS, PROGRAMS } from "./codec";
import { DIRECTIONS, type Direction } from "./schema";

export interface LinkFacts {
  ifname: string;
  ifindex: number;
  /** As `ip -j link` says: "ether", "loopback", "none" (tun, wireguard), ... */
  linkType: string;
}

export interface PolicyHostState {
  links: LinkFacts[];
  /** Kind of the qdisc in the slot clsact needs (ffff:fff1): "clsact", "ingress" or undefined. */
  hookQdisc: string | undefined;
  /** Every filter on both hooks of the interface, whoever added it. */
  filters: TcFilter[];
  /** The policy's pinned programs (absent when its pins are). */
  programs: Partial<Record<Direction, ProgramInfo>>;
  objectPresent: boolean;
  /** How the host reaches the management peer: the interface and its own source address. */
  managementRoute: { dev?: string; prefsrc?: string } | undefined;
  /** Dumps by map name; undefined when the map is not pinned. */
  maps: Map<string, MapEntry[] | undefined>;
  /** Entries in tcpol_flows, when counted. */
  liveFlows: number | undefined;
}

/** Where a policy keeps its programs: <dir>/progs/<function name>. */
export function programsDir(layout: PinLayout): string {
  return `${layout.dir}/progs`;
}

// A section per fact, framed by a marker line; a failing command prints the
// fallback (bpftool -j prints its errors as JSON on stdout, so its output is
// dropped). Flows are counted on the host: a full table is ~70 MB of JSON.
// $1 interface, $2 pin dir, $3 object path or "", $4 peer or "", $5 "count" or "", then map names.
const SURVEY_SCRIPT = `
iface=$1; dir=$2; object=$3; peer=$4; flows=$5; shift 5
json_or() { out=$("$@" 2>/dev/null) && printf '%s\\n' "$out" || echo "$fallback"; }
fallback="[]"
echo "@@links"; ip -j link show
echo "@@qdisc"; json_or tc -j qdisc show dev "$iface"
echo "@@filters ingress"; json_or tc -j filter show dev "$iface" ingress
echo "@@filters egress"; json_or tc -j filter show dev "$iface" egress
fallback=null
for prog in ${DIRECTIONS.map((d) => PROGRAMS[d]).join(" ")}; do echo "@@prog $prog"; json_or bpftool -j prog show pinned "$dir/progs/$prog"; done
echo "@@object"; if [ -n "$object" ] && [ -f "$object" ]; then echo true; else echo false; fi
echo "@@route"; if [ -n "$peer" ]; then json_or ip -j route get "$peer"; else echo null; fi
echo "@@flows"
if [ -n "$flows" ] && [ -e "$dir/maps/${MAPS.flows}" ]; then bpftool -j map dump pinned "$dir/maps/${MAPS.flows}" | grep -o '"key":\\[' | wc -l; else echo null; fi
for map in "$@"; do echo "@@map $map"; json_or bpftool -j map dump pinned "$dir/maps/$map"; done
`;

function sections(stdout: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const part of stdout.split(/^@@/m).slice(1)) {
    const newline = part.indexOf("\n");
    out.set(part.slice(0, newline).trim(), part.slice(newline + 1).trim());
  }
  return out;
}

export interface SurveyRequest {
  /** Remote path of the object, to learn whether it is uploaded. */
  objectPath?: string;
  /** The management peer, to learn the route to it. */
  peer?: string;
  countFlows?: boolean;
  /** Map names to dump. */
  maps?: readonly string[];
}

export async function surveyPolicy(session: SshSession, iface: string, layout: PinLayout, request: SurveyRequest): Promise<PolicyHostState> {
  const args = [iface, layout.dir, request.objectPath ?? "", request.peer ?? "", request.countFlows ? "count" : "", ...(request.maps ?? [])];
  const parts = sections((await session.runScript(SURVEY_SCRIPT, args)).stdout);
  const links = (JSON.parse(parts.get("links") || "[]") as { ifname: string; ifindex: number; link_type?: string }[]).map((l) => ({
    ifname: l.ifname,
    ifindex: l.ifindex,
    linkType: l.link_type ?? "unknown",
  }));
  const qdiscs = JSON.parse(parts.get("qdisc") || "[]") as { kind?: string; parent?: string }[];
  const programs: Partial<Record<Direction, ProgramInfo>> = {};
  for (const direction of DIRECTIONS) {
    const info = JSON.parse(parts.get(`prog ${PROGRAMS[direction]}`) || "null") as ProgramInfo | null;
    if (info) programs[direction] = { id: info.id, tag: info.tag, name: info.name };
  }
  const route = JSON.parse(parts.get("route") || "null") as { dev?: string; prefsrc?: string }[] | null;
  const maps = new Map<string, MapEntry[] | undefined>();
  for (const map of request.maps ?? []) {
    const body = parts.get(`map ${map}`) || "null";
    maps.set(map, body === "null" ? undefined : parseMapDump(body));
  }
  const flows = parts.get("flows") || "null";
  return {
    links,
    hookQdisc: qdiscs.find((q) => q.parent === "ffff:fff1")?.kind,
    filters: DIRECTIONS.flatMap((d) => parseTcFilters(parts.get(`filters ${d}`) || "", d)),
    programs,
    objectPresent: parts.get("object") === "true",
    managementRoute: route?.[0] ? { dev: route[0].dev, prefsrc: route[0].prefsrc } : undefined,
    maps,
    liveFlows: flows === "null" ? undefined : Number(flows),
  };
}
