/**
 * The TC twin of xdpHook.ts's HookPlan, for every kind that runs BPF filters on
 * an interface's clsact hooks (TcPolicy, TrafficMirror): where the kind's
 * filters sit (one handle per kind and pin name, at its priority), the refusal
 * of a slot someone else holds, the commands that put the filters where the
 * inputs want them (one round trip), and the script that puts them back.
 */
import type { PinLayout } from "./pins";
import { HostPreconditionError } from "./preflight";
import { shellQuote } from "./quote";
import type { SshSession } from "./ssh";
import {
  addClsactCommand,
  bpfFilterCommand,
  deleteBpfFilterCommand,
  findFilter,
  formatHandle,
  REMOVE_CLSACT_IF_EMPTY_LINE,
  TC_DIRECTIONS,
  type TcDirection,
  type TcFilter,
  type TcFilterSlot,
} from "./tc";

/**
 * The TC handle of a resource's filters: FNV-1a of its kind and pin name, never 0
 * (0 asks the kernel to pick one). Two resources on one host have different pin
 * names (or kinds), so their filters never share a slot, even at one priority.
 */
export function tcHandle(kind: string, pinName: string): number {
  let hash = 0x811c9dc5;
  for (const byte of Buffer.from(`${kind}/${pinName}`, "utf8")) hash = Math.imul(hash ^ byte, 0x01000193) >>> 0;
  return hash || 1;
}

/** Where a resource's filters go: its interface, its priority, the handle from its name. */
export interface TcPlacement {
  interface: string;
  name: string;
  priority: number;
}

export function slotOf(kind: string, placement: TcPlacement, direction: TcDirection): TcFilterSlot {
  return { iface: placement.interface, direction, priority: placement.priority, handle: tcHandle(kind, placement.name) };
}

/** The hook's ingress qdisc must be clsact (or none yet, which the change adds). */
export function requireClsactHook(session: SshSession, iface: string, hookQdisc: string | undefined): void {
  if (hookQdisc !== undefined && hookQdisc !== "clsact") {
    throw new HostPreconditionError(
      `${session.label}: interface ${iface} has an "${hookQdisc}" qdisc on its ingress hook, which rules out the clsact qdisc TC programs attach to. ` +
        `Migrate its filters to clsact (tc qdisc del dev ${iface} ${hookQdisc}; tc qdisc add dev ${iface} clsact) or pick another interface. Nothing was changed.`,
    );
  }
}

export class TcHookPlan {
  constructor(
    readonly kind: string,
    readonly placement: TcPlacement,
    /** Every filter on the interface's hooks, as surveyed before the change. */
    private readonly filters: readonly TcFilter[],
    /** Whether a filter runs this resource's program (by id, or by the kernel's name for it). */
    private readonly isOurs: (filter: TcFilter) => boolean,
    /** The program id each hook's filter must run for the hook to count as in place. */
    private readonly programIds: (direction: TcDirection) => number | undefined,
    /** The hook's ingress qdisc before the change: "clsact", or undefined when there is none. */
    readonly hookQdisc: string | undefined,
  ) {}

  slot(direction: TcDirection): TcFilterSlot {
    return slotOf(this.kind, this.placement, direction);
  }

  /** The resource's filter on a hook before the change (whatever it runs). */
  hooked(direction: TcDirection): TcFilter | undefined {
    return findFilter(this.filters, this.slot(direction));
  }

  /** Whether the hook's filter runs the resource's current program. */
  runsOurs(direction: TcDirection): boolean {
    const filter = this.hooked(direction);
    return filter?.programId !== undefined && filter.programId === this.programIds(direction);
  }

  /**
   * Refuses a slot on either hook that holds a filter this resource did not
   * attach. `also` runs first for each hook (a kind's own rule about the slot).
   */
  claim(session: SshSession, subject: string, advice: string, also?: (slot: TcFilterSlot) => void): void {
    for (const direction of TC_DIRECTIONS) {
      const slot = this.slot(direction);
      also?.(slot);
      const existing = findFilter(this.filters, slot);
      if (!existing || this.isOurs(existing)) continue;
      throw new HostPreconditionError(
        `${session.label}: ${this.placement.interface} ${direction} already has a ${existing.kind} filter at priority ${slot.priority} handle ${formatHandle(slot.handle)}` +
          `${existing.programName ? ` (program ${existing.programName}, id ${existing.programId})` : ""} that this ${subject} did not attach. ${advice} Nothing was changed.`,
      );
    }
  }

