/**
 * Every host-touching operation of a kind (create, read, update, delete) as the
 * engine runs it: counted step by step (provider/remote/ssh.ts withOperation),
 * and, when it fails, reported in one line naming the resource, the operation,
 * the step and the cause, followed by what the host was seen to hold afterwards:
 * exactly as before, already the new configuration, or neither. That last part is
 * observed (the resource is read back over a fresh login), never assumed.
 */
import type { Kind } from "./dynamicAdapter";
import { HostPreconditionError } from "./remote/preflight";
import { hostLabel, type HostConnection } from "./remote/hostSchema";
import { LockoutError } from "./remote/lockout";
import { pendingTimers, RevertedError } from "./remote/revertTimer";
import { currentOperation, RemoteCommandError, sessionFor, withOperation, type Operation } from "./remote/ssh";
import type { Credentials } from "./remote/hostSchema";

/** How long the read-back after a failure may take before the report says it could not look. */
const CHECK_AFTER_FAILURE_MS = 20_000;

export class OperationError extends Error {
  constructor(
    message: string,
    /** "as before" | "new" | "neither" | "gone" | "unknown" | "reverting" (a pending revert timer undoes what it holds): what the host held afterwards. */
    readonly hostState: string,
    readonly original: unknown,
  ) {
    super(message);
  }
}

function canonical(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonical).join(",")}]`;
  if (value && typeof value === "object") {
    const record = value as Record<string, unknown>;
    return `{${Object.keys(record).sort().filter((k) => record[k] !== undefined).map((k) => `${JSON.stringify(k)}:${canonical(record[k])}`).join(",")}}`;
  }
  return JSON.stringify(value);
}

/** Schema keys where a and b differ. */
function differing(kind: Kind<object, object>, a: object, b: object): string[] {
  return Object.keys(kind.schema.shape).filter((key) => canonical((a as Record<string, unknown>)[key]) !== canonical((b as Record<string, unknown>)[key]));
}

function idOf(kind: Kind<object, object>, inputs: object): string {
  const placed = inputs as { host?: HostConnection; name?: string };
  return placed.host && placed.name ? `${hostLabel(placed.host)}/${kind.kind}/${placed.name}` : kind.kind;
}

function withTimeout<T>(promise: Promise<T>, ms: number): Promise<T> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no answer within ${ms / 1000} s`)), ms);
    promise.then(
      (v) => (clearTimeout(timer), resolve(v)),
      (e) => (clearTimeout(timer), reject(e)),
    );
  });
}

/**
 * Reads the resource back after a failed operation and says what the host holds,
 * compared with `before` (undefined: nothing existed) and `after` (undefined: the
 * resource was being deleted).
 */
async function observeAfterFailure(kind: Kind<object, object>, id: string, before: object | undefined, after: object | undefined): Promise<{ state: string; text: string }> {
  const probe = (before ?? after)!;
  let observed;
  try {
    observed = await withTimeout(withOperation(kind.kind, "check", () => kind.read(id, probe as never)), CHECK_AFTER_FAILURE_MS);
  } catch (err) {
    return { state: "unknown", text: `Reading the host back afterwards failed too (${String((err as Error).message).split("\n")[0]}), so what it holds is not known; the next \`pulumi up\` compares it again.` };
  }
  if (!observed) {
    if (!before) return { state: "as before", text: "Nothing of it is on the host: the host is as before." };
    return { state: after ? "neither" : "gone", text: after ? "It is gone from the host: the next `pulumi up` recreates it." : "It is gone from the host, as the delete wanted." };
  }
  const fromBefore = before ? differing(kind, observed.inputs, before) : ["(it exists)"];
  // What the inputs cannot show (a program off its hook, tables changed): what an
  // update would now have to fix that it did not have to before.
  const wasPending = new Set(before ? (kind.pendingChanges?.(before, before) ?? []) : []);
  const nowPending = before ? (kind.pendingChanges?.(observed.outs, before) ?? []).filter((p) => !wasPending.has(p)) : [];
  if (before && fromBefore.length === 0 && nowPending.length > 0) {
    const changed = nowPending.join("; ");
    return after
      ? { state: "neither", text: `The host holds neither the previous nor the new configuration (${changed}); the next \`pulumi up\` converges it.` }
      : { state: "neither", text: `It is still on the host, changed (${changed}); the next \`pulumi up\` (or destroy) deletes it again.` };
  }
  if (before && fromBefore.length === 0) return { state: "as before", text: "The host holds exactly the previous configuration: it is as before." };
  if (after) {
    const fromAfter = differing(kind, observed.inputs, after);
    const changing = before ? differing(kind, before, after) : Object.keys(kind.schema.shape);
    if (fromAfter.filter((key) => changing.includes(key)).length === 0) return { state: "new", text: "The host already holds the new configuration." };
    return { state: "neither", text: `The host holds neither the previous nor the new configuration (it differs in ${fromAfter.filter((k) => changing.includes(k)).join(", ")}); the next \`pulumi up\` converges it.` };
  }
  return { state: "neither", text: `It is still on the host, changed in ${fromBefore.join(", ")}; the next \`pulumi up\` (or destroy) deletes it again.` };
}

