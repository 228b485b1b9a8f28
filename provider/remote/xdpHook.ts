/**
 * How a bpfleet XDP program occupies an interface's XDP hook: alone (attached
 * directly), or as one member of the interface's chain (bpf/include/xdp_chain.h):
 * bpfleet's dispatcher sits on the hook and runs the members by priority, so a
 * firewall can sit in front of a load balancer on one NIC.
 *
 * A resource chooses with `chainPriority` (0-7, lower runs first). The first
 * member to arrive loads and attaches the dispatcher, the last to leave detaches
 * and removes it; every step that touches the chain runs under a host-side lock,
 * so two resources of one `pulumi up` can join the same interface concurrently.
 * Nothing here ever replaces a program bpfleet did not attach.
 */
import { PIN_ROOT } from "./hostDirs";
import type { PinLayout } from "./pins";
import { HostPreconditionError } from "./preflight";
import type { ChainSurvey } from "./resourceSurvey";
import { attachXdpCommand, detachXdp, type XdpAttachment, type XdpMode } from "./xdpAttach";
import { ownerName, ownerPins, pinOwner, takeoverAdvice, type PinOwner } from "./hookOwners";
import { shellQuote } from "./quote";
import { preludeOf, shellScriptCommand } from "./shellScript";
import type { SshSession } from "./ssh";

/** Chain slots; keep in sync with XDP_CHAIN_SLOTS in bpf/include/xdp_chain.h. */
export const XDP_CHAIN_SLOTS = 8;
export const DISPATCHER_OBJECT = "xdp_dispatcher";

export interface XdpPlacement {
  iface: string;
  mode: XdpMode;
  /** The chain slot, or undefined to attach alone. */
  chainPriority: number | undefined;
}

/** bpffs refuses names with '.', which VLAN interfaces have ("eth0.100"). */
function pinSafe(iface: string): string {
  return iface.replaceAll(".", "%");
}

export function dispatcherDir(iface: string): string {
  return `${PIN_ROOT}/xdp-dispatcher/${pinSafe(iface)}`;
}

export function chainMapPin(iface: string): string {
  return `${dispatcherDir(iface)}/maps/xdp_chain`;
}

const ATTACH_TYPE: Record<XdpMode, string> = { native: "xdpdrv", generic: "xdpgeneric", auto: "xdp" };

// The chain's shell helpers (lock, id_of, on_hook, slot_id, hook_id, detach_hook,
// leave) are the prelude's "xdp chain" section (sh/prelude.sh); the scripts are
// sh/xdp-chain-ensure.sh, xdp-chain-enter.sh and xdp-chain-leave.sh.

export function ensureDispatcherCommand(iface: string, dispatcherObjectPath: string): string[] {
  return shellScriptCommand("xdp-chain-ensure", { dev: iface, dir: dispatcherDir(iface), object: dispatcherObjectPath }, "bpfleet-chain");
}

/** Puts `programPin` into its slot (atomically replacing this resource's previous program there) and makes sure the dispatcher runs. */
export function enterChainCommand(placement: XdpPlacement, programPin: string, nextPin: string, ownIds: readonly number[]): string[] {
  const slot = requireSlot(placement);
  return shellScriptCommand("xdp-chain-enter", [placement.iface, dispatcherDir(placement.iface), String(slot), programPin, nextPin, ATTACH_TYPE[placement.mode], ...ownIds.map(String)], "bpfleet-chain");
}

/** Empties `slot` if it holds one of `ownIds`; the last member out takes the dispatcher with it. */
export function leaveChainCommand(iface: string, slot: number, ownIds: readonly number[], resetNextPin = ""): string[] {
  return shellScriptCommand("xdp-chain-leave", [iface, dispatcherDir(iface), String(slot), resetNextPin, ...ownIds.map(String)], "bpfleet-chain");
}

/** How a change moves a resource's program, for the revert that undoes it. */
export type HookChange =
  /** The resource's pins are new: undo removes them and whatever they were attached as. */
  | "new"
  /** A new program replaced the one at `position` (kept pinned as prog_old until proven). */
  | "swap"
  /** The pinned program, not active before, was put on the hook or into the chain. */
  | "attach"
  /** Only maps change. */
  | "keep";

/**
 * Shell lines (for the revert timer, and for cleaning up after a failure) that put
 * the hook back as it was before `change`: `position` is where the resource's
 * program ran before, `placement` where the change puts it. Every value quoted;
 * each step runs even if one fails.
 */
