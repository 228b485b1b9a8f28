/**
 * The one shape of every change a kind makes to a host (DESIGN.md, "Lockout
 * guard"): stage what carries no risk, arm the host's revert timer when the
 * change could cut the management path, apply, and on any failure disarm and
 * roll back to the state before; once applied, prove with a fresh login that
 * the path survived, and only then clean up what the revert would have needed.
 * A kind says what each step is; the order, the disarm and the proof are here.
 */
import { proveManagementPath, type GuardedChange } from "./lockout";
import { armRevert, type RevertTimer } from "./revertTimer";
import type { StepQueue } from "./shellSteps";
import type { SshSession } from "./ssh";
import { ExpectationsMissedError, type ExpectationCheck } from "../expect/hostRun";

export interface GuardedSteps {
  /** Loads and stages before the revert is armed: what it does is not live yet. */
  stage?(): Promise<void>;
  /**
   * Present when the change could cut the management path: the script the host
   * runs by itself unless a fresh login disarms it in time, and what the
   * report says when that login fails.
   */
  guard?: {
    revertScript(): string;
    seconds: number;
    proof: GuardedChange;
    /**
     * false when the timer is armed only for `expectations` (the change is not on the
     * management path): no fresh login is needed to disarm it. Default true.
     */
    proveLogin?: boolean;
  };
  /** Makes the change live. */
  apply(): Promise<void>;
  /**
   * After a failure of stage or apply (and the disarm): puts the host back as it
   * was. Its own failure is not reported over the one that caused it.
   */
  rollback(): Promise<void>;
  /** After the proof: drops what only a revert needed (the previous program, a slot left). */
  cleanup?(): Promise<void>;
  /**
   * Packet expectations (provider/expect/hostRun.ts), proven after apply while the
   * revert is armed (the kind arms `guard` whenever it has some): any miss runs the
   * revert at once, as a lockout would, and fails with the table.
   */
  expectations?: ExpectationCheck;
  /**
   * What the armed revert does not put back and the kind can, run once the revert
   * fired because an expectation was missed: a balancer's revert swaps only its
   * program and hook back, and this restores the tables the change wrote, so the host
   * is as before (a lockout revert cannot do this: the provider has lost the host).
   */
  afterRevert?(): Promise<void>;
  /**
   * Where the kind queues steps nobody waits for (shellSteps.ts): the revert's arm
   * waits there too, so the exec that carries the change arms it first; the change is
   * flushed before anything proves it, and the disarm is queued in front of the
   * cleanup's steps, which then run only when it succeeded. The kind flushes what is
   * left (its read-back carries it). Without a queue, each step is its own exec.
   */
  queue?: StepQueue;
}

/** Runs `steps` in the guarded order; throws the step's error after rolling back, or the lockout report. */
export async function guardedChange(session: SshSession, steps: GuardedSteps): Promise<void> {
  const { guard, queue } = steps;
  let timer: RevertTimer | undefined;
  try {
    await steps.stage?.();
    await steps.expectations?.prepare();
    if (guard) timer = await armRevert(session, guard.revertScript(), guard.seconds, queue);
    await steps.apply();
    await queue?.flush();
  } catch (err) {
    queue?.discard();
    await timer?.disarm().catch(ignoreFailure);
    await steps.rollback().catch(ignoreFailure);
    throw err;
  }
  if (timer && steps.expectations) await proveExpectations(session, timer, steps.expectations, steps.afterRevert);
  if (guard && timer) {
    if (guard.proveLogin !== false) await proveManagementPath(session, timer, guard.proof, queue);
    else if (queue) queue.add(timer.disarmStep());
    else await timer.disarm();
  }
  await steps.cleanup?.();
}

/**
 * Runs the expectations of a change that is live under `timer`; when one is
 * missed, or the probe cannot run (nothing would then be proven), the host
 * reverts at once and the change fails.
 */
async function proveExpectations(session: SshSession, timer: RevertTimer, expectations: ExpectationCheck, afterRevert: (() => Promise<void>) | undefined): Promise<void> {
  const revert = async (): Promise<{ log: string; note: string }> => {
    const log = await timer.fireNow().catch((e: Error) => `(the revert could not be run now: ${e.message}; the timer runs it in ${timer.seconds} s)`);
    const note = await afterRevert?.().then(
      () => "",
      (e: Error) => ` Putting back what the revert does not cover failed (${e.message.split("\n")[0]}); the next \`pulumi up\` rewrites it.`,
    );
    return { log, note: note ?? "" };
  };
  let results;
  try {
    results = await expectations.run();
  } catch (err) {
    const { log, note } = await revert();
    throw new Error(`${session.label}: the packet expectations could not be run (${(err as Error).message.split("\n")[0]}), so the host reverted the change at once. Revert output: ${log.trim() || "(none)"}. Nothing was recorded as applied.${note}`);
  }
  if (Object.values(results).every((r) => r.met)) return;
  const { log, note } = await revert();
  const missed = new ExpectationsMissedError(session.label, results, log);
  if (note) missed.message += `\n${note.trim()}`;
  throw missed;
}

/** The previous program stays pinned as <pin>_old until the change is proven: the commands that swap `staged` in. */
export function swapInCommands(pin: string, staged: string, replacesPrevious: boolean): string[][] {
  return [...(replacesPrevious ? [["mv", "-f", pin, `${pin}_old`]] : []), ["mv", "-f", staged, pin]];
}

/** Ignores a rollback step's failure, so that the next step still runs. */
export const ignoreFailure = (): undefined => undefined;
