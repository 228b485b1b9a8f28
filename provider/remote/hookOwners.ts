/**
 * Which bpfleet resource holds an interface's XDP hook, and what to tell a new
 * resource that finds it there (claimHook in xdpHook.ts).
 *
 * Pulumi creates a resource under a new logical name before it deletes the one
 * the program no longer declares: the logical name is the engine's identity, so
 * a rename is a create plus an unrelated delete, and deleteBeforeReplace (which
 * bpfleet sets for its own replacements, dynamicAdapter.ts diffInputs) does not
 * apply to it (pulumi/pulumi#2625, #11259). Renaming an XDP resource, or swapping
 * it for another resource or kind on the same interface, in one `pulumi up` thus
 * always meets the old program still on the hook; bpfleet never displaces a
 * program, so the refusal has to say the ways out, and which keeps enforcing.
 */
import { PIN_ROOT } from "./hostDirs";

/**
 * The SDK class of each kind whose program takes an XDP hook, by pin directory,
 * and the word its lifecycle passes to claimHook. Keep in step with sdk/ (the
 * class names) and the lifecycles' claimHook calls (the words).
 */
const XDP_KINDS: Readonly<Record<string, { sdkClass: string; what: string }>> = {
  "xdp-firewall": { sdkClass: "XdpFirewall", what: "firewall" },
  maglev: { sdkClass: "MaglevService", what: "load balancer" },
};

// validation.ts's pinName rule. A pin found on the host is only named as a
// resource's when it is one bpfleet could have made, which also keeps it safe
// inside the single quotes of the command a message suggests.
const PIN_NAME = /^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$/;

/** A bpfleet resource as the host knows it: the kind's pin directory and the resource's pin name. */
export interface PinOwner {
  kind: string;
  pinName: string;
  sdkClass: string;
}

/**
 * The resource a pin belongs to, from the survey's owners ("xdp-firewall/edge");
 * undefined for bpfleet's own dispatcher ("xdp-dispatcher/eth0") and anything
 * that is no XDP resource's pin.
 */
export function pinOwner(pin: string | undefined): PinOwner | undefined {
  const match = pin === undefined ? null : /^([a-z-]+)\/([^/]+)$/.exec(pin);
  if (!match) return undefined;
  const [, kind, pinName] = match as unknown as [string, string, string];
  const known = XDP_KINDS[kind];
  return known && PIN_NAME.test(pinName) ? { kind, pinName, sdkClass: known.sdkClass } : undefined;
}

/** `bpfleet's XdpFirewall "edge"`: the class a user declared it with, and its pin name (its name unless it set pinName). */
export function ownerName(owner: PinOwner): string {
  return `bpfleet's ${owner.sdkClass} "${owner.pinName}"`;
}

export function ownerPins(owner: PinOwner): string {
  return `${PIN_ROOT}/${owner.kind}/${owner.pinName}`;
}

/** The engine's type token of a bpfleet resource: sdk/ declares each as a dynamic resource of module "bpfleet". */
export function typeToken(sdkClass: string): string {
  return `pulumi-nodejs:dynamic/bpfleet:${sdkClass}`;
}

export interface Takeover {
  /** The refused resource, as its lifecycle names it to claimHook ("firewall", "load balancer"). */
  what: string;
  /** The resource whose program holds the hook or the slot. */
  owner: PinOwner;
  /** The owner's chain slot; undefined: its program is attached alone. */
  ownerSlot: number | undefined;
  /** The chainPriority the refused resource asked for; undefined: alone. */
  wanted: number | undefined;
  /** Chain slots no program holds. */
  free: readonly number[];
}

/**
 * What to do when another bpfleet resource holds the hook or slot a resource
 * wants: the rename (same kind: an alias and the old pin name make it one
 * resource, and the host is left as it is), a swap through the chain (both run
 * for one `up`, so the interface never goes unenforced), or the old resource
 * deleted first (a gap until the next `up`). Every value it quotes is a pin
 * name (PIN_NAME) or a number.
 */
export function takeoverAdvice({ what, owner, ownerSlot, wanted, free }: Takeover): string {
  const old = `${owner.sdkClass} "${owner.pinName}"`;
  const self = `this ${what}`;
  const lines = [
    `Pulumi creates a resource under a new name before it deletes the one it replaces (deleteBeforeReplace does not apply to a new name: pulumi/pulumi#2625), ` +
      `so a rename, or a swap to another resource on this interface, within one \`pulumi up\` always finds the old program still attached. The ways out:`,
  ];
  if (XDP_KINDS[owner.kind]?.what === what) {
    lines.push(
      `- If ${self} is ${old} renamed, make them one resource: add the resource option \`aliases: [{ name: "${owner.pinName}" }]\` (its old name, if that was not its pin name) ` +
        `and the input \`pinName: "${owner.pinName}"\`. The next \`pulumi up\` then leaves the host as it is: enforced throughout.`,
    );
  }
  const chainStep = swapThroughChain(old, self, ownerSlot, wanted, free);
  if (chainStep) {
    lines.push(`- To run both, or to replace ${old} with no gap in enforcement: in one \`pulumi up\`, ${chainStep}; then, to replace it, remove ${old} from the program and run \`pulumi up\` again.`);
  }
  lines.push(
    `- Or delete ${old} first, with \`pulumi destroy --target '**${typeToken(owner.sdkClass)}::${owner.pinName}'\` (\`pulumi stack --show-urns\` lists the URNs), then run \`pulumi up\`. ` +
      `In between, the interface runs no XDP program.`,
  );
  return lines.join("\n");
}

/** The chainPriority settings that let both programs run, or undefined when the chain has no room. */
function swapThroughChain(old: string, self: string, ownerSlot: number | undefined, wanted: number | undefined, free: readonly number[]): string | undefined {
  if (ownerSlot !== undefined) {
    // The owner is in the chain already: this resource only needs a slot of its own.
    const open = free.filter((slot) => slot !== ownerSlot);
    return open.length > 0 ? `give ${self} a free chainPriority (${open.join(", ")}; lower runs first)` : undefined;
  }
  // The owner runs alone: it has to move into the chain before this resource
  // joins it, or this one is refused again (the engine runs both steps at once
  // unless one depends on the other).
  const order = `and give ${self} the resource option \`dependsOn\` naming ${old}, so that ${old} moves into the chain first`;
  if (wanted !== undefined) {
    const forOld = free.find((slot) => slot !== wanted);
    return forOld === undefined ? undefined : `give ${old} a chainPriority too (e.g. ${forOld}) ${order}`;
  }
  const [first, second] = free;
  return second === undefined ? undefined : `give ${old} chainPriority ${first} and ${self} chainPriority ${second}, ${order}`;
}