export function hookRevertShell(layout: PinLayout, placement: XdpPlacement, position: HookPosition, change: HookChange): string {
  const { iface } = placement;
  const lines = [
    `P=${shellQuote([layout.program])}`,
    `DEV=${shellQuote([iface])}`,
    `DIR=${shellQuote([dispatcherDir(iface)])}`,
    `NEXT=${shellQuote([`${layout.maps}/xdp_chain_next`])}`,
  ];
  const target = placement.chainPriority;
  // prog and prog_old share the resource's maps: the program put back must find its
  // own place in xdp_chain_next again (0: alone), before it runs.
  if ((change === "swap" || change === "attach") && position.kind !== "none") {
    const next = position.kind === "chained" ? position.slot + 1 : 0;
    lines.push(`if [ -e "$NEXT" ]; then bpftool map update pinned "$NEXT" key 0 0 0 0 value ${next} 0 0 0; fi`);
  }
  // The slot the change put this program in, left again (the last member out removes the dispatcher).
  const leaveTarget = (ids: string) => (target === undefined ? [] : [`lock "$DEV"`, `leave "$DEV" "$DIR" ${target} ${ids}`]);
  const detachAlone = `if on_hook "$DEV" "$(id_of "$P")"; then detach_hook "$DEV"; fi`;
  if (change === "new" || change === "attach") {
    lines.push(...(target === undefined ? [detachAlone] : leaveTarget(`"$(id_of "$P")"`)));
    if (change === "new") lines.push(`rm -rf -- ${shellQuote([layout.dir])}`);
  } else if (change === "swap") {
    // prog_old exists once the swap ran; a revert that fires before it changes no hook.
    const swap: string[] = [];
    if (position.kind === "alone") {
      swap.push(`bpftool net attach xdp pinned "$P"_old dev "$DEV" overwrite || bpftool net attach xdpgeneric pinned "$P"_old dev "$DEV" overwrite`);
      swap.push(...leaveTarget(`"$(id_of "$P")"`));
    } else if (position.kind === "chained") {
      swap.push(`bpftool map update pinned "$DIR/maps/xdp_chain" key ${position.slot} 0 0 0 value pinned "$P"_old`);
      if (target === undefined) swap.push(`bpftool net attach xdp pinned "$DIR/prog" dev "$DEV" overwrite || bpftool net attach xdpgeneric pinned "$DIR/prog" dev "$DEV" overwrite`);
      else if (target !== position.slot) swap.push(...leaveTarget(`"$(id_of "$P")"`));
    } else {
      // The previous program ran nowhere: take the new one off again.
      swap.push(...(target === undefined ? [detachAlone] : leaveTarget(`"$(id_of "$P")"`)));
    }
    lines.push(`if [ -e "$P"_old ]; then`, ...swap, `mv -f "$P"_old "$P"`, `fi`);
  }
  const body = `${lines.join("\n")}\n`;
  return `${preludeOf(body)}\n${body}`;
}

/** Takes the resource's program off the interface, wherever it runs. */
export async function releaseHook(session: SshSession, iface: string, position: HookPosition, programIds: readonly number[]): Promise<void> {
  if (position.kind === "alone") await detachXdp(session, iface, position.attachment);
  else if (position.kind === "chained") await session.run(leaveChainCommand(iface, position.slot, programIds));
}

function requireSlot(placement: XdpPlacement): number {
  const slot = placement.chainPriority;
  if (slot === undefined || !Number.isInteger(slot) || slot < 0 || slot >= XDP_CHAIN_SLOTS) throw new Error(`chain priority must be 0-${XDP_CHAIN_SLOTS - 1}, got ${slot}`);
  return slot;
}

/** Where a resource's program runs now, as a survey found it. */
export type HookPosition =
  | { kind: "none" }
  | { kind: "alone"; attachment: XdpAttachment }
  | { kind: "chained"; slot: number; attachment: XdpAttachment | undefined };

/**
 * Where `programIds` (the resource's program, and a previous one left pinned)
 * run on the interface: attached alone, in a chain slot (with the dispatcher
 * attached or not), or nowhere.
 */
export function hookPosition(hook: XdpAttachment | undefined, chain: ChainSurvey, programIds: readonly (number | undefined)[]): HookPosition {
  const ids = programIds.filter((id): id is number => id !== undefined);
  if (hook && ids.includes(hook.programId)) return { kind: "alone", attachment: hook };
  for (const [slot, id] of chain.slots) {
    if (!ids.includes(id)) continue;
    const active = hook !== undefined && hook.programId === chain.dispatcherId;
    return { kind: "chained", slot, attachment: active ? { mode: hook.mode, programId: id } : undefined };
  }
  return { kind: "none" };
}

/** The attachment of a program at `position` if that is where `placement` wants it, else undefined. */
export function placedAttachment(position: HookPosition, placement: XdpPlacement): XdpAttachment | undefined {
  if (placement.chainPriority === undefined) return position.kind === "alone" ? position.attachment : undefined;
  return position.kind === "chained" && position.slot === placement.chainPriority ? position.attachment : undefined;
}

