/**
 * Writing an XdpFirewall's deny entries, and putting the previous ones back
 * when a batch stops half way.
 */
import { applyMapOperations, batchStepUnder, batchText, PIN_DIR_PLACEHOLDER, type MapOperation } from "../remote/mapOperations";
import { runSteps, type ShellStep, type StepQueue } from "../remote/shellSteps";
import type { PinLayout } from "../remote/pins";
import { HostPreconditionError } from "../remote/preflight";
import { RemoteCommandError, type ExecResult, type SshSession } from "../remote/ssh";
import { DENY_MAPS, encodeDenyEntry } from "./codec";
import { observeEntries } from "./hostState";
import { denyOperations, planDeny, type DenyPlan } from "./plan";
import { hostJson, mapShow } from "../remote/hostJson";

/**
 * The batch text of a plan, for pins under PIN_DIR_PLACEHOLDER, remembered per plan.
 * The hosts that move between the same two versions of a shared list share one plan
 * (plan.ts, planBetween), and so one text: encoding 100k entries and their index words
 * (31 MB of batch) cost the provider about 0.9 s per host, host after host, in a
 * fleet's first `up`. Each host's batch is this text with its own pin directory.
 */
const planTexts = new WeakMap<DenyPlan, { unread?: string; read?: string }>();

export function planBatchText(plan: DenyPlan, unread: boolean): string {
  let texts = planTexts.get(plan);
  if (!texts) planTexts.set(plan, (texts = {}));
  const slot = unread ? "unread" : "read";
  return (texts[slot] ??= batchText(denyOperations(plan, (map) => `${PIN_DIR_PLACEHOLDER}/${map}`, unread)));
}

/**
 * Writes the plan's entries. A batch that fails half way (bpftool stops at the first
 * failing line: a full map, a cut session) would leave the host with entries the
 * stack does not record, and the next `up` would call it unchanged. So the host is
 * read back and, for an existing firewall (`before`), put back to what it had
 * (deletions first, so re-adding never runs into the same limit); a new one is
 * removed whole by the caller. The error names the map the batch stopped at, and
 * says "full" when the kernel said so.
 */
export async function writeEntries(
  session: SshSession,
  layout: PinLayout,
  plan: DenyPlan,
  before: readonly string[] | undefined,
  desired: readonly string[],
  queue?: StepQueue,
  after: readonly ShellStep[] = [],
): Promise<ExecResult[]> {
  const mapPin = (map: string) => `${layout.maps}/${map}`;
  // A new firewall (no `before`) is filled before it goes on its hook: no reader yet.
  const text = planBatchText(plan, before === undefined);
  const batch = text ? batchStepUnder(text, layout.maps) : undefined;
  try {
    // With `queue`, in the exec that carries what waits there (a revert's arm); with
    // `after`, steps that run behind the batch in its exec, only when it succeeded
    // (their results are returned).
    const steps = [...(batch ? [batch] : []), ...after];
    if (steps.length === 0) {
      await queue?.flush();
      return [];
    }
    const ran = await (queue ? queue.run(steps) : runSteps(session, steps));
    return ran.slice(batch ? 1 : 0);
  } catch (err) {
    // A step queued before the batch failed: the batch did not run, nothing to put back.
    if (err instanceof RemoteCommandError && !err.connectionLost && err.command !== batch?.command) throw err;
    const now = await observeEntries(session, layout).catch(() => undefined);
    if (!now) throw err;
    const present = new Set(Object.keys(now));
    const steps = [...plan.add.map((entry) => ({ entry, applied: present.has(entry) })), ...plan.remove.map((entry) => ({ entry, applied: !present.has(entry) }))];
    const stoppedAt = steps.findIndex((s) => !s.applied);
    const map = stoppedAt >= 0 ? encodeDenyEntry(steps[stoppedAt]!.entry).map : undefined;
    let outcome = "it is removed again; nothing was recorded as applied.";
    if (before) {
      const back = planDeny(before, present);
      try {
        // Index words back from the new list's values to the previous list's (every word
        // the failed batch may have written), then the records: deletions first, so
        // re-adding never runs into the same limit.
        const undo = denyOperations({ add: back.add, remove: back.remove, desired: [...before], observed: [...desired] }, mapPin);
        const isRecordAdd = (op: MapOperation) => op.op === "update" && DENY_MAPS.some((m) => op.map === mapPin(m));
        await applyMapOperations(session, [...undo.filter((op) => !isRecordAdd(op)), ...undo.filter(isRecordAdd)]);
        outcome = `the entries written before the failure were taken out again: the host has its previous ${before.length} entries; nothing was recorded as applied.`;
      } catch {
        outcome = "putting the previous entries back failed too: the host's entries differ from the stack's until the next `pulumi up --refresh`.";
      }
    }
    const stderr = err instanceof RemoteCommandError ? (err.result?.stderr ?? "") : String(err);
    if (map && /No space left on device|Argument list too long/.test(stderr)) {
      const info = await session.run(["bpftool", "-j", "map", "show", "pinned", mapPin(map)], { allowFailure: true });
      const capacity = hostJson(mapShow, info.stdout || "{}", { host: session.label, command: `bpftool -j map show pinned ${mapPin(map)}` }).max_entries;
      const needed = desired.filter((entry) => encodeDenyEntry(entry).map === map).length;
      throw new HostPreconditionError(
        `${session.label}: writing the deny entries failed: map ${map} is full (it holds at most ${capacity ?? "?"} entries; the deny list needs ${needed} there, ${stoppedAt} of ${steps.length} writes went through); ${outcome} Split the list or use wider prefixes.`,
      );
    }
    const stopped = `\n  the batch stopped${map ? ` at map ${map}` : ""} after ${Math.max(stoppedAt, 0)} of ${steps.length} writes; ${outcome}`;
    // The batch's own error, kept (not wrapped): the report names the step that failed
    // from it, not the last step run (the read-back and undo above).
    if (err instanceof RemoteCommandError) {
      err.message += stopped;
      throw err;
    }
    throw new Error(`${(err as Error).message}${stopped}`);
  }
}

