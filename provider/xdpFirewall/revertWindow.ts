/**
 * Whether the lockout guard's revert window can hold an update's batch. The guard
 * arms a timer on the host before the entries are written; a window shorter than
 * the batch undoes the change mid-batch (a 1M-entry update takes minutes, the
 * default window is 30 s), and the update fails after all that work. check() knows
 * the old and the new list, so it refuses such a window before anything reaches a
 * host, naming the property, the batch and a window that would do.
 *
 * Why refuse rather than warn: the outcome is not a risk but a certainty (the
 * revert fires while the batch runs), and a dynamic provider's check has no warning
 * channel, only failures.
 */
import { MAX_REVERT_SECONDS } from "../remote/lockout";
import { registeredContent } from "../sharedContent";
import { planBetween } from "./plan";
import type { XdpFirewallInputs } from "./schema";

/**
 * Entries per second no host has been seen to beat: bench/dataplane.ts wrote
 * 100k exact + 10k prefixes per family (220k entries, index included) in one
 * local bpftool batch in 9.7 s on a quiet machine (issue 12, stop note 3), about
 * 22,700/s. A batch that outlasts the window even at this rate is refused.
 */
export const FASTEST_ENTRIES_PER_SECOND = 20_000;

/**
 * Entries per second of a real update over SSH: 1,000,000 IPv4 addresses pushed
 * to a test/lab host by the provider (update 0 -> 1M, batch and read-back) in
 * 221 s, about 4,500/s (bench/xdp-firewall-push.ts, 2026-12-05). The window
 * suggested is twice that time: half the window is the login proof's.
 */
export const MEASURED_ENTRIES_PER_SECOND = 4_500;

/** The lists of the previous inputs, read defensively (they come from the engine's state). */
export function previousLists(olds: Record<string, unknown>): Partial<XdpFirewallInputs> {
  const deny = olds.deny;
  const list = olds.denyList as { digest?: unknown; count?: unknown } | undefined;
  return {
    ...(deny && typeof deny === "object" && !Array.isArray(deny) ? { deny: deny as XdpFirewallInputs["deny"] } : {}),
    ...(list && typeof list.digest === "string" && typeof list.count === "number" ? { denyList: { name: "", digest: list.digest, count: list.count } } : {}),
  };
}

/**
 * How many entries an update from `olds` to `news` writes: the entries either list
 * holds and the other does not. Undefined for a create (the maps are filled before
 * the program goes on the hook, before any guard is armed). With a DenyList whose
 * entries this process does not hold, the difference of the counts, a lower bound.
 */
export function entriesToWrite(news: Partial<XdpFirewallInputs>, olds: Partial<XdpFirewallInputs> | undefined): number | undefined {
  if (!olds || (!olds.deny && !olds.denyList)) return undefined;
  const entries = (inputs: Partial<XdpFirewallInputs>) =>
    inputs.denyList ? registeredContent(inputs.denyList.digest) : Object.keys(inputs.deny ?? {});
  const count = (inputs: Partial<XdpFirewallInputs>) => inputs.denyList?.count ?? Object.keys(inputs.deny ?? {}).length;
  const a = entries(news);
  const b = entries(olds);
  if (!a || !b) return Math.abs(count(news) - count(olds));
  // The update's own plan: a DenyList's registered versions are the same arrays for
  // every firewall, so this is computed once per deployment, and an update from that
  // version reuses it.
  const plan = planBetween(a, b);
  return plan.add.length + plan.remove.length;
}

/** The failure of a window too short for the batch, or undefined when it may hold it. */
export function revertWindowProblem(news: Partial<XdpFirewallInputs>, olds: Partial<XdpFirewallInputs> | undefined): string | undefined {
  if (news.lockoutGuard === false || news.attached === false) return undefined;
  const window = news.lockoutRevertSeconds;
  const changed = entriesToWrite(news, olds);
  if (window === undefined || changed === undefined) return undefined;
  const fastest = changed / FASTEST_ENTRIES_PER_SECOND;
  if (fastest < window) return undefined;
  const measured = Math.ceil(changed / MEASURED_ENTRIES_PER_SECOND);
  const suggested = Math.ceil((2 * measured) / 10) * 10;
  const n = changed.toLocaleString("en");
  const head =
    `lockoutRevertSeconds: ${window} s is too short for this update, which writes ${n} deny entries while the lockout guard's revert timer runs: ` +
    `at the fastest rate seen (${FASTEST_ENTRIES_PER_SECOND.toLocaleString("en")} entries/s) that takes ${Math.ceil(fastest)} s, so the host would undo the change mid-batch. `;
  if (suggested <= MAX_REVERT_SECONDS) {
    return (
      head +
      `Set lockoutRevertSeconds to at least ${suggested} (${n} entries at the ${MEASURED_ENTRIES_PER_SECOND.toLocaleString("en")} entries/s measured over SSH, ${measured} s, doubled for the login proof), ` +
      `apply the change in smaller steps, or set lockoutGuard: false if another path manages this host. Nothing was changed.`
    );
  }
  const step = Math.floor((MAX_REVERT_SECONDS / 2) * MEASURED_ENTRIES_PER_SECOND);
  return (
    head +
    `No window of at most ${MAX_REVERT_SECONDS} s holds it (it would take ${suggested} s at the ${MEASURED_ENTRIES_PER_SECOND.toLocaleString("en")} entries/s measured over SSH, doubled for the login proof): ` +
    `apply the change in steps of at most ${step.toLocaleString("en")} entries with lockoutRevertSeconds ${MAX_REVERT_SECONDS}, or set lockoutGuard: false if another path manages this host. Nothing was changed.`
  );
}
