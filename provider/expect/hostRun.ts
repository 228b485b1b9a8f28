/**
 * Packet expectations run on a host (issue 14): after a change is applied, while
 * its revert timer is armed, every expectation's frames go through probe copies
 * of what is now attached (probe.ts: same objects, sharing only the maps they
 * read), all in ONE exec (sh/expect-probe.sh): the frames are uploaded on its
 * stdin, the copies loaded, one `bpftool -j batch` of `prog run` lines per round,
 * the copies removed. The verdicts (and for a balancer the backend the rewritten
 * frame goes to) are judged here. A live flow table, NAT record, counter or chain
 * slot is never written by a probe.
 */
import { parsePrefix, formatAddress } from "../cidr";
import { packagedObject } from "../objects";
import { hostJson } from "../remote/hostJson";
import { objectRemotePath, uploadObject, type LocalObject } from "../remote/objectUpload";
import type { PinLayout } from "../remote/pins";
import { PIN_ROOT, RUN_DIR } from "../remote/hostDirs";

const GUARD_DIR = `${RUN_DIR}/guards`;
import type { ChainSurvey } from "../remote/resourceSurvey";
import { runShellScript } from "../remote/shellScript";
import type { SshSession } from "../remote/ssh";
import { DISPATCHER_OBJECT, type XdpPlacement } from "../remote/xdpHook";
import { z } from "zod";
import { expectationText, outcomeText, type Expectation, type ExpectKind } from "./grammar";
import { internetChecksum } from "./packet";
import { CHAIN_SHARED_MAPS, probeRounds, SHARED_MAPS } from "./probe";
import { expectationsOf } from "./schema";
import { PROGRAMS } from "../tcPolicy/codec";

/** What an expectation got on a host: the `expectResults` output, keyed by canonical text. */
export interface ExpectationResult {
  wanted: string;
  got: string;
  met: boolean;
}

/** A program copy to load: its object, the live pin directory whose maps it shares, and which. */
export interface ProbeMember {
  /** Its slot in the interface's XDP chain; undefined when it runs alone (or is TC). */
  slot?: number;
  object: LocalObject;
  liveDir: string;
  shared: readonly string[];
}

/** What the probe runs through. */
export interface ProbeTarget {
  type: "xdp" | "tc";
  iface: string;
  /** The chain's dispatcher, when the interface has one: the frames enter through its copy. */
  dispatcher?: LocalObject;
  members: ProbeMember[];
}

/** What the judge needs to name a balancer's backend from the frame it sends. */
export interface BalancerView {
  mode: "dsr" | "nat" | "ipip";
  backends: readonly { address: string; port?: number; mac?: string }[];
}

// ---------------------------------------------------------------- targets

/** The pin directory of each kind whose program can sit in an XDP chain, with its object and shared maps. */
const XDP_KIND_DIRS: Readonly<Record<string, { object: string; kind: ExpectKind }>> = {
  "xdp-firewall": { object: "xdp_firewall", kind: "xdpFirewall" },
  maglev: { object: "xdp_maglev", kind: "maglevService" },
};

/**
 * The probe target of an XDP resource after its change: alone, its own copy; in a
 * chain, a copy of the dispatcher and of every member in its slot (the resource in
 * `placement.chainPriority`, the others where the survey before the change found
 * them), so every member's verdict counts. Another member is probed with this
 * bpfleet version's object of its kind against its own live maps.
 */
export function xdpProbeTarget(kind: ExpectKind, object: string, layout: PinLayout, placement: XdpPlacement, chain: ChainSurvey, ownIds: readonly number[]): ProbeTarget {
  const own: ProbeMember = { object: packagedObject(object), liveDir: layout.dir, shared: SHARED_MAPS[kind] };
  if (placement.chainPriority === undefined) return { type: "xdp", iface: placement.iface, members: [own] };
  const members: ProbeMember[] = [{ ...own, slot: placement.chainPriority, shared: [...SHARED_MAPS[kind], ...CHAIN_SHARED_MAPS] }];
  for (const [slot, id] of [...chain.slots].sort((a, b) => a[0] - b[0])) {
    if (slot === placement.chainPriority || ownIds.includes(id)) continue;
    const pin = chain.owners.get(id);
    const dir = pin?.split("/")[0];
    const known = dir === undefined ? undefined : XDP_KIND_DIRS[dir];
    if (!pin || !known) {
      throw new Error(`slot ${slot} of ${placement.iface}'s XDP chain holds program ${id}, which is no bpfleet resource's: expectations cannot be probed through it`);
    }
    members.push({ slot, object: packagedObject(known.object), liveDir: `${PIN_ROOT}/${pin}`, shared: [...SHARED_MAPS[known.kind], ...CHAIN_SHARED_MAPS] });
  }
  return { type: "xdp", iface: placement.iface, dispatcher: packagedObject(DISPATCHER_OBJECT), members };
}