/**
 * Refuses a placement that would replace or displace a program this resource
 * does not own; says what to do instead. `what` names the resource ("firewall").
 * When the program is another bpfleet resource's, the refusal names it (class
 * and pin name, from the survey's owners) and gives the ways out of a rename or
 * a swap (hookOwners.ts takeoverAdvice). Every refusal comes before any change.
 */
export function claimHook(label: string, what: string, placement: XdpPlacement, hook: XdpAttachment | undefined, chain: ChainSurvey, position: HookPosition): void {
  const { iface } = placement;
  function refuse(text: string): never {
    throw new HostPreconditionError(`${label}: ${text}${text.endsWith("\n") ? "" : " "}Nothing was changed.`);
  }
  const resource = (id: number) => pinOwner(chain.owners.get(id));
  const named = (id: number) => {
    const owner = resource(id);
    if (owner) return ownerName(owner);
    return chain.owners.has(id) ? `bpfleet's ${chain.owners.get(id)}` : undefined;
  };
  const free = Array.from({ length: XDP_CHAIN_SLOTS }, (_, slot) => slot).filter((slot) => !chain.slots.has(slot));
  const takeover = (owner: PinOwner, ownerSlot: number | undefined) => takeoverAdvice({ what, owner, ownerSlot, wanted: placement.chainPriority, free });
  const foreign = `bpfleet never replaces another program: detach it first (e.g. 'ip link set dev ${iface} xdp off') or pick another interface.`;
  const dispatcherOnHook = hook !== undefined && hook.programId === chain.dispatcherId;
  if (placement.chainPriority === undefined) {
    if (!hook || position.kind === "alone") return;
    const members = [...chain.slots].filter(([slot]) => position.kind !== "chained" || slot !== position.slot);
    // The dispatcher runs nobody else: this program may take the hook alone.
    if (dispatcherOnHook && members.length === 0) return;
    if (dispatcherOnHook) {
      const [only] = members;
      const owner = members.length === 1 ? resource(only![1]) : undefined;
      if (owner) {
        refuse(
          `interface ${iface} runs bpfleet's XDP dispatcher for one program, that of ${ownerName(owner)} (chainPriority ${only![0]}, pins ${ownerPins(owner)}); ` +
            `attached alone, this ${what} would displace it, and bpfleet never displaces a program.\n${takeover(owner, only![0])}\n`,
        );
      }
      refuse(
        `interface ${iface} already runs bpfleet's XDP dispatcher, which runs ${members.map(([slot, id]) => `${named(id) ?? `program id ${id}`} (chainPriority ${slot})`).join(", ")}. ` +
          `To share the interface, give this ${what} a chainPriority (0-${XDP_CHAIN_SLOTS - 1}, lower runs first).`,
      );
    }
    const owner = resource(hook.programId);
    if (owner) {
      refuse(
        `interface ${iface} already runs the XDP program of ${ownerName(owner)} (id ${hook.programId}, ${hook.mode} mode, pins ${ownerPins(owner)}), attached alone; ` +
          `this ${what} would displace it, and bpfleet never displaces a program.\n${takeover(owner, undefined)}\n`,
      );
    }
    refuse(
      `interface ${iface} already has ${named(hook.programId) ? `${named(hook.programId)}, ` : ""}XDP program id ${hook.programId} attached (${hook.mode} mode), which this ${what} did not attach. ` +
        (named(hook.programId) ? `To share the interface, give this ${what} a chainPriority (0-${XDP_CHAIN_SLOTS - 1}, lower runs first) and the other bpfleet resource one too.` : foreign),
    );
  }
  const slot = placement.chainPriority;
  const held = chain.slots.get(slot);
  const ours = position.kind === "chained" && chain.slots.get(position.slot) === held;
  if (held !== undefined && !ours) {
    const owner = resource(held);
    if (owner) refuse(`chainPriority ${slot} on ${iface} is taken by ${ownerName(owner)} (pins ${ownerPins(owner)}).\n${takeover(owner, slot)}\n`);
    refuse(`chainPriority ${slot} on ${iface} is taken by ${named(held) ?? `program id ${held}`}. Give each program sharing the interface its own chainPriority (0-${XDP_CHAIN_SLOTS - 1}).`);
  }
  if (!hook || dispatcherOnHook || position.kind === "alone") return;
  const owner = resource(hook.programId);
  if (owner) {
    refuse(
      `interface ${iface} already runs the XDP program of ${ownerName(owner)} (id ${hook.programId}, ${hook.mode} mode, pins ${ownerPins(owner)}), attached alone, not through bpfleet's dispatcher.\n${takeover(owner, undefined)}\n`,
    );
  }
  refuse(
    `interface ${iface} already has ${named(hook.programId) ? `${named(hook.programId)}, ` : ""}XDP program id ${hook.programId} attached (${hook.mode} mode) alone, not through bpfleet's dispatcher; this ${what} did not attach it. ` +
      (named(hook.programId) ? `Give that resource a chainPriority too (and let it update first, e.g. with dependsOn), so both share the interface.` : foreign),
  );
}

