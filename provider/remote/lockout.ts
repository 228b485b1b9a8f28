/**
 * The lockout guard's provider half, shared by every resource that can cut the
 * management SSH path: its two inputs, the proof that a brand-new login still
 * works, and the report when it does not. The host half (the revert armed
 * before the change) is revertTimer.ts.
 */
import { z } from "zod";
import { HostPreconditionError } from "./preflight";
import type { Credentials, HostConnection } from "./hostSchema";
import type { RevertTimer } from "./revertTimer";
import type { StepQueue } from "./shellSteps";
import { dropSession, freshLogin, freshSession, RemoteCommandError, sessionFor, type SshSession } from "./ssh";

/**
 * The lockout report. `at` and `step` name the proof's own command when it was
 * that command (not the login) that failed: the report's step is where the
 * proof failed, not the last of the checks that followed it.
 */
export class LockoutError extends HostPreconditionError {
  constructor(
    message: string,
    readonly at?: number,
    readonly step?: string,
  ) {
    super(message);
  }
}

export const DEFAULT_REVERT_SECONDS = 30;
/**
 * The shortest revert window check accepts. The proof is a brand-new SSH login
 * (TCP, key exchange, public-key auth, a channel, `true`) and gets half the window.
 * Through test/lab's latency proxy it took 0.75 s at 80 ms RTT, 2.5 s at 300 ms and
 * 4.9 s at 600 ms (a geostationary satellite hop; 8 round trips), and the disarm
 * follows (one command: 1.3 s at 600 ms). 10 s leaves that login 5 s plus what the apply left over: the least that does
 * not revert good changes over a slow link. Longer links want the default 30.
 */
export const MIN_REVERT_SECONDS = 10;
/** The longest revert window a guarded resource accepts (an hour). */
export const MAX_REVERT_SECONDS = 3600;

/** The guard's inputs, spread into a resource's schema. */
export const lockoutInputs = {
  /**
   * Before a change on the interface that carries the management SSH session, arm a
   * revert on the host; after the change, prove that a fresh SSH login works, then
   * disarm. If the login fails, the host undoes the change by itself. Default true.
   */
  lockoutGuard: z.boolean().default(true),
  /** Seconds after which an undisarmed revert undoes the change, 10-3600. Default 30. */
  lockoutRevertSeconds: z
    .number()
    .int("must be a whole number of seconds")
    .min(
      MIN_REVERT_SECONDS,
      `must be at least ${MIN_REVERT_SECONDS} seconds: the host undoes the change when the window ends, and within it the provider must apply the change, ` +
        `prove it with a fresh SSH login (given half the window) and disarm; a fresh login alone took 8 round trips, 4.9 s, through a 600 ms RTT link (satellite) in test/lab, ` +
        `so a shorter window reverts a good change over a slow link`,
    )
    .max(MAX_REVERT_SECONDS, `must be at most ${MAX_REVERT_SECONDS} seconds (an hour)`)
    .default(DEFAULT_REVERT_SECONDS),
};

/** The inputs every guarded resource has. */
export interface GuardedInputs {
  host: HostConnection;
  credentials: Credentials;
  interface: string;
  lockoutRevertSeconds: number;
}

/** What the guard needs to know about the change it watches. */
export interface GuardedChange {
  inputs: GuardedInputs;
  /** The interface that carries the management session, when not the resource's own (for the message). */
  iface?: string;
  /** What was changed, for the message: "the policy", "the mirror". */
  subject: string;
  /** What the user can do about it, one sentence. */
  advice?: string;
}

/** A fresh login's failure, or undefined when it worked. */
export async function loginWorks(host: HostConnection, credentials: Credentials, timeoutMs: number): Promise<Error | undefined> {
  try {
    await freshLogin({ ...host, connectTimeoutMs: timeoutMs }, credentials);
    return undefined;
  } catch (err) {
    return err as Error;
  }
}

/**
 * After a fresh login failed: waits for the host to come back (its revert timer
 * undoes the change meanwhile) and says only what it saw. A failed login does not
 * prove that the change cut the path (a link can go down, a switch can drop, at
 * the same moment), and the revert is only known to have run when the host says so.
 */
export async function reportLockout(session: SshSession, change: GuardedChange, failure: Error, timer?: RevertTimer): Promise<never> {
  const { host, credentials, lockoutRevertSeconds } = change.inputs;
  const peer = (await session.managementPeer().catch(() => undefined))?.replace(/^::ffff:(?=\d+\.)/i, "");
  dropSession(host, credentials);
  const started = Date.now();
  const deadline = started + (lockoutRevertSeconds + 20) * 1000;
  let back = false;
  while (!back && Date.now() < deadline) back = (await loginWorks(host, credentials, 5000)) === undefined;
  const waited = Math.round((Date.now() - started) / 1000);
  let outcome: string;
  if (!back) {
    outcome = `No fresh login worked in the ${waited} s that followed, so bpfleet could not see the host: its revert timer, armed before the change, undoes it ${lockoutRevertSeconds} s after arming if the host is running.`;
  } else {
    const fired = timer ? await sessionFor(host, credentials).then((s) => timer.fired(s)).catch(() => undefined) : undefined;
    outcome =
      `A fresh login worked again ${waited} s later` +
      (fired === true
        ? `, and the host's revert timer had fired: the change was undone.`
        : fired === false
          ? `, before the host's revert timer fired; it undoes the change ${lockoutRevertSeconds} s after arming.`
          : `; whether the host's revert timer has fired could not be read.`);
  }
  const failedStep = failure instanceof RemoteCommandError && failure.at !== undefined ? { at: failure.at, step: failure.step } : {};
  throw new LockoutError(
    `${session.label}: after the change, a fresh SSH login failed (${failure.message.split("\n")[0]}): either ${change.subject} cuts the management path ` +
      `(SSH from ${peer ?? "the provider"} over ${change.iface ?? change.inputs.interface}) or the host became unreachable for another reason at the same time. ` +
      `${outcome} Nothing was recorded as applied.${change.advice ? ` ${change.advice}` : ""}`,
    failedStep.at,
    failedStep.step,
  );
}

/**
 * Proves with a fresh login that the management path survived the change, then
 * disarms `timer`; when the login fails, leaves the timer to undo the change and
 * throws the report. Half the window for the login, so the disarm still comes in time.
 *
 * With `queue`, the fresh login does more than log in: it carries the disarm and,
 * behind it, the change's cleanup and read-back (the queue's next exec), so the
 * proof costs the host no exec of its own. The change stays armed until then: if
 * anything fails before, the host reverts it by itself, as when the provider is lost.
 */
export async function proveManagementPath(session: SshSession, timer: RevertTimer, change: GuardedChange, queue?: StepQueue): Promise<void> {
  const { host, credentials, lockoutRevertSeconds } = change.inputs;
  const timeoutMs = Math.min(host.connectTimeoutMs, (lockoutRevertSeconds * 1000) / 2);
  if (!queue) {
    const failure = await loginWorks(host, credentials, timeoutMs);
    if (failure) await reportLockout(session, change, failure, timer);
    return timer.disarm();
  }
  queue.add(timer.disarmStep());
  queue.carryOver(async () => {
    try {
      return await freshSession({ ...host, connectTimeoutMs: timeoutMs }, credentials);
    } catch (err) {
      return reportLockout(session, change, err as Error, timer);
    }
  });
}