  /** Whether the change adds the interface's clsact qdisc (some hook wants a filter, and there is none). */
  addsQdisc(wanted: readonly TcDirection[]): boolean {
    return wanted.length > 0 && this.hookQdisc === undefined;
  }

  /**
   * The commands that leave a filter running `programPin(d)` on each wanted hook
   * and none of ours on the others: the qdisc first when missing, an add where
   * there was none, a replace (one netlink call, under RCU) where the program
   * changes (`reload`) or another runs. Batched by the caller in one round trip.
   */
  installCommands(wanted: readonly TcDirection[], programPin: (direction: TcDirection) => string, reload: boolean): string[][] {
    const commands: string[][] = this.addsQdisc(wanted) ? [addClsactCommand(this.placement.interface)] : [];
    for (const direction of TC_DIRECTIONS) {
      const slot = this.slot(direction);
      if (wanted.includes(direction)) {
        if (!this.hooked(direction)) commands.push(bpfFilterCommand("add", slot, programPin(direction)));
        else if (reload || !this.runsOurs(direction)) commands.push(bpfFilterCommand("replace", slot, programPin(direction)));
      } else if (this.hooked(direction)) {
        commands.push(deleteBpfFilterCommand(slot));
      }
    }
    return commands;
  }
}

/** One filter as the revert leaves it. */
export interface FilterRevert {
  slot: Omit<TcFilterSlot, "iface">;
  /** The program it runs again, under the previous program pin ("" for the pin itself); absent: the filter goes. */
  program?: string;
  /** Keep tc's complaint out of the revert's log. */
  quiet?: boolean;
}

export interface TcRevertPlan {
  layout: PinLayout;
  iface: string;
  /** Shell lines that put the maps back, run first. */
  maps: string[];
  /** The resource's program pin, relative to its pin directory: a file ("prog") or a directory of programs ("progs"). */
  programPin: string;
  filters: FilterRevert[];
  /** The resource had no pins before: remove everything it has. */
  fresh: boolean;
  /** Move the previous program (<pin>_old, once the change swapped it out) back, and drop the staged one. */
  restoresProgram: boolean;
  /** Shell lines run after the pins are back (e.g. a device the change created goes). */
  after: string[];
  /** The interface had a clsact qdisc before the change. */
  qdiscBefore: boolean;
}

/**
 * What the host runs if the revert timer fires (or the provider rolls back a
 * failed change): the same steps whether the change got half way or all the
 * way. The previous program is at <pin>_old once the change swapped it out, and
 * at <pin> before; it is moved back first. Every value is quoted; each step runs
 * even if one fails.
 */
export function tcRevertScript(plan: TcRevertPlan): string {
  const pin = `$D/${plan.programPin}`;
  const lines = ["set -f", `D=${shellQuote([plan.layout.dir])}`, `DEV=${shellQuote([plan.iface])}`, ...plan.maps];
  // The previous program goes back to its pin before any filter is put back, and the filters
  // are attached from that pin: tc names a filter after the pin's file ("prog:[*fsobj]"), so
  // a host that reverted shows exactly what it showed before, not "prog_old". Until the
  // replace, the hooks run whatever they ran (the kernel holds the program, not the pin).
  if (!plan.fresh && plan.restoresProgram) lines.push(`if [ -e "${pin}_old" ]; then rm -rf -- "${pin}"; mv "${pin}_old" "${pin}"; fi`, `rm -rf -- "${pin}_new"`);
  for (const { slot, program, quiet } of plan.filters) {
    const where = `dev "$DEV" ${slot.direction} prio ${slot.priority} handle ${formatHandle(slot.handle)} bpf`;
    // replace also re-adds a filter the change removed (tc's replace creates what is missing).
    if (program === undefined) lines.push(`tc filter del ${where} 2>/dev/null`);
    else lines.push(`tc filter replace ${where} da object-pinned "${pin}${program}"${quiet ? " 2>/dev/null" : ""}`);
  }
  if (plan.fresh) lines.push(`rm -rf -- "$D"`);
  lines.push(...plan.after);
  if (!plan.qdiscBefore) lines.push(REMOVE_CLSACT_IF_EMPTY_LINE);
  return `${lines.join("\n")}\nexit 0\n`;
}
