/**
 * The lockout guard's remote half: a revert armed on the host before a change
 * that could cut the management path, disarmed only after a fresh SSH login has
 * proved the path still works. If the provider never comes back, the host undoes
 * the change by itself. The host's side is sh/revert-arm.sh, revert-disarm.sh and
 * revert-settle.sh.
 */
import { randomBytes } from "node:crypto";
import { RUN_DIR } from "./hostDirs";
import { runShellScript } from "./shellScript";
import { scriptStep, type ShellStep, type StepQueue } from "./shellSteps";
import { currentOperation, type ExecResult, type SshSession } from "./ssh";

const GUARD_DIR = `${RUN_DIR}/guards`;

/** Fired guards whose log and marker are kept for the provider (or a person) to read; older ones go. */
export const KEPT_FIRED_GUARDS = 8;
/** The tail of a revert's output kept in its log. */
export const GUARD_LOG_BYTES = 65536;

export class RevertedError extends Error {}

export interface RevertTimer {
  readonly token: string;
  readonly seconds: number;
  /** Cancels the revert; throws RevertedError when the host had already reverted. */
  disarm(): Promise<void>;
  /** disarm as a step of a larger exec: its failure is disarm's error, and the steps after it do not run. */
  disarmStep(): ShellStep;
  /** Whether the host ran the revert (its marker is there), asked over `session`. */
  fired(session: SshSession): Promise<boolean>;
  /**
   * Runs the revert now, as the host would when the time is up (a change that missed
   * its packet expectations): returns its output. Throws when it had fired already
   * (RevertedError) or was disarmed.
   */
  fireNow(): Promise<string>;
}

/**
 * Arms `revertScript` (built from quoted commands) to run on the host after
 * `seconds`. With `queue`, the arm waits there for the exec that carries the change
 * (the host then arms it just before the change, in the same round trip); the timer
 * knows when that exec never ran it, and its disarm then has nothing to do.
 */
export async function armRevert(session: SshSession, revertScript: string, seconds: number, queue?: StepQueue): Promise<RevertTimer> {
  const token = `${Date.now()}-${randomBytes(6).toString("hex")}`;
  let neverRan = false;
  // Until it is seen disarmed (or never armed), a failure of the operation must say whether it is pending.
  const unsettled = currentOperation()?.unsettledTimers;
  unsettled?.push({ token, seconds });
  const settled = () => {
    const i = unsettled?.findIndex((t) => t.token === token) ?? -1;
    if (i >= 0) unsettled!.splice(i, 1);
  };
  const arm = scriptStep(
    "revert-arm",
    { guards: GUARD_DIR, token, seconds: String(seconds), keep: String(KEPT_FIRED_GUARDS), log_bytes: String(GUARD_LOG_BYTES) },
    { stdin: revertScript, onResult: (result) => (neverRan = result === undefined) },
  );
  if (queue) queue.add(arm);
  else await runShellScript(session, "revert-arm", arm.args, { stdin: revertScript });
  const disarmFailure = (result: ExecResult): Error | undefined => {
    if (result.code === 7) {
      return new RevertedError(`${session.label}: the revert timer fired before it could be disarmed, so the host undid the change (raise lockoutRevertSeconds if the change is slow). Revert log: ${result.stderr.trim() || "(empty)"}`);
    }
    if (result.code !== 0) return new Error(`${session.label}: disarming the revert timer failed: ${result.stderr.trim()}`);
    settled();
    return undefined;
  };
  const disarmStep = () => scriptStep("revert-disarm", { guards: GUARD_DIR, token }, { failure: disarmFailure });
  return {
    token,
    seconds,
    async disarm() {
      if (neverRan) return void settled();
      const failure = disarmFailure(await runShellScript(session, "revert-disarm", disarmStep().args, { allowFailure: true }));
      if (failure) throw failure;
    },
    disarmStep,
    async fireNow() {
      const result = await runShellScript(session, "revert-now", { guards: GUARD_DIR, token, log_bytes: String(GUARD_LOG_BYTES) }, { allowFailure: true });
      if (result.code === 0) {
        settled();
        return result.stdout;
      }
      if (result.code === 7) throw new RevertedError(`${session.label}: the revert timer had fired already, so the host undid the change. Revert log: ${result.stderr.trim() || "(empty)"}`);
      throw new Error(`${session.label}: running the revert now failed (exit ${result.code}): ${result.stderr.trim()}`);
    },
    async fired(over: SshSession) {
      return (await over.run(["test", "-e", `${GUARD_DIR}/${token}.fired`], { allowFailure: true })).code === 0;
    },
  };
}

/**
 * Before a resource is changed again: a revert armed by an earlier run that never came
 * back (its SSH session was cut) would otherwise fire later and undo whatever this run
 * applies, leaving the host at the old state while the stack records the new one. It
 * does now what it would have done anyway (restore the state before that run), so
 * this run starts from a state the stack knows. Returns how many reverts ran.
 */
export async function settlePendingReverts(session: SshSession, pinDir: string): Promise<number> {
  const result = await runShellScript(session, "revert-settle", { guards: GUARD_DIR, pin_dir: pinDir });
  return Number(result.stdout.trim()) || 0;
}

/** settlePendingReverts as the first step of a larger exec (a survey's). */
export function settleStep(pinDir: string): ShellStep {
  return scriptStep("revert-settle", { guards: GUARD_DIR, pin_dir: pinDir });
}

/**
 * Which of `tokens` are still pending on the host (armed, neither fired nor disarmed),
 * in one exec: what a failed operation's report says about the timers it left.
 */
export async function pendingTimers(session: SshSession, tokens: readonly string[]): Promise<string[]> {
  if (tokens.length === 0) return [];
  const result = await session.run(["sh", "-c", 'g=$1; shift; for t; do [ -e "$g/$t.sh" ] && echo "$t"; done; true', "pending", GUARD_DIR, ...tokens]);
  return result.stdout.split("\n").filter((t) => tokens.includes(t));
}
