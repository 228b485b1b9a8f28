/**
 * What a host must have before bpfleet changes anything: bpftool, ip and tc, a
 * mounted bpffs, and kernel support for the program types and helpers a kind
 * needs, probed once per session.
 */
import { featureProbe, hostJson } from "./hostJson";
import { STATE_DIR } from "./hostDirs";
import { runSteps, scriptStep, type ShellStep } from "./shellSteps";
import { RemoteCommandError, type ExecResult, type SshSession } from "./ssh";

/** Where a host keeps its feature probe (sh/preflight.sh), keyed by kernel and bpftool. */
export const PROBE_CACHE_DIR = `${STATE_DIR}/probe`;

export class HostPreconditionError extends Error {}

export interface HostFacts {
  kernel: string;
  bpftool: string;
  programTypes: Record<string, boolean>;
  /** Helpers each program type may call, by type ("xdp", "sched_cls"). */
  helpers: Record<string, readonly string[]>;
}

const preflightFacts = new WeakMap<SshSession, Promise<HostFacts>>();

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
  const [result] = await runSteps(session, [preflightStep()]);
  return factsOf(session, result!);
}

function preflightStep(): ShellStep {
  return scriptStep("preflight", { state: STATE_DIR, cache: PROBE_CACHE_DIR }, { allowFailure: true });
}

/**
 * The preflight as a step of a larger exec (a survey), when this session has not run
 * it yet, and what turns its result into the facts preflight() then returns (throwing
 * as preflight would). Undefined when the session knows the facts already.
 */
export function preflightInSurvey(session: SshSession): { step: ShellStep; settle(result: ExecResult | undefined): Promise<HostFacts> } | undefined {
  if (preflightFacts.has(session)) return undefined;
  return {
    step: preflightStep(),
    settle(result) {
      const facts = result ? Promise.resolve().then(() => factsOf(session, result)) : runPreflight(session);
      preflightFacts.set(session, facts);
      facts.catch(() => preflightFacts.delete(session));
      return facts;
    },
  };
}

function factsOf(session: SshSession, result: ExecResult): HostFacts {
  if (result.code === 3) {
    const missing = result.stderr.replace("missing:", "").trim();
    throw new HostPreconditionError(`${session.label}: required tools are missing on the host: ${missing}. Install bpftool and iproute2 (Debian/Ubuntu: apt-get install bpftool iproute2).`);
  }
  if (result.code !== 0) throw new RemoteCommandError(session.label, "preflight", result, "preflight failed");
  const [head = "", features = "{}"] = result.stdout.split("@@features\n");
  const field = (name: string) => head.match(new RegExp(`^${name}=(.*)$`, "m"))?.[1] ?? "unknown";
  const probed = hostJson(featureProbe, features, { host: session.label, command: "bpftool -j feature probe kernel" });
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
