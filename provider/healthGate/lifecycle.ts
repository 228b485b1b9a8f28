/**
 * HealthGate: create and update run the check; read and delete touch nothing,
 * since a gate holds nothing on any host. The check, per host of the wave and
 * all hosts at once:
 *   1. the resource reads back healthy: pin directory and program pin exist,
 *      the program is the one the resource reported, and it is on its hook;
 *   2. the optional probe command exits 0 (retried);
 *   3. the optional counter grew by at least minIncrease within the window
 *      (read before the probe, read again when the window has passed).
 * Any host failing fails the gate, and with it `pulumi up`: later waves depend
 * on this gate and are never touched.
 */
import type { Kind } from "../dynamicAdapter";
import { hostLabel } from "../remote/hostSchema";
import { pinLayout } from "../remote/pins";
import { shellQuote } from "../remote/quote";
import { RemoteCommandError, sessionFor, type SshSession } from "../remote/ssh";
import { COUNTER_SOURCES } from "./counters";
import { healthGateSchema, type GateTarget, type HealthGateInputs, type HealthGateOutputs, type TargetReport } from "./schema";
import { assessTarget, surveyTarget, type TargetSurvey } from "./targetSurvey";
import { gateExpectations } from "./expectations";

const KIND = "health-gate";

function targetName(target: GateTarget): string {
  const label = hostLabel(target.host);
  return target.label && target.label !== label ? `${target.label} (${label})` : label;
}

function readCounter(target: GateTarget, name: string, found: TargetSurvey): number {
  const source = COUNTER_SOURCES[target.kind]!;
  if (!found.stats) throw new GateProblem(`counter map ${pinLayout(target.kind, target.name).maps}/${source.map} is missing or unreadable`);
  return source.read(found.stats)[name] ?? 0;
}

class GateProblem extends Error {}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** Command output for a message: its last `max` characters, every line indented under its heading. */
function excerpt(text: string, max = 600): string {
  const trimmed = text.trim();
  const tail = trimmed.length > max ? `...${trimmed.slice(-max)}` : trimmed;
  return tail.replace(/\n/g, "\n        ");
}

/** Runs the probe until it passes or the attempts are used up; returns the attempts it took. */
async function runProbe(session: SshSession, argv: string[], gate: HealthGateInputs): Promise<number> {
  let last = "";
  for (let attempt = 1; attempt <= gate.probeAttempts; attempt++) {
    if (attempt > 1) await sleep(gate.probeIntervalSeconds * 1000);
    try {
      const result = await session.run(argv, { allowFailure: true, timeoutMs: gate.probeTimeoutSeconds * 1000 });
      if (result.code === 0) return attempt;
      last = `exited ${result.code}${result.stdout.trim() ? `\n      stdout: ${excerpt(result.stdout)}` : ""}${result.stderr.trim() ? `\n      stderr: ${excerpt(result.stderr)}` : ""}`;
    } catch (err) {
      if (!(err instanceof RemoteCommandError)) throw err;
      last = `did not finish: ${excerpt(err.message.split("\n")[0] ?? "")}`;
    }
  }
  throw new GateProblem(`probe \`${shellQuote(argv)}\` failed ${gate.probeAttempts} time(s); last run ${last}`);
}

async function checkTarget(gate: HealthGateInputs, index: number): Promise<TargetReport> {
  const target = gate.targets[index]!;
  const counter = gate.counter;
  const counterSource = counter && COUNTER_SOURCES[target.kind];
  if (counter && !counterSource) {
    const known = Object.keys(COUNTER_SOURCES).join(", ");
    throw new GateProblem(`a counter check was asked for, but the gate cannot read counters of kind ${target.kind} (it can for: ${known})`);
  }
  if (counter && counterSource && !counterSource.names.includes(counter.name)) {
    throw new GateProblem(`${target.kind} has no counter "${counter.name}" (it has ${counterSource.names.join(", ")})`);
  }
  const session = await sessionFor(target.host, gate.credentials[index] ?? {});
  const started = Date.now();
  const first = await surveyTarget(session, target, counterSource?.map);
  const problems = assessTarget(target, gate.programIds[index], first);
  if (problems.length > 0) throw new GateProblem(problems.join("; "));
  const report: TargetReport = { host: target.label ?? hostLabel(target.host), programId: first.programId! };
  const before = counter ? readCounter(target, counter.name, first) : 0;
  if (target.probe) report.probeAttempts = await runProbe(session, target.probe, gate);
  const expected = await gateExpectations(session, target);
  if (expected.problems.length > 0) throw new GateProblem(`packet expectations missed: ${expected.problems.join("; ")}`);
  if (Object.keys(expected.results).length > 0) report.expectResults = expected.results;
  if (counter) {
    await sleep(Math.max(0, started + counter.windowSeconds * 1000 - Date.now()));
    const second = await surveyTarget(session, target, counterSource!.map);
    const after = readCounter(target, counter.name, second);
    if (after - before < counter.minIncrease) {
      throw new GateProblem(`counter ${counter.name} grew by ${after - before} in ${counter.windowSeconds} s (from ${before} to ${after}); the gate needs at least ${counter.minIncrease}`);
    }
    report.counter = { name: counter.name, before, after };
  }
  return report;
}

function describeWave(gate: HealthGateInputs): string {
  return `wave ${gate.wave}${gate.canary ? " (canary)" : ""} of fleet "${gate.fleet}"`;
}

/** Checks every host of the wave at once; throws one message naming every failing host. */
export async function runGate(gate: HealthGateInputs): Promise<HealthGateOutputs> {
  const results = await Promise.allSettled(gate.targets.map((_target, i) => checkTarget(gate, i)));
  const failures = results.flatMap((result, i) => (result.status === "rejected" ? [`  ${targetName(gate.targets[i]!)}: ${result.reason instanceof Error ? result.reason.message : String(result.reason)}`] : []));
  if (failures.length > 0) {
    const notReached = gate.notReached.length > 0 ? `Hosts of later waves were not touched and keep their previous version: ${gate.notReached.join(", ")}.` : "This was the last wave.";
    throw new Error(
      `health gate of ${describeWave(gate)} failed on ${failures.length} of ${gate.targets.length} host(s):\n${failures.join("\n")}\n` +
        `The rollout stopped here. ${notReached} Fix the spec or the host and run \`pulumi up\` again: the gate runs again.`,
    );
  }
  const reports = results.map((result) => (result as PromiseFulfilledResult<TargetReport>).value);
  console.log(`bpfleet: health gate of ${describeWave(gate)} passed on ${reports.map((r) => r.host).join(", ")}`);
  return { ...gate, checkedAt: new Date().toISOString(), reports };
}

export const healthGateKind: Kind<HealthGateInputs, HealthGateOutputs> = {
  kind: KIND,
  schema: healthGateSchema,
  replaceOn: ["fleet", "wave"],

  async create(inputs) {
    return { id: `${KIND}/${inputs.fleet}/wave-${inputs.wave}`, outs: await runGate(inputs) };
  },

  // Nothing of a gate lives on a host: what it saw when it last passed stands until the wave changes.
  async read(_id, olds) {
    const { checkedAt: _at, reports: _reports, ...inputs } = olds;
    return { outs: olds, inputs };
  },

  async update(_id, _olds, news) {
    return runGate(news);
  },

  async delete() {},
};