/** A TcPolicy's probe target: a copy of both programs sharing the rules, with a scratch flow table. */
export function tcProbeTarget(layout: PinLayout, iface: string): ProbeTarget {
  return { type: "tc", iface, members: [{ object: packagedObject("tc_policy"), liveDir: layout.dir, shared: SHARED_MAPS.tcPolicy }] };
}

// ---------------------------------------------------------------- judging

const XDP_ACTION = ["aborted", "drop", "pass", "tx", "redirect"] as const;

function readAddress(bytes: Buffer, at: number, length: 4 | 16): string {
  return formatAddress(new Uint8Array(bytes.subarray(at, at + length)));
}

const macText = (b: Buffer) => [...b.subarray(0, 6)].map((x) => x.toString(16).padStart(2, "0")).join(":");

/** The L3 header of a frame: its family, where it starts, its protocol, its length and where L4 starts. */
function l3(frame: Buffer, at = 14): { family: 4 | 6; at: number; protocol: number; l4: number; dst: string; src: string } | undefined {
  if (frame.length < at + 20) return undefined;
  const version = frame[at]! >> 4;
  if (version === 4) {
    const ihl = (frame[at]! & 0x0f) * 4;
    return { family: 4, at, protocol: frame[at + 9]!, l4: at + ihl, src: readAddress(frame, at + 12, 4), dst: readAddress(frame, at + 16, 4) };
  }
  if (version === 6 && frame.length >= at + 40) {
    return { family: 6, at, protocol: frame[at + 6]!, l4: at + 40, src: readAddress(frame, at + 8, 16), dst: readAddress(frame, at + 24, 16) };
  }
  return undefined;
}

/** Whether the IPv4 header checksum and the TCP/UDP checksum of a frame's packet hold (RFC 1071). */
function checksumsHold(frame: Buffer, ip: NonNullable<ReturnType<typeof l3>>): boolean {
  if (ip.family === 4 && internetChecksum(frame.subarray(ip.at, ip.l4)) !== 0) return false;
  if (ip.protocol !== 6 && ip.protocol !== 17) return true;
  const segment = frame.subarray(ip.l4);
  if (ip.protocol === 17 && segment.readUInt16BE(6) === 0 && ip.family === 4) return true;
  const src = Buffer.from(parsePrefix(ip.src).bytes);
  const dst = Buffer.from(parsePrefix(ip.dst).bytes);
  const pseudo = ip.family === 4 ? Buffer.alloc(12) : Buffer.alloc(40);
  if (ip.family === 4) {
    src.copy(pseudo, 0);
    dst.copy(pseudo, 4);
    pseudo[9] = ip.protocol;
    pseudo.writeUInt16BE(segment.length, 10);
  } else {
    src.copy(pseudo, 0);
    dst.copy(pseudo, 16);
    pseudo.writeUInt32BE(segment.length, 32);
    pseudo[39] = ip.protocol;
  }
  return internetChecksum(pseudo, segment) === 0;
}

/**
 * The backend a balancer sent `out` to, read from the rewritten frame: NAT's new
 * destination address and port, IPIP's outer destination, DSR's destination MAC
 * (the backend whose next hop it is). With the rewrite checked: DSR leaves the
 * packet as it came; NAT and IPIP leave valid checksums, and IPIP the packet inside.
 */
export function backendOfFrame(frame: Buffer, out: Buffer, view: BalancerView): { address?: string; port?: number; text: string; problem?: string } {
  const inner = l3(frame);
  const outer = l3(out);
  if (!inner || !outer) return { text: "an unreadable frame", problem: "the rewritten frame has no IP header" };
  if (view.mode === "ipip") {
    const problem = !out.subarray(outer.l4).equals(frame.subarray(14))
      ? "the encapsulated packet is not the one that arrived"
      : !checksumsHold(out, { ...outer, protocol: 0 }) ? "the outer IPv4 header checksum is wrong" : undefined;
    return { address: outer.dst, text: `backend ${outer.dst}`, problem };
  }
  if (view.mode === "nat") {
    const port = outer.protocol === 6 || outer.protocol === 17 ? out.readUInt16BE(outer.l4 + 2) : undefined;
    const text = `backend ${port === undefined ? outer.dst : outer.dst.includes(":") ? `[${outer.dst}]:${port}` : `${outer.dst}:${port}`}`;
    return { address: outer.dst, port, text, problem: checksumsHold(out, outer) ? undefined : "the rewritten packet's checksums are wrong" };
  }
  const mac = macText(out);
  const owners = view.backends.filter((b) => b.mac?.toLowerCase() === mac);
  const problem = out.subarray(14).equals(frame.subarray(14)) ? undefined : "DSR changed the packet beyond its Ethernet header";
  if (owners.length === 1) return { address: owners[0]!.address, text: `backend ${owners[0]!.address}`, problem };
  return { text: `the next hop ${mac}${owners.length > 1 ? ` (backends ${owners.map((b) => b.address).join(", ")})` : " (no backend's)"}`, problem };
}