/**
 * What the host was seen to hold, and whether a revert timer the failed operation
 * armed is still pending there (its disarm never came, or its answer was lost): the
 * host then holds what was read only until the timer fires, and goes back to the
 * state before the change (state "reverting"). Asked of the host, not assumed.
 */
async function withTimers(seen: { state: string; text: string }, operation: Operation | undefined, inputs: object | undefined, existed: boolean): Promise<{ state: string; text: string }> {
  const timers = operation?.unsettledTimers ?? [];
  const placed = inputs as { host?: HostConnection; credentials?: Credentials } | undefined;
  if (timers.length === 0 || !placed?.host || !placed.credentials) return seen;
  let pending: string[];
  try {
    const session = await withTimeout(sessionFor(placed.host, placed.credentials), CHECK_AFTER_FAILURE_MS);
    pending = await withTimeout(pendingTimers(session, timers.map((t) => t.token)), CHECK_AFTER_FAILURE_MS);
  } catch (err) {
    return { state: seen.state, text: `${seen.text} Whether the revert timer armed before the change is still pending could not be read (${String((err as Error).message).split("\n")[0]}): if it is, it undoes the change when it fires.` };
  }
  if (pending.length === 0) return seen;
  const seconds = Math.max(...timers.filter((t) => pending.includes(t.token)).map((t) => t.seconds));
  const back = existed ? "the previous configuration" : "nothing of it";
  if (seen.state === "as before") return { state: seen.state, text: `${seen.text} Its revert timer is still pending; when it fires (${seconds} s after arming) it restores the same state.` };
  return {
    state: "reverting",
    text: `${seen.text} But the revert timer armed before the change is still pending on the host: it undoes the change ${seconds} s after arming, leaving ${back}; the next \`pulumi up\` settles it first and applies the change again.`,
  };
}

/** The one-line report of a failed operation, followed by the details of the original error. */
async function report(kind: Kind<object, object>, op: string, id: string, err: unknown, before: object | undefined, after: object | undefined): Promise<never> {
  if (!(err instanceof Error)) throw err;
  // Refusals before any change, and the lockout guard's report, already say what the host holds.
  const operation = currentOperation();
  const lastStep = operation && operation.execs > 0 ? `after step ${operation.execs} (${operation.steps[operation.execs - 1]})` : "before its first remote command";
  if (err instanceof HostPreconditionError || err instanceof RevertedError) {
    const failedAt = err instanceof LockoutError && err.at !== undefined ? `at step ${err.at} (${err.step})` : lastStep;
    err.message = `${id}: ${op} failed ${failedAt}: ${err.message}`;
    throw err;
  }
  const [first, ...details] = err.message.split("\n");
  let where: string;
  if (err instanceof RemoteCommandError) {
    where = `${op} failed at step ${err.at ?? "?"} (${err.step}): ${err.explanation}`;
  } else {
    where = `${op} failed ${lastStep}: ${first}`;
  }
  let seen = op === "read" ? { state: "as before", text: "A read changes nothing on the host." } : await observeAfterFailure(kind, id, before, after);
  if (op !== "read") seen = await withTimers(seen, operation, before ?? after, before !== undefined);
  const wrapped = new OperationError([`${id}: ${where}. ${seen.text}`, ...(err instanceof RemoteCommandError ? details : [first, ...details].slice(1))].join("\n"), seen.state, err);
  // Where it really failed: the original frames, not this report's.
  wrapped.stack = [wrapped.message, ...(err.stack ?? "").split("\n").filter((line) => /^\s+at /.test(line))].join("\n");
  throw wrapped;
}

/** The kind's operations, each counted and reported as above; `finished` sees each operation's count (tests, benches). */
export function operations<I extends object, O extends I>(kind: Kind<I, O>, finished?: (operation: Operation) => void): Pick<Kind<I, O>, "create" | "read" | "update" | "delete"> {
  const k = kind as unknown as Kind<object, object>;
  const counted = <T>(op: string, run: () => Promise<T>, onError: (err: unknown) => Promise<never>): Promise<T> =>
    withOperation(kind.kind, op, async () => {
      try {
        return await run().catch(onError);
      } finally {
        const operation = currentOperation();
        if (finished && operation) finished(operation);
      }
    });
  return {
    create: (inputs) => counted("create", () => kind.create(inputs), (err) => report(k, "create", idOf(k, inputs), err, undefined, inputs)),
    read: (id, olds) => counted("read", () => kind.read(id, olds), (err) => report(k, "read", id, err, olds, olds)),
    update: (id, olds, news) => counted("update", () => kind.update(id, olds, news), (err) => report(k, "update", id, err, olds, news)),
    delete: (id, olds) => counted("delete", () => kind.delete(id, olds), (err) => report(k, "delete", id, err, olds, undefined)),
  };
}
