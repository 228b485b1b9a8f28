/**
 * What `preview` says about expectations (issue 14): each kind's check() judges
 * its expectations against the planned entries with the evaluators (evaluate.ts),
 * without a host, and prints those the plan would miss. It never fails the
 * check: the model leaves out what only the host knows (other members of an XDP
 * chain, TC filters before the policy, the management failsafe's peer, live flows
 * and NAT records, whether a backend's next hop resolves), so the host-side run
 * during `up` stays the proof, and a predicted miss is a warning to read first.
 */
import { UNKNOWN } from "../dynamicAdapter";
import type { MaglevServiceInputs } from "../maglev/schema";
import type { MaglevTable } from "../maglev/table";
import { rulesOf, type TcPolicyInputs } from "../tcPolicy/schema";
import { evaluateFirewall, evaluateMaglev, evaluateTcPolicy, type Evaluation } from "./evaluate";
import type { Expectation, ExpectKind } from "./grammar";
import { expectationText, outcomeText } from "./grammar";
import { expectationsOf } from "./schema";

/** Each expectation's evaluation against the planned inputs of its resource. */
export function previewEvaluations(kind: ExpectKind, inputs: Record<string, unknown>): Map<Expectation, Evaluation> {
  const record = (inputs.expect ?? {}) as Record<string, string>;
  const out = new Map<Expectation, Evaluation>();
  if (Object.keys(record).length === 0) return out;
  const expectations = expectationsOf(kind, record);
  if (kind === "xdpFirewall") {
    for (const e of expectations) out.set(e, evaluateFirewall(inputs.deny as Record<string, unknown>, e));
  } else if (kind === "tcPolicy") {
    const policy = inputs as unknown as TcPolicyInputs;
    const model = { rules: rulesOf(policy), ingressDefault: policy.ingress.default, egressDefault: policy.egress.default, stateful: policy.stateful };
    for (const e of expectations) out.set(e, evaluateTcPolicy(model, e));
  } else {
    const tables = new Map<string, MaglevTable>();
    for (const e of expectations) out.set(e, evaluateMaglev(inputs as unknown as MaglevServiceInputs, e, tables));
  }
  return out;
}

/** The preview's note on expectations the planned inputs would miss, or undefined when none would. */
export function previewNote(kind: ExpectKind, inputs: Record<string, unknown>): string | undefined {
  const missed = [...previewEvaluations(kind, inputs)].filter(([, v]) => v.met === false);
  if (missed.length === 0) return undefined;
  const lines = missed.map(([e, v]) => `  ${expectationText(e)}: wanted ${outcomeText(e.outcome)}, the plan gives ${v.got} (${v.reason})`);
  return `bpfleet: ${missed.length} packet expectation(s) would be missed by the planned entries (judged without the host; \`up\` proves them on it and reverts a miss):\n${lines.join("\n")}`;
}

/**
 * A check's result, after printing the preview's note (console.log reaches the
 * user from the provider process) when every input the evaluation reads is known.
 */
export function withPreviewNote<R extends { inputs?: Record<string, unknown>; failures?: unknown[] }>(kind: ExpectKind, result: R, reads: readonly string[]): R {
  if (!result.inputs || result.failures?.length) return result;
  if (reads.some((key) => JSON.stringify(result.inputs![key] ?? null).includes(UNKNOWN))) return result;
  const note = previewNote(kind, result.inputs);
  if (note) console.log(note);
  return result;
}
