/**
 * TC (clsact) operations on a host, through iproute2's `tc` over one SSH session:
 * the commands that add a clsact qdisc (recording that bpfleet added it) and add,
 * replace and delete one BPF filter identified by its priority and handle, the
 * removal of a clsact qdisc no filter uses any more, and reading qdisc and
 * filters back. A filter is addressed by (hook, priority, handle)
 * everywhere, so nothing here touches another tool's filters, even at the same
 * priority.
 */
import { RUN_DIR } from "./hostDirs";
import { runShellScript, shellScriptCommand } from "./shellScript";
import { HostPreconditionError } from "./preflight";
import type { SshSession } from "./ssh";
import { hostJson, tcFilterRows, tcQdiscRows } from "./hostJson";

export type TcDirection = "ingress" | "egress";
export const TC_DIRECTIONS: readonly TcDirection[] = ["ingress", "egress"];

export interface TcFilter {
  direction: TcDirection;
  /** `pref` in tc's output: lower runs first. */
  priority: number;
  protocol: string;
  kind: string;
  handle: number;
  directAction: boolean;
  programId?: number;
  programName?: string;
  programTag?: string;
}

/** Where one BPF filter sits: hook, priority, handle. */
export interface TcFilterSlot {
  iface: string;
  direction: TcDirection;
  priority: number;
  handle: number;
}

interface TcJsonFilter {
  protocol?: string;
  pref?: number;
  kind?: string;
  options?: {
    handle?: string;
    "direct-action"?: boolean;
    prog?: { id?: number; name?: string; tag?: string };
  };
}

/**
 * Parses `tc -j filter show dev X ingress|egress`. tc prints one line per
 * priority (without options) and one per filter; only the latter describe a
 * filter.
 */
export function parseTcFilters(json: string, direction: TcDirection): TcFilter[] {
  const text = json.trim();
  if (!text) return [];
  const rows: TcJsonFilter[] = hostJson(tcFilterRows, text, { command: `tc -j filter show ${direction}` });
  return rows
    .filter((row) => row.options?.handle !== undefined)
    .map((row) => ({
      direction,
      priority: row.pref ?? 0,
      protocol: row.protocol ?? "all",
      kind: row.kind ?? "",
      handle: Number(row.options!.handle),
      directAction: row.options?.["direct-action"] === true,
      programId: row.options?.prog?.id,
      programName: row.options?.prog?.name,
      programTag: row.options?.prog?.tag,
    }));
}

/** tc wants handles and priorities as plain words; hex keeps handles readable in `tc filter show`. */
export function formatHandle(handle: number): string {
  return `0x${handle.toString(16)}`;
}

interface TcJsonQdisc {
  kind?: string;
  parent?: string;
}

/** The kind of the qdisc on the interface's ingress hook ("clsact" is ours to use), or undefined when there is none. */
// ffff:fff1 is the one slot both clsact and the older "ingress" qdisc take.
export async function hookQdisc(session: SshSession, iface: string): Promise<string | undefined> {
  const result = await session.run(["tc", "-j", "qdisc", "show", "dev", iface]);
  const rows: TcJsonQdisc[] = hostJson(tcQdiscRows, result.stdout.trim() || "[]", { host: session.label, command: `tc -j qdisc show dev ${iface}` });
  return rows.find((q) => q.parent === "ffff:fff1")?.kind;
}


/**
 * Every filter on both hooks of `iface`; none when the interface does not exist.
 * Any other failure to list them throws: callers decide what to remove from it.
 */
export async function tcFilters(session: SshSession, iface: string): Promise<TcFilter[]> {
  const result = await runShellScript(session, "tc-show-filters", { dev: iface });
  if (result.stdout.trim() === "@@absent") return [];
  const [, ingress = "", egress = ""] = result.stdout.split(/^@@(?:ingress|egress)$/m);
  return [...parseTcFilters(ingress, "ingress"), ...parseTcFilters(egress, "egress")];
}

export function findFilter(filters: readonly TcFilter[], slot: Omit<TcFilterSlot, "iface">): TcFilter | undefined {
  return filters.find((f) => f.direction === slot.direction && f.priority === slot.priority && f.handle === slot.handle);
}

/**
 * The argv that adds a BPF filter running the pinned program (failing if the slot
 * is taken), or replaces the program of an existing one in one netlink call
 * (cls_bpf swaps it under RCU: every packet runs either the old or the new
 * program). Callers batch several hook changes into one round trip.
 */
export function bpfFilterCommand(verb: "add" | "replace", slot: TcFilterSlot, programPin: string): string[] {
  return [
    "tc", "filter", verb, "dev", slot.iface, slot.direction,
    "prio", String(slot.priority), "handle", formatHandle(slot.handle),
    // direct-action: the program's return value is the verdict, no tc action needed.
    "bpf", "da", "object-pinned", programPin,
  ];
}

/**
 * Deletes exactly one filter. Naming the handle (and so the kind) matters:
 * `tc filter del ... prio P` alone would delete every filter at that priority.
 */
export async function deleteBpfFilter(session: SshSession, slot: TcFilterSlot): Promise<void> {
  await session.run(deleteBpfFilterCommand(slot));
}

// Whichever bpfleet resource added an interface's clsact qdisc, the last one to
// leave it must remove it; the one that added it may be deleted first while another
// (a TcPolicy and a TrafficMirror on one interface) still has a filter there. So the
// host remembers that bpfleet added it (a marker in the root-only RUN_DIR; both it
// and the qdisc are gone after a reboot): sh/tc-add-clsact.sh.
function clsactMarker(iface: string): string {
  return `${RUN_DIR}/clsact-${iface.replace(/[^A-Za-z0-9_-]/g, "%")}`;
}


/** The argv that adds a clsact qdisc to `iface`, recording on the host that bpfleet added it. */
export function addClsactCommand(iface: string): string[] {
  return shellScriptCommand("tc-add-clsact", { dev: iface, marker: clsactMarker(iface) }, "bpfleet-clsact");
}

// Shell tests on the interface in $DEV (or any word given): it has a clsact
// qdisc; no filter (anyone's) is left on either hook.
const hasClsactTest = (dev: string) => `tc qdisc show dev ${dev} | grep -q "qdisc clsact"`;
const noFiltersTest = (dev: string) => `[ -z "$(tc filter show dev ${dev} ingress)" ] && [ -z "$(tc filter show dev ${dev} egress)" ]`;

/** One shell line that removes the clsact qdisc of "$DEV" when no filter is left on it (for revert scripts). */
export const REMOVE_CLSACT_IF_EMPTY_LINE = `if ${hasClsactTest('"$DEV"')} && ${noFiltersTest('"$DEV"')}; then tc qdisc del dev "$DEV" clsact; fi`;


/**
 * Removes the clsact qdisc of `iface` when bpfleet added it (this resource, `created`,
 * or another one, as the host's marker says) and no filter (anyone's) is left on it.
 */
export async function removeClsactIfEmpty(session: SshSession, iface: string, created = false): Promise<"removed" | "busy" | "absent" | "foreign"> {
  const result = await runShellScript(session, "tc-remove-clsact-if-empty", { dev: iface, marker: clsactMarker(iface), created: created ? "yes" : "no" });
  return result.stdout.trim() as "removed" | "busy" | "absent" | "foreign";
}

/** The argv that deletes exactly one filter (see deleteBpfFilter), for batching. */
export function deleteBpfFilterCommand(slot: TcFilterSlot): string[] {
  return ["tc", "filter", "del", "dev", slot.iface, slot.direction, "prio", String(slot.priority), "handle", formatHandle(slot.handle), "bpf"];
}
