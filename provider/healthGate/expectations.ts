/**
 * A gate target's packet expectations (issue 14): run through probe copies of
 * what is attached on the host, exactly as the resource's own create/update runs
 * them (provider/expect/hostRun.ts), but read-only: the gate reverts nothing, it
 * stops the rollout. An XDP target is probed through its interface's chain when
 * its program sits in one.
 */
import { expectationsOf } from "../expect/schema";
import { runExpectations, tcProbeTarget, xdpProbeTarget, type ExpectationResult, type ProbeTarget } from "../expect/hostRun";
import { packagedObject } from "../objects";
import { uploadObject } from "../remote/objectUpload";
import { pinLayout } from "../remote/pins";
import { surveyResource } from "../remote/resourceSurvey";
import type { SshSession } from "../remote/ssh";
import { dispatcherDir } from "../remote/xdpHook";
import { GATE_EXPECT_KINDS, type GateTarget } from "./schema";

const XDP_OBJECTS: Readonly<Record<string, string>> = { "xdp-firewall": "xdp_firewall", maglev: "xdp_maglev" };

/** The target's expectations and their results; the problems, one line each, for the ones missed. */
export async function gateExpectations(session: SshSession, target: GateTarget): Promise<{ results: Record<string, ExpectationResult>; problems: string[] }> {
  const record = target.expect as Record<string, string> | undefined;
  const kind = GATE_EXPECT_KINDS[target.kind];
  if (!record || Object.keys(record).length === 0 || !kind) return { results: {}, problems: [] };
  const expectations = expectationsOf(kind, record);
  const backends = expectations.filter((e) => "backend" in e.outcome);
  if (backends.length > 0) {
    return { results: {}, problems: [`the gate proves pass and drop only; a backend expectation is the MaglevService's own (it runs on every update): ${Object.keys(record).filter((t) => / backend /.test(t)).join("; ")}`] };
  }
  if (!target.hook) return { results: {}, problems: ["its expectations need the resource attached (the target has no hook)"] };
  const layout = pinLayout(target.kind, target.name);
  let probe: ProbeTarget;
  if (target.hook.type === "xdp") {
    const object = XDP_OBJECTS[target.kind]!;
    const survey = await surveyResource(session, target.hook.interface, layout, packagedObject(object), dispatcherDir(target.hook.interface));
    const id = survey.program?.id;
    const slot = [...survey.chain.slots].find(([, programId]) => programId === id)?.[0];
    probe = xdpProbeTarget(kind, object, layout, { iface: target.hook.interface, mode: "auto", chainPriority: slot }, survey.chain, []);
  } else {
    probe = tcProbeTarget(layout, target.hook.interface);
  }
  // The copies load this version's objects: present already where its resources run, uploaded otherwise.
  for (const object of new Set([probe.dispatcher, ...probe.members.map((m) => m.object)])) if (object) await uploadObject(session, object);
  const results = await runExpectations(session, probe, expectations);
  const problems = Object.entries(results)
    .filter(([, r]) => !r.met)
    .map(([text, r]) => `expectation "${text}" wanted ${r.wanted}, got ${r.got}`);
  return { results, problems };
}
