/**
 * The program side of a guarded change for a kind on the XDP hook (XdpFirewall,
 * MaglevService): load the object when it must be, swap it in where the
 * HookPlan wants it, roll back or clean up after. The map side is the kind's.
 */
import { uploadObject, type LocalObject } from "./objectUpload";
import type { PinLayout } from "./pins";
import { preflight, preflightInSurvey, requireProgramType } from "./preflight";
import { loadProgram } from "./programLoad";
import { requireInterface, surveyStep, type ResourceSurvey } from "./resourceSurvey";
import { commandStep, runSteps, type ShellStep, type StepQueue } from "./shellSteps";
import { ignoreFailure, swapInCommands } from "./guardedChange";
import { claimHook, dispatcherDir, HookPlan, type HookChange, type XdpPlacement } from "./xdpHook";
import type { ExecResult, SshSession } from "./ssh";

/** Steps a kind reads in the survey's own exec: `first` before the preflight (a settle), `then` after the survey. */
export interface SurveyExtras {
  first?: readonly ShellStep[];
  then?: readonly ShellStep[];
}

/**
 * The host's side of an XDP change, refused where it cannot be made: the tools
 * and program type, the interface, the hook (another program there is never
 * replaced). `refuse` runs the kind's own refusals once the interface is known
 * (given the extras' results).
 * The preflight, the survey and the kind's `extras` go to the host in one exec;
 * `results` holds the extras' results (undefined: it did not run), in order.
 */
export async function surveyXdp(
  session: SshSession,
  layout: PinLayout,
  object: LocalObject,
  placement: XdpPlacement,
  attached: boolean,
  what: string,
  refuse?: (results: (ExecResult | undefined)[]) => Promise<void>,
  extras: SurveyExtras = {},
): Promise<{ survey: ResourceSurvey; hook: HookPlan; results: (ExecResult | undefined)[] }> {
  const first = extras.first ?? [];
  const then = extras.then ?? [];
  const probe = preflightInSurvey(session);
  const surveying = await surveyStep(session, placement.iface, layout, object, dispatcherDir(placement.iface));
  const steps = [...first, ...(probe ? [probe.step] : []), surveying.step, ...then];
  const ran = await runSteps(session, steps);
  const at = (step: ShellStep) => ran[steps.indexOf(step)];
  if (probe) await probe.settle(at(probe.step));
  else await preflight(session);
  await requireProgramType(session, "xdp");
  const surveyed = at(surveying.step);
  if (!surveyed) throw new Error(`${session.label}: the survey did not run`);
  const survey = surveying.parse(surveyed);
  requireInterface(session, survey, placement.iface);
  const results = [...first, ...then].map(at);
  await refuse?.(results);
  const hook = new HookPlan(placement, attached, survey.xdp, survey.chain, layout, survey.program?.id);
  if (attached) claimHook(session.label, what, placement, survey.xdp, survey.chain, hook.position);
  return { survey, hook, results };
}

export class XdpProgramChange {
  /** The freshly loaded program's pin, once staged. */
  newProgram: string | undefined;
  readonly hadPins: boolean;
  readonly ownIds: number[];
  readonly swapsProgram: boolean;
  readonly change: HookChange;

  constructor(
    private readonly session: SshSession,
    private readonly layout: PinLayout,
    readonly hook: HookPlan,
    programId: number | undefined,
    readonly needsLoad: boolean,
  ) {
    this.hadPins = programId !== undefined;
    this.ownIds = programId !== undefined ? [programId] : [];
    this.swapsProgram = needsLoad && this.hadPins;
    this.change = hook.change(this.hadPins, needsLoad);
  }

  /** The dispatcher when the placement needs one, and the new program, loaded against the pinned maps. */
  async stage(object: LocalObject, objectPresent: boolean, dispatcher: () => LocalObject): Promise<void> {
    await this.hook.prepare(this.session, () => uploadObject(this.session, dispatcher()));
    if (this.needsLoad) this.newProgram = await loadProgram(this.session, this.layout, await uploadObject(this.session, object, objectPresent), "xdp", this.hook.sharedChain);
  }

  /**
   * Puts the program where the placement wants it, in one round trip; with `queue`,
   * the commands wait there for the exec that carries the change's map writes.
   */
  async install(queue?: StepQueue): Promise<void> {
    let commands: string[][] = [];
    if (this.newProgram) commands = [...this.hook.installCommands(this.newProgram, this.ownIds), ...swapInCommands(this.layout.program, this.newProgram, this.swapsProgram)];
    else if (!this.hook.inPlace) commands = this.hook.installCommands(this.layout.program, this.ownIds);
    if (commands.length === 0) return;
    if (queue) queue.add(...commands.map((c) => commandStep(c)));
    else await this.session.run(commands);
  }

  /**
   * After a failure: a fresh resource is taken off the hook and its pins go (the
   * revert timer's own steps, `freshRevert`); an existing one keeps its program
   * (the staged one is dropped).
   */
  async rollback(freshRevert: string): Promise<void> {
    if (!this.hadPins) await this.session.run(["sh", "-c", freshRevert]).catch(ignoreFailure);
    else if (this.newProgram) await this.session.run(["rm", "-f", this.newProgram]).catch(ignoreFailure);
  }

  /**
   * After the proof: leave the slot the program ran in before, and drop the previous
   * program; with `queue`, in the exec that carries the rest of the change's cleanup.
   */
  async cleanup(queue?: StepQueue): Promise<void> {
    const commands = [...this.hook.cleanupCommands(this.ownIds), ...(this.swapsProgram ? [["rm", "-f", `${this.layout.program}_old`]] : [])];
    if (queue) queue.add(...commands.map((c) => commandStep(c)));
    else await runSteps(this.session, commands.map((c) => commandStep(c)));
  }
}
