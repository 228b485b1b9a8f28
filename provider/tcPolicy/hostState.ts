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
import { sections } from "../remote/resourceSurvey";
import { preludeFunctions, runShellScript } from "../remote/shellScript";
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

/** Shell function: `count_live_flows <config pin> <flow table pin>` prints the number of live flows (sh/prelude.sh says how). */
export const LIVE_FLOWS_SH = preludeFunctions("count_live_flows");

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
  const args = [iface, layout.dir, request.objectPath ?? "", request.peer ?? "", request.countFlows ? "count" : "", MAPS.config, MAPS.flows, PROGRAMS.ingress, PROGRAMS.egress, ...(request.maps ?? [])];
  const parts = sections((await runShellScript(session, "policy-survey", args)).stdout);
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
