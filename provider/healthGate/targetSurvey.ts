/**
 * What a health gate reads about one target in one round trip (sh/target-survey.sh),
 * and whether that reads back healthy: the pin directory and program pin exist, the
 * program is the one the resource reported, and it runs on its hook.
 */
import { parseMapDump, type MapEntry } from "../remote/mapOperations";
import { chainDump, hostJson, netShow, progId } from "../remote/hostJson";
import { pinLayout } from "../remote/pins";
import { sections } from "../remote/resourceSurvey";
import { runShellScript } from "../remote/shellScript";
import type { SshSession } from "../remote/ssh";
import { dispatcherDir } from "../remote/xdpHook";
import type { GateTarget } from "./schema";

/** What one round trip reads about a target. */
export interface TargetSurvey {
  pinDirExists: boolean;
  /** The pinned program's kernel id, or undefined when the pin is missing. */
  programId: number | undefined;
  /** Program ids on the hook's interface by hook type; undefined when the interface could not be read. */
  hooks: { xdp: number[]; "tc-ingress": number[]; "tc-egress": number[] } | undefined;
  /** The counter map's entries, when asked for and present. */
  stats: MapEntry[] | undefined;
}

interface NetShow {
  xdp?: { id: number }[];
  tc?: { kind?: string; id?: number; prog_id?: number }[];
}

/** Parses the survey script's output. Pure. */
export function parseSurvey(stdout: string): TargetSurvey {
  const parts = sections(stdout);
  const prog = hostJson(progId.nullable(), parts.get("prog") || "null", { command: "bpftool -j prog show pinned <program>" });
  const net: NetShow[] | null = hostJson(netShow.nullable(), parts.get("net") || "null", { command: "bpftool -j net show dev <interface>" });
  const stats = parts.get("stats") || "null";
  const tc = net?.[0]?.tc ?? [];
  const tcIds = (direction: string) => tc.filter((f) => f.kind?.endsWith(`/${direction}`)).map((f) => f.id ?? f.prog_id ?? 0);
  // Members of bpfleet's XDP chain run on the hook when the dispatcher does.
  const dispatcher = hostJson(progId.nullable(), parts.get("dispatcher") || "null", { command: "bpftool -j prog show pinned <dispatcher>" });
  const chain = hostJson(chainDump.nullable(), parts.get("chain") || "null", { command: "bpftool -j map dump pinned <dispatcher>/maps/xdp_chain" }) ?? [];
  const xdpIds = (net?.[0]?.xdp ?? []).map((x) => x.id);
  if (dispatcher && xdpIds.includes(dispatcher.id)) xdpIds.push(...chain.flatMap((e) => (e.formatted ? [e.formatted.value] : [])));
  return {
    pinDirExists: parts.get("dir") === "true",
    programId: prog?.id,
    hooks: net?.[0] ? { xdp: xdpIds, "tc-ingress": tcIds("ingress"), "tc-egress": tcIds("egress") } : undefined,
    stats: stats === "null" ? undefined : parseMapDump(stats),
  };
}

/** Why a target does not read back healthy; empty when it does. Pure. */
export function assessTarget(target: GateTarget, expectedProgramId: number | null | undefined, survey: TargetSurvey): string[] {
  const layout = pinLayout(target.kind, target.name);
  if (!survey.pinDirExists) return [`pin directory ${layout.dir} is missing: the resource is not installed on this host (deleted by hand, or the host rebooted)`];
  if (survey.programId === undefined) return [`program pin ${layout.dir}/${target.program} is missing or unreadable`];
  const problems: string[] = [];
  if (expectedProgramId != null && survey.programId !== expectedProgramId) {
    problems.push(`the pinned program is id ${survey.programId}, but the resource reported id ${expectedProgramId} (changed since it was applied?)`);
  }
  if (target.hook) {
    const { interface: iface, type } = target.hook;
    if (!survey.hooks) problems.push(`interface ${iface} cannot be read (does it exist?)`);
    else if (!survey.hooks[type].includes(survey.programId)) {
      const there = survey.hooks[type];
      problems.push(`program id ${survey.programId} is not attached to ${iface} ${type} (${there.length ? `the hook holds id ${there.join(", ")}` : "the hook is empty"})`);
    }
  }
  return problems;
}

/** Reads `target` (and its counter map, when named) in one round trip. */
export async function surveyTarget(session: SshSession, target: GateTarget, counterMap: string | undefined): Promise<TargetSurvey> {
  const layout = pinLayout(target.kind, target.name);
  const iface = target.hook?.interface ?? "";
  const chainDir = target.hook?.type === "xdp" ? dispatcherDir(iface) : "";
  const result = await runShellScript(session, "target-survey", [layout.dir, `${layout.dir}/${target.program}`, iface, counterMap ? `${layout.maps}/${counterMap}` : "", chainDir]);
  return parseSurvey(result.stdout);
}
