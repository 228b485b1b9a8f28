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
import { runSteps, scriptStep, type ShellStep } from "./shellSteps";
import type { ExecResult, SshSession } from "./ssh";
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
  const survey = await surveyStep(session, iface, layout, object, dispatcherDir);
  const [result] = await runSteps(session, [survey.step]);
  return survey.parse(result!);
}

/**
 * The survey as a step of a larger exec, and what reads its result. A root login
 * reads the management peer in the survey itself ($SSH_CONNECTION); through sudo,
 * which clears it, the login user is asked first (session.managementPeer).
 */
export async function surveyStep(session: SshSession, iface: string, layout: PinLayout, object: LocalObject, dispatcherDir = ""): Promise<{ step: ShellStep; parse(result: ExecResult): ResourceSurvey }> {
  const peer = session.seesLoginEnvironment ? "@ssh" : ((await session.managementPeer()) ?? "");
  const step = scriptStep("resource-survey", [iface, layout.program, objectRemotePath(object), peer, dispatcherDir, PIN_ROOT]);
  return { step, parse: (result) => parseSurvey(session, result.stdout, iface, layout, peer, dispatcherDir) };
}

function parseSurvey(session: SshSession, stdout: string, iface: string, layout: PinLayout, peerArg: string, dispatcherDir: string): ResourceSurvey {
  const parts = sections(stdout);
  const host = session.label;
  const peer = peerArg === "@ssh" ? parts.get("peer") || undefined : peerArg;
  if (peerArg === "@ssh") session.notePeer(peer);
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

/** A resource's program, the interface's XDP attachment and the resource's counters, in one round trip. */
/** With `dispatcherDir` (XDP resources), also reads the interface's XDP chain. */
export async function programState(session: SshSession, iface: string, layout: PinLayout, statsMap: string, dispatcherDir = ""): Promise<ProgramState> {
  const state = programStateStep(session, iface, layout, statsMap, dispatcherDir);
  const [result] = await runSteps(session, [state.step]);
  return state.parse(result!);
}

/** programState as a step of a larger exec, and what reads its result. */
export function programStateStep(session: SshSession, iface: string, layout: PinLayout, statsMap: string, dispatcherDir = ""): { step: ShellStep; parse(result: ExecResult): ProgramState } {
  return {
    step: scriptStep("program-state", [iface, layout.program, `${layout.maps}/${statsMap}`, dispatcherDir, PIN_ROOT]),
    parse: (result) => parseProgramState(session, result.stdout, iface, layout, statsMap, dispatcherDir),
  };
}

function parseProgramState(session: SshSession, stdout: string, iface: string, layout: PinLayout, statsMap: string, dispatcherDir: string): ProgramState {
  const parts = sections(stdout);
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