/**
 * What one converge does to the hook, from where the resource's program runs now
 * (`position`) to where `placement` wants it. Used by every XDP resource kind.
 */
export class HookPlan {
  readonly position: HookPosition;

  constructor(
    readonly placement: XdpPlacement,
    readonly attached: boolean,
    private readonly hook: XdpAttachment | undefined,
    private readonly chain: ChainSurvey,
    private readonly layout: PinLayout,
    programId: number | undefined,
  ) {
    this.position = hookPosition(hook, chain, [programId]);
  }

  get chained(): boolean {
    return this.placement.chainPriority !== undefined;
  }

  /** Whether the program already runs exactly where it should (or is detached, when it should be). */
  get inPlace(): boolean {
    if (!this.attached) return this.position.kind === "none";
    return placedAttachment(this.position, this.placement) !== undefined;
  }

  /**
   * Whether the program must be loaded again to move: a chained program is bound
   * to the interface's shared xdp_chain, one attached alone to a private one, and
   * a program that runs nowhere may be bound to either.
   */
  get rebinds(): boolean {
    // A staged program (attached: false) is bound when it is attached.
    if (!this.attached) return false;
    const p = this.position.kind;
    return this.chained ? p !== "chained" : p !== "alone";
  }

  /** The xdp_chain pin a (re)load must bind to: the interface's, for a chained program that runs. */
  get sharedChain(): string | undefined {
    return this.chained && this.attached ? chainMapPin(this.placement.iface) : undefined;
  }

  get nextPin(): string {
    return `${this.layout.maps}/xdp_chain_next`;
  }

  /** The kind of change, for the revert that would undo it. */
  change(hadPins: boolean, loads: boolean): HookChange {
    if (!hadPins) return "new";
    if (loads) return "swap";
    return this.attached && !this.inPlace ? "attach" : "keep";
  }

  /**
   * Commands that make `programPin` run where the placement wants it; each swaps
   * what runs in one kernel operation (a netlink replace, or a prog-array update),
   * so no packet sees an empty hook. `ownIds`: the resource's current program.
   */
  installCommands(programPin: string, ownIds: readonly number[]): string[][] {
    if (!this.attached) return [];
    if (this.chained) return [enterChainCommand(this.placement, programPin, this.nextPin, ownIds)];
    const p = this.position;
    // Replaced in one netlink call: the program itself, or the dispatcher it leaves (or an empty one).
    const replacing = p.kind === "alone" ? p.attachment : this.dispatcherOnHook ? this.hook : undefined;
    return [attachXdpCommand(this.placement.iface, programPin, this.placement.mode, replacing)];
  }

  private get dispatcherOnHook(): boolean {
    return this.hook !== undefined && this.hook.programId === this.chain.dispatcherId;
  }

  /** After the change is proven: leave the slot (or chain) the program ran in before. */
  cleanupCommands(ownIds: readonly number[]): string[][] {
    const p = this.position;
    if (!this.attached) return [];
    if (p.kind === "chained" && !(this.chained && p.slot === this.placement.chainPriority)) {
      return [leaveChainCommand(this.placement.iface, p.slot, ownIds, this.chained ? "" : this.nextPin)];
    }
    // An empty dispatcher this program replaced on the hook: leaving no slot removes it.
    if (!this.chained && p.kind !== "alone" && this.dispatcherOnHook) return [leaveChainCommand(this.placement.iface, 0, [])];
    return [];
  }

  /** For attached: false: takes the program off wherever it runs. */
  async release(session: SshSession, ownIds: readonly number[]): Promise<void> {
    if (!this.attached) await releaseHook(session, this.placement.iface, this.position, ownIds);
  }

  revertShell(change: HookChange): string {
    return hookRevertShell(this.layout, this.placement, this.position, change);
  }

  /** Loads and pins the interface's dispatcher if the placement needs it and it is not there. */
  async prepare(session: SshSession, dispatcherObjectPath: () => Promise<string>): Promise<void> {
    if (this.chained && this.attached) await session.run(ensureDispatcherCommand(this.placement.iface, await dispatcherObjectPath()));
  }
}
