/**
 * A MaglevService bound to a MaglevBackendSet (issue 10): the service's inputs and state
 * carry the set's name, digest and count, not its backends. The backends come from the
 * version this deployment's set registered by digest or, when the set is not part of the
 * deployment (`up --target`), from the host's own applied record when it is that very
 * version (boundList.ts). The host records the backends it applied (appliedSets.ts, one
 * backendLines.ts line a backend), which `refresh` judges drift against. Every host given
 * the same version builds the same tables (table.ts computes them once per process).
 */
import { maglevExpectationProblems } from "../expect/schema";
import { boundContent, boundRefAsRead, unknownVersionError } from "../boundList";
import { readApplied } from "../remote/appliedSets";
import { HostPreconditionError } from "../remote/preflight";
import type { SshSession } from "../remote/ssh";
import { registeredContent } from "../sharedContent";
import { backendsOfLines, linesOnHost } from "./backendLines";
import { boundProblems, withBackendSet, type Backend, type Counter, type MaglevServiceInputs, type MaglevServiceOutputs } from "./schema";

/**
 * The declared inputs with a bound set's backends filled in, judged like inline backends
 * before anything changes, and the previous state with the backends it applied (for the
 * tables the host provably holds; undefined when that version is found nowhere, so every
 * slot is written).
 */
export async function resolveBackendSet(
  session: SshSession,
  kind: string,
  declared: MaglevServiceInputs,
  olds: MaglevServiceOutputs | undefined,
): Promise<{ inputs: MaglevServiceInputs; previous: MaglevServiceOutputs | undefined }> {
  const ref = declared.backendSet;
  const oldRef = olds?.backendSet;
  if (!ref && !oldRef) return { inputs: declared, previous: olds };
  // The host's record is read only for a version this deployment did not register.
  const unregistered = [ref, oldRef].some((r) => r && !registeredContent(r.digest));
  const recorded = unregistered ? await readApplied(session, kind, declared.name) : undefined;
  let inputs = declared;
  if (ref) {
    const lines = boundContent(ref, () => recorded);
    if (!lines) throw unknownVersionError(session.label, { subject: `load balancer ${declared.name}`, listKind: "MaglevBackendSet", ref, items: "backends", where: "", holder: "the host's applied record" });
    inputs = withBackendSet(declared, backendsOfLines(lines));
    const problems = [...boundProblems(inputs), ...maglevExpectationProblems(inputs.expect, inputs.vips, inputs.backends)];
    if (problems.length > 0) throw new HostPreconditionError(`${session.label}: load balancer ${declared.name}: ${problems.map((p) => p.reason).join("; ")}. Nothing was changed.`);
  }
  if (!olds || !oldRef) return { inputs, previous: olds };
  const applied = boundContent(oldRef, () => recorded);
  return { inputs, previous: applied ? { ...olds, backends: backendsOfLines(applied) } : undefined };
}

/** The backends a bound state stands for when the deployment registered its version (diff's pending check); undefined otherwise. */
export function registeredBackends(inputs: Pick<MaglevServiceInputs, "backendSet">): Record<string, Backend> | undefined {
  const lines = inputs.backendSet && registeredContent(inputs.backendSet.digest);
  return lines ? backendsOfLines(lines) : undefined;
}

/**
 * What a bound service's state keeps: the set's ref instead of its backends, and of the
 * per-backend outputs only what is this host's own (indexes: the next update plans from
 * them) and backends that got traffic. The set is held once per fleet; its backends
 * (with their MACs and a counter each) in every host's state would hold it once per host again.
 */
export function boundOutputs(outputs: MaglevServiceOutputs, declared: MaglevServiceInputs): MaglevServiceOutputs {
  const busy = (counters: Record<string, Counter>) => Object.fromEntries(Object.entries(counters).filter(([, c]) => c.packets > 0));
  return { ...outputs, backends: declared.backends, backendMacs: {}, counters: { ...outputs.counters, backends: busy(outputs.counters.backends) } };
}

/** The backends refresh judges a bound service's host against: what it records as applied, else the version the state names when registered. */
export async function appliedBackendsOf(session: SshSession, kind: string, olds: MaglevServiceOutputs): Promise<{ recorded: string[] | undefined; backends: Record<string, Backend> }> {
  const recorded = await readApplied(session, kind, olds.name);
  return { recorded, backends: recorded ? backendsOfLines(recorded) : (registeredBackends(olds) ?? {}) };
}

/**
 * A bound service as `refresh` reports it: no backends of its own, the set's ref as the
 * host recorded it (the records' own when it records nothing), and the backends the host
 * holds beyond that record or lacks (nothing else).
 */
export function boundAsRead(observed: MaglevServiceOutputs, declared: MaglevServiceOutputs, recorded: readonly string[] | undefined): MaglevServiceOutputs {
  const read = boundRefAsRead(declared.backendSet!, linesOnHost(Object.keys(observed.backends), recorded ?? []), recorded);
  const { backendDrift: _dropped, ...rest } = boundOutputs(observed, declared);
  return { ...rest, backendSet: read.ref, ...(read.drift ? { backendDrift: read.drift } : {}) };
}
