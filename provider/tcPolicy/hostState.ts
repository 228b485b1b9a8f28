/**
 * What a host has for one TcPolicy, read in one round trip: the interface (does
 * it exist, is it Ethernet), the qdisc on its TC hook and the filters of both
 * hooks, the policy's pinned programs, whether the BPF object is uploaded, the
 * route to the management peer, dumps of the maps asked for and, for read, the
 * number of live flows.
 */
import { parseMapDump, type MapEntry } from "../remote/mapOperations";
import type { PinLayout } from "../remote/pins";
import type { ProgramInfo } from "../remote/programLoad";
import type { SshSession } from "../remote/ssh";
import { parseTcFilters, type TcFilter } from "../remote/tc";
import { MAPS, PROGRAMS } from "./codec";
import { DIRECTIONS, type Direction } from "./schema";
import { hostJson, ipLinks, ipRouteGet, progShow, tcQdiscRows } from "../remote/hostJson";

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
  /** Whether the kernel exposes its BTF (/sys/kernel/btf/vmlinux), which libbpf needs to load the object. */
  kernelBtf: boolean;
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
// Live flows: the program treats an entry idle past its timeout as gone but
// leaves it for the LRU to reclaim, so the table holds stale entries too. The
// count applies the program's own test (idle < the timeout of the flow's
// protocol and state, tc_policy.bpf.c flow_track) against CLOCK_MONOTONIC, the
// clock of bpf_ktime_get_ns(): /proc/timer_list's "now
// at" (ktime_get()); /proc/uptime (CLOCK_BOOTTIME, ahead by the time spent
// suspended) only if that is unreadable. Each raw entry of the JSON dumps is
// one line after tr: the config's (a 4-byte key) gives the three timeouts, a
// flow's (a 40-byte key) its protocol (key byte 36), last_seen_ns (value bytes
// 0-7, little-endian) and state (value byte 8). The program subtracts in u64, so
// a last_seen "before boot" (a host up for less than a timeout, an entry written
// by hand) wraps: idle time does too here. awk's doubles round those numbers to
// a few microseconds, nothing for timeouts of seconds.
const LIVE_FLOWS_AWK = String.raw`
BEGIN { for (i = 0; i < 256; i++) hex[sprintf("%02x", i)] = i; live = 0; have_cfg = 0 }
function bytes(text, out,   n, i, t) {
  gsub(/"|0x|\[|\]/, "", text)
  n = split(text, t, ",")
  for (i = 1; i <= n; i++) out[i - 1] = hex[t[i]]
  return n
}
function u64(b, at,   v, i) { v = 0; for (i = 7; i >= 0; i--) v = v * 256 + b[at + i]; return v }
/^"key":\["0x/ {
  k = $0; sub(/^"key":/, "", k); sub(/,"value":.*/, "", k)
  v = $0; sub(/.*"value":/, "", v); sub(/\].*/, "", v)
  klen = bytes(k, kb); bytes(v, vb)
  if (klen == 4) { established = u64(vb, 0); transitory = u64(vb, 8); other = u64(vb, 16); have_cfg = 1; next }
  if (klen != 40) next
  if (!have_cfg) { live++; next }
  timeout = kb[36] != 6 ? other : (vb[8] == 1 ? established : transitory)
  idle = now - u64(vb, 0)
  if (idle < -2 ^ 63) idle += 2 ^ 64
  if (idle < timeout) live++
}
END { print live }
`;

/** Shell function: `count_live_flows <config pin> <flow table pin>` prints the number of live flows. */
export const LIVE_FLOWS_SH = `
count_live_flows() {
  now=$(awk '/^now at / { print $3; exit }' /proc/timer_list 2>/dev/null) || now=
  [ -n "$now" ] || now=$(awk '{ printf "%.0f", $1 * 1e9 }' /proc/uptime)
  { bpftool -j map dump pinned "$1"; echo; bpftool -j map dump pinned "$2"; } | tr '{' '\\n' | awk -v now="$now" '${LIVE_FLOWS_AWK}'
}
`;

// $1 interface, $2 pin dir, $3 object path or "", $4 peer or "", $5 "count" or "", then map names.
const SURVEY_SCRIPT = `${LIVE_FLOWS_SH}
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
echo "@@btf"; if [ -e /sys/kernel/btf/vmlinux ]; then echo true; else echo false; fi
echo "@@route"; if [ -n "$peer" ]; then json_or ip -j route get "$peer"; else echo null; fi
echo "@@flows"
if [ -n "$flows" ] && [ -e "$dir/maps/${MAPS.flows}" ]; then count_live_flows "$dir/maps/${MAPS.config}" "$dir/maps/${MAPS.flows}"; else echo null; fi
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
  const links = hostJson(ipLinks, parts.get("links") || "[]", { host: session.label, command: "ip -j link show" }).map((l) => ({
    ifname: l.ifname,
    ifindex: l.ifindex,
    linkType: l.link_type ?? "unknown",
  }));
  const qdiscs = hostJson(tcQdiscRows, parts.get("qdisc") || "[]", { host: session.label, command: `tc -j qdisc show dev ${iface}` });
  const programs: Partial<Record<Direction, ProgramInfo>> = {};
  for (const direction of DIRECTIONS) {
    const info = hostJson(progShow.nullable(), parts.get(`prog ${PROGRAMS[direction]}`) || "null", { host: session.label, command: `bpftool -j prog show pinned ${layout.dir}/progs/${PROGRAMS[direction]}` });
    if (info) programs[direction] = { id: info.id, tag: info.tag, name: info.name };
  }
  const route = hostJson(ipRouteGet.nullable(), parts.get("route") || "null", { host: session.label, command: `ip -j route get ${request.peer ?? ""}` });
  const maps = new Map<string, MapEntry[] | undefined>();
  for (const map of request.maps ?? []) {
    const body = parts.get(`map ${map}`) || "null";
    maps.set(map, body === "null" ? undefined : parseMapDump(body, { host: session.label, command: `bpftool -j map dump pinned ${layout.dir}/maps/${map}` }));
  }
  const flows = parts.get("flows") || "null";
  return {
    links,
    hookQdisc: qdiscs.find((q) => q.parent === "ffff:fff1")?.kind,
    filters: DIRECTIONS.flatMap((d) => parseTcFilters(parts.get(`filters ${d}`) || "", d)),
    programs,
    objectPresent: parts.get("object") === "true",
    kernelBtf: parts.get("btf") === "true",
    managementRoute: route?.[0] ? { dev: route[0].dev, prefsrc: route[0].prefsrc } : undefined,
    maps,
    liveFlows: flows === "null" ? undefined : Number(flows),
  };
}
