/**
 * lb_vip_index: the direct-mapped front of lb_vips that lets most packets find
 * their VIP, or learn they have none, with one inlined array lookup instead of
 * a hash-map call (bpf/include/maglev.h explains the slot states and why).
 *
 * Pure: what every slot should say for a set of VIPs, and the writes that take
 * the slots the host has to those, split around the lb_vips writes so that no
 * prefix of the batch lets the index disagree with lb_vips:
 *   before: every slot about to change that is not ASK becomes ASK, by a
 *     write that changes only the state byte (its key and value bytes are
 *     rewritten unchanged, so a reader of a torn write sees old or new state
 *     beside the same bytes);
 *   (lb_vips is written and deleted from)
 *   after: each changed slot gets its new key and value bytes while still ASK
 *     (a torn read sees ASK whatever the other bytes hold), then its new state,
 *     again changing only the state byte.
 * ASK defers to lb_vips, which holds what it holds at that moment, so every
 * packet is treated as lb_vips alone would treat it, at every step.
 */
import type { MapOperation } from "../remote/mapOperations";
import { decodeIndex, encodeIndex, encodeVipSlot, LB_VIP_SLOTS, SIZES, vipSlotOf, vipSlotState } from "./codec";

/** The lb_vip_index value each slot should hold for `vips` (each VIP's lb_vips key and value bytes). */
export function vipIndexImage(vips: readonly { key: Uint8Array; value: Uint8Array }[]): Uint8Array[] {
  const bySlot = new Map<number, { key: Uint8Array; value: Uint8Array }[]>();
  for (const vip of vips) {
    const slot = vipSlotOf(vip.key);
    bySlot.set(slot, [...(bySlot.get(slot) ?? []), vip]);
  }
  return Array.from({ length: LB_VIP_SLOTS }, (_, slot) => {
    const here = bySlot.get(slot) ?? [];
    if (here.length === 0) return encodeVipSlot("none");
    if (here.length === 1) return encodeVipSlot("one", here[0]!.key, here[0]!.value);
    return encodeVipSlot("ask");
  });
}

const STATE_BYTE = SIZES.vipKey + SIZES.vip;

/** `slot`'s bytes with the state ASK. */
function asAsk(slot: Uint8Array): Uint8Array {
  const copy = Uint8Array.from(slot);
  copy[STATE_BYTE] = 0;
  return copy;
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

/**
 * The writes around the lb_vips changes (see the top). `observed`: the slots
 * the host holds, by slot number; a slot not in it is taken as all zero (ASK),
 * the state of a map just created.
 */
export function vipIndexOperations(desired: readonly Uint8Array[], observed: ReadonlyMap<number, Uint8Array>, mapPin: string): { before: MapOperation[]; after: MapOperation[] } {
  const before: MapOperation[] = [];
  const after: MapOperation[] = [];
  const write = (ops: MapOperation[], slot: number, value: Uint8Array) => ops.push({ op: "update", map: mapPin, key: encodeIndex(slot), value });
  for (let slot = 0; slot < desired.length; slot++) {
    const want = desired[slot]!;
    const have = observed.get(slot) ?? new Uint8Array(SIZES.vipSlot);
    if (sameBytes(have, want)) continue;
    let now = have;
    // Any state code but NONE and ONE already reads as ASK in the program; it is written as 0 all the same.
    if (have[STATE_BYTE] !== 0) write(before, slot, (now = asAsk(have)));
    const wantAsk = asAsk(want);
    if (!sameBytes(now, wantAsk)) write(after, slot, (now = wantAsk));
    if (!sameBytes(now, want)) write(after, slot, want);
  }
  return { before, after };
}

/** The observed slots from a dump of lb_vip_index (entries of u32 key and slot value). */
export function observedVipIndex(entries: readonly { key: Uint8Array; value: Uint8Array }[]): Map<number, Uint8Array> {
  const slots = new Map<number, Uint8Array>();
  for (const e of entries) slots.set(decodeIndex(e.key), e.value);
  return slots;
}

/**
 * The VIPs the program actually serves, with the value it uses, given what
 * lb_vips and lb_vip_index hold: what `read` reports, so that a slot changed by
 * hand shows as drift of the VIPs it hides or invents (the next apply rewrites
 * the index from lb_vips). Keys and values are the maps' bytes, hex-keyed by key.
 */
export function servedVips(vips: readonly { key: Uint8Array; value: Uint8Array }[], index: ReadonlyMap<number, Uint8Array>): Map<string, { key: Uint8Array; value: Uint8Array }> {
  const served = new Map<string, { key: Uint8Array; value: Uint8Array }>();
  const hex = (b: Uint8Array) => Buffer.from(b).toString("hex");
  const one = (slot: Uint8Array) => ({ key: slot.subarray(0, SIZES.vipKey), value: slot.subarray(SIZES.vipKey, SIZES.vipKey + SIZES.vip) });
  for (const vip of vips) {
    const slot = index.get(vipSlotOf(vip.key));
    const state = slot ? vipSlotState(slot) : "ask";
    if (state === "ask") served.set(hex(vip.key), vip);
  }
  for (const [number, slot] of index) {
    if (vipSlotState(slot) !== "one") continue;
    const vip = one(slot);
    // A key the program can meet in this slot only if it hashes here.
    if (vipSlotOf(vip.key) === number) served.set(hex(vip.key), { key: Uint8Array.from(vip.key), value: Uint8Array.from(vip.value) });
  }
  return served;
}