/**
 * One expectation's result from the verdict of its last frame. XDP: "pass" is met
 * by XDP_PASS, and for a firewall also by a later chain member forwarding the packet
 * (TX/redirect: it was not dropped); "drop" by XDP_DROP or XDP_ABORTED; a backend by
 * TX/redirect to that backend with a sound rewrite. TC: TC_ACT_UNSPEC and TC_ACT_OK
 * pass, TC_ACT_SHOT drops.
 */
export function judge(e: Expectation, type: "xdp" | "tc", retval: number, frame: Buffer, out: Buffer | undefined, view?: BalancerView): ExpectationResult {
  const wanted = outcomeText(e.outcome);
  if (type === "tc") {
    const signed = retval > 0x7fffffff ? retval - 0x100000000 : retval;
    const got = signed === -1 || signed === 0 ? "pass" : signed === 2 ? "drop" : `tc action ${signed}`;
    return { wanted, got, met: got === wanted };
  }
  const action = XDP_ACTION[retval] ?? `xdp action ${retval}`;
  const forwarded = action === "tx" || action === "redirect";
  let got: string = action === "aborted" ? "drop" : action;
  let backend: ReturnType<typeof backendOfFrame> | undefined;
  if (forwarded && view && out) {
    backend = backendOfFrame(frame, out, view);
    got = backend.problem ? `${backend.text} (${backend.problem})` : backend.text;
  }
  if ("verdict" in e.outcome) {
    const met = e.outcome.verdict === "drop" ? action === "drop" || action === "aborted" : action === "pass" || (e.kind === "xdpFirewall" && forwarded);
    return { wanted, got, met };
  }
  const want = e.outcome.backend;
  const met = forwarded && backend !== undefined && !backend.problem && backend.address === want.address && (want.port === undefined || backend.port === want.port);
  return { wanted, got, met };
}

// ---------------------------------------------------------------- running

const batchRuns = z.array(z.object({ output: z.object({ retval: z.number() }).optional(), error: z.string().optional() }).passthrough());

/** The script's stdin: frames, rounds and runs (sh/expect-probe.sh), and which run gives each expectation's verdict. */
export function probeInput(target: ProbeTarget, expectations: readonly Expectation[]): { stdin: string; verdictRun: Map<Expectation, { run: number; frame: Buffer }> } {
  const lines: string[] = [];
  const verdictRun = new Map<Expectation, { run: number; frame: Buffer }>();
  const frames = new Map<string, string>();
  let run = 0;
  const frameName = (frame: Buffer) => {
    const hex = frame.toString("hex");
    let name = frames.get(hex);
    if (!name) {
      frames.set(hex, (name = `f${frames.size}`));
      lines.push(`frame ${name} ${frame.length} ${frame.toString("base64")}`);
    }
    return name;
  };
  const runLines: string[] = [];
  for (const round of probeRounds(expectations)) {
    runLines.push("round");
    for (const probe of round) {
      for (const step of probe.steps) {
        run++;
        const program = target.type === "xdp" ? "prog" : PROGRAMS[step.hook];
        runLines.push(`run ${program} ${frameName(step.frame)}`);
      }
      verdictRun.set(probe.expectation, { run, frame: probe.steps.at(-1)!.frame });
    }
  }
  return { stdin: [...lines, ...runLines, ""].join("\n"), verdictRun };
}

/**
 * Runs `expectations` on the host in one exec; their results by canonical text.
 * `objectPath`: where the host holds an object (its content-addressed path; a test
 * running the script locally gives the package's own).
 */
