/**
 * The lockout guard's provider half, shared by every resource that can cut the
 * management SSH path: its two inputs, the proof that a brand-new login still
 * works, and the report when it does not. The host half (the revert armed
 * before the change) is revertTimer.ts.
 */
import { z } from "zod";
import { HostPreconditionError } from "./bpfHost";
import type { Credentials, HostConnection } from "./hostSchema";
import type { RevertTimer } from "./revertTimer";
import { dropSession, freshLogin, type SshSession } from "./ssh";

export const DEFAULT_REVERT_SECONDS = 30;

/** The guard's inputs, spread into a resource's schema. */
export const lockoutInputs = {
  /**
   * Before a change on the interface that carries the management SSH session, arm a
   * revert on the host; after the change, prove that a fresh SSH login works, then
   * disarm. If the login fails, the host undoes the change by itself. Default true.
   */
  lockoutGuard: z.boolean().default(true),
  /** Seconds after which an undisarmed revert undoes the change, 5-3600. Default 30. */
  lockoutRevertSeconds: z
    .number()
    .int("must be a whole number of seconds")
    .min(5, "must be at least 5 seconds (a fresh SSH login has to fit in half the window)")
    .max(3600, "must be at most 3600 seconds (an hour)")
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

/** After a fresh login failed: waits for the host to come back by itself (its revert timer) and says what happened. */
export async function reportLockout(session: SshSession, change: GuardedChange, failure: Error): Promise<never> {
  const { host, credentials, lockoutRevertSeconds } = change.inputs;
  const peer = (await session.managementPeer().catch(() => undefined))?.replace(/^::ffff:(?=\d+\.)/i, "");
  dropSession(host, credentials);
  const deadline = Date.now() + (lockoutRevertSeconds + 20) * 1000;
  let back = false;
  while (!back && Date.now() < deadline) back = (await loginWorks(host, credentials, 5000)) === undefined;
  throw new HostPreconditionError(
    `${session.label}: after the change, a fresh SSH login failed (${failure.message.split("\n")[0]}): ${change.subject} cuts the management path ` +
      `(SSH from ${peer ?? "the provider"} over ${change.iface ?? change.inputs.interface}). The revert timer armed before the change ` +
      (back ? `undid it and the host is reachable again.` : `undoes it within ${lockoutRevertSeconds} s; the host was not reachable again yet.`) +
      ` Nothing was recorded as applied.${change.advice ? ` ${change.advice}` : ""}`,
  );
}

/**
 * Proves with a fresh login that the management path survived the change, then
 * disarms `timer`; when the login fails, leaves the timer to undo the change and
 * throws the report. Half the window for the login, so the disarm still comes in time.
 */
export async function proveManagementPath(session: SshSession, timer: RevertTimer, change: GuardedChange): Promise<void> {
  const { host, credentials, lockoutRevertSeconds } = change.inputs;
  const failure = await loginWorks(host, credentials, Math.min(host.connectTimeoutMs, (lockoutRevertSeconds * 1000) / 2));
  if (failure) await reportLockout(session, change, failure);
  await timer.disarm();
}
