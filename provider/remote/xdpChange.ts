/**
 * The program side of a guarded change for a kind on the XDP hook (XdpFirewall,
 * MaglevService): load the object when it must be, swap it in where the
 * HookPlan wants it, roll back or clean up after. The map side is the kind's.
 */
import { uploadObject, type LocalObject } from "./objectUpload";
import type { PinLayout } from "./pins";
import { preflight, requireProgramType } from "./preflight";
import { loadProgram } from "./programLoad";
import { requireInterface, surveyResource, type ResourceSurvey } from "./resourceSurvey";
import { ignoreFailure, swapInCommands } from "./guardedChange";
import { claimHook, dispatcherDir, HookPlan, type HookChange, type XdpPlacement } from "./xdpHook";
import type { SshSession } from "./ssh";

/**
 * The host's side of an XDP change, refused where it cannot be made: the tools
 * and program type, the interface, the hook (another program there is never
 * replaced). `refuse` runs the kind's own refusals once the interface is known.
 */
export async function surveyXdp(
  session: SshSession,
  layout: PinLayout,
  object: LocalObject,
  placement: XdpPlacement,
  attached: boolean,
  what: string,
  refuse?: () => Promise<void>,
): Promise<{ survey: ResourceSurvey; hook: HookPlan }> {
  await preflight(session);
  await requireProgramType(session, "xdp");
  const survey = await surveyResource(session, placement.iface, layout, object, dispatcherDir(placement.iface));
  requireInterface(session, survey, placement.iface);
  await refuse?.();
  const hook = new HookPlan(placement, attached, survey.xdp, survey.chain, layout, survey.program?.id);
  if (attached) claimHook(session.label, what, placement, survey.xdp, survey.chain, hook.position);
  return { survey, hook };
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

  /** Puts the program where the placement wants it, in one round trip. */
  async install(): Promise<void> {
    if (this.newProgram) {
      await this.session.run([...this.hook.installCommands(this.newProgram, this.ownIds), ...swapInCommands(this.layout.program, this.newProgram, this.swapsProgram)]);
    } else if (!this.hook.inPlace) {
      await this.session.run(this.hook.installCommands(this.layout.program, this.ownIds));
    }
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

  /** After the proof: leave the slot the program ran in before, and drop the previous program. */
  async cleanup(): Promise<void> {
    const cleanup = this.hook.cleanupCommands(this.ownIds);
    if (cleanup.length > 0) await this.session.run(cleanup);
    if (this.swapsProgram) await this.session.run(["rm", "-f", `${this.layout.program}_old`]);
  }
}