export async function runExpectations(
  session: SshSession,
  target: ProbeTarget,
  expectations: readonly Expectation[],
  view?: BalancerView,
  objectPath: (object: LocalObject) => string = objectRemotePath,
): Promise<Record<string, ExpectationResult>> {
  if (expectations.length === 0) return {};
  const { stdin, verdictRun } = probeInput(target, expectations);
  const members = target.members.map((m) => `${m.slot ?? "-"} ${objectPath(m.object)} ${m.liveDir} ${m.shared.join(",")}`).join("\n");
  const result = await runShellScript(
    session,
    "expect-probe",
    { type: target.type, iface: target.iface, dispatcher: target.dispatcher ? objectPath(target.dispatcher) : "", members, outputs: view ? "1" : "" },
    { stdin },
  );
  const retvals: number[] = [];
  const outs = new Map<number, Buffer>();
  for (const section of result.stdout.split(/^@@/m).filter((s) => s.trim() !== "")) {
    const newline = section.indexOf("\n");
    const [head, arg] = section.slice(0, newline).trim().split(/\s+/);
    const body = section.slice(newline + 1).trim();
    if (head === "round") {
      const runs = hostJson(batchRuns, body, { host: session.label, command: `bpftool -j batch file <round ${arg}>` });
      for (const r of runs) {
        if (!r.output) throw new Error(`${session.label}: a probe run failed: ${r.error ?? JSON.stringify(r)}`);
        retvals.push(r.output.retval);
      }
    } else if (head === "out") {
      outs.set(Number(arg), Buffer.from(body, "base64"));
    }
  }
  const results: Record<string, ExpectationResult> = {};
  for (const e of expectations) {
    const { run, frame } = verdictRun.get(e)!;
    const retval = retvals[run - 1];
    if (retval === undefined) throw new Error(`${session.label}: the probe printed ${retvals.length} verdicts for ${verdictRun.size} expectations`);
    results[expectationText(e)] = judge(e, target.type, retval, frame, outs.get(run), view);
  }
  return results;
}

// ---------------------------------------------------------------- the lifecycle's step

/** The expectations of one change, as guardedChange runs them. */
export interface ExpectationCheck {
  /** Before the revert is armed: the objects the copies need, uploaded. */
  prepare(): Promise<void>;
  /** After the change: every result; throws only when the probe itself could not run. */
  run(): Promise<Record<string, ExpectationResult>>;
  /** The results of the last run ({} before). */
  readonly results: Record<string, ExpectationResult>;
}

/** The step for a resource's `expect` record, or undefined when it has none. */
export function expectationCheck(session: SshSession, kind: ExpectKind, record: Record<string, string>, target: () => ProbeTarget, view?: () => BalancerView): ExpectationCheck | undefined {
  if (Object.keys(record).length === 0) return undefined;
  const expectations = expectationsOf(kind, record);
  let built: ProbeTarget | undefined;
  const check = {
    results: {} as Record<string, ExpectationResult>,
    async prepare() {
      built = target();
      const objects = new Map<string, LocalObject>();
      for (const o of [built.dispatcher, ...built.members.map((m) => m.object)]) if (o) objects.set(o.sha256, o);
      for (const o of objects.values()) await uploadObject(session, o);
    },
    async run() {
      check.results = await runExpectations(session, built ?? target(), expectations, view?.());
      return check.results;
    },
  };
  return check;
}

/** The table of a failed check: expectation, wanted, got, host; the missed ones first. */
export function expectationTable(host: string, results: Record<string, ExpectationResult>): string {
  const rows = Object.entries(results).sort(([, a], [, b]) => Number(a.met) - Number(b.met));
  const table = [["expectation", "wanted", "got", "host", ""], ...rows.map(([text, r]) => [text, r.wanted, r.got, host, r.met ? "met" : "MISSED"])];
  const widths = table[0]!.map((_, i) => Math.max(...table.map((row) => row[i]!.length)));
  return table.map((row) => row.map((cell, i) => cell.padEnd(widths[i]!)).join("  ").trimEnd()).join("\n");
}

export class ExpectationsMissedError extends Error {
  constructor(
    readonly host: string,
    readonly results: Record<string, ExpectationResult>,
    readonly revertLog: string,
  ) {
    const missed = Object.values(results).filter((r) => !r.met).length;
    super(
      `${host}: ${missed} of ${Object.keys(results).length} packet expectations missed after the change, so the host reverted it at once ` +
        `(the lockout guard's revert; its output is kept in ${GUARD_DIR}/<token>.log there). Nothing was recorded as applied\n` +
        `${expectationTable(host, results)}\n` +
        `Fix the change (or the expectation, if the traffic it names should no longer get that outcome) and run up again.`,
    );
    this.name = "ExpectationsMissedError";
  }
}
