// lb_vip_index, pure: the slot hash, what each slot says for a set of VIPs, and
// the writes around lb_vips. A model of the program's lookup (slot first,
// lb_vips only on ASK) is checked against lb_vips alone after every prefix of
// random plans, and every write is checked to be one a torn read cannot abuse.
import { describe, expect, it } from "vitest";
import {
  encodeVip, encodeVipKey, encodeVipSlot, LB_VIP_SLOTS, SIZES, vipSlotOf, vipSlotState, type L4Protocol, type LbMode, type VipKey,
} from "../../provider/maglev/codec";
import { servedVips, vipIndexImage, vipIndexOperations } from "../../provider/maglev/vipIndex";
import type { MapOperation } from "../../provider/remote/mapOperations";
import { seededRandom } from "../support/seededRandom";

const PIN = "/sys/fs/bpf/bpfleet/maglev/web/maps/lb_vip_index";
const STATE = SIZES.vipKey + SIZES.vip;
const hex = (b: Uint8Array | undefined) => (b ? Buffer.from(b).toString("hex") : "none");

/** Two distinct VIP keys that share a slot, found by search (the hash is fixed). */
function collidingPair(): [VipKey, VipKey] {
  const seen = new Map<number, VipKey>();
  for (let i = 1; ; i++) {
    const vip: VipKey = { address: `198.51.100.${i & 255}`, port: 1000 + (i >> 8), protocol: "tcp" };
    const slot = vipSlotOf(encodeVipKey(vip));
    const other = seen.get(slot);
    if (other) return [other, vip];
    seen.set(slot, vip);
  }
}

/** The program's lookup_vip (bpf/xdp_maglev.bpf.c) over a model of both maps: the lb_vips value bytes it uses, or undefined. */
function programLookup(index: Map<number, Uint8Array>, vips: Map<string, Uint8Array>, key: Uint8Array): string {
  const slot = index.get(vipSlotOf(key)) ?? new Uint8Array(SIZES.vipSlot);
  const state = vipSlotState(slot);
  if (state === "none") return "none";
  if (state === "one") return hex(slot.subarray(0, SIZES.vipKey)) === hex(key) ? hex(slot.subarray(SIZES.vipKey, STATE)) : "none";
  return hex(vips.get(hex(key)));
}

/** lb_vips and lb_vip_index changed the way planService orders them: index.before, the lb_vips writes and deletes, index.after. */
function plannedOps(from: Map<string, Uint8Array>, to: Map<string, { key: Uint8Array; value: Uint8Array }>, index: Map<number, Uint8Array>): MapOperation[] {
  const { before, after } = vipIndexOperations(vipIndexImage([...to.values()]), index, PIN);
  const writes: MapOperation[] = [...to.values()].filter((v) => hex(from.get(hex(v.key))) !== hex(v.value)).map((v) => ({ op: "update", map: "lb_vips", key: v.key, value: v.value }));
  const deletes: MapOperation[] = [...from.keys()].filter((k) => !to.has(k)).map((k) => ({ op: "delete", map: "lb_vips", key: Buffer.from(k, "hex") }));
  return [...before, ...writes, ...deletes, ...after];
}

function applyOp(index: Map<number, Uint8Array>, vips: Map<string, Uint8Array>, op: MapOperation): void {
  if (op.map === PIN && op.op === "update") index.set(new DataView(op.key.buffer, op.key.byteOffset, 4).getUint32(0, true), op.value);
  else if (op.op === "update") vips.set(hex(op.key), op.value);
  else vips.delete(hex(op.key));
}

describe("lb_vip_index", () => {
  it("hashes a VIP key as bpf/include/maglev_hash.h does (pinned value; test/kernel/maglev.test.ts proves the program agrees)", () => {
    // Words (little-endian): 0x0a6433c6, 0, 0, 0, 0x04065000 -> xor 0x0e6263c6; * 0x9e3779b1 mod 2^32 = 0x16b991e6; >> 22 = 90.
    expect(vipSlotOf(encodeVipKey({ address: "198.51.100.10", port: 80, protocol: "tcp" }))).toBe(90);
    const slots = new Set(Array.from({ length: 256 }, (_, i) => vipSlotOf(encodeVipKey({ address: `198.51.100.${i}`, port: 80, protocol: "tcp" }))));
    expect(slots.size).toBeGreaterThan(200); // spread, not clustered
    expect(() => vipSlotOf(new Uint8Array(16))).toThrow(/20 bytes/);
  });

  it("says NONE where no VIP maps, ONE with the key and value where one does, ASK where several do", () => {
    const [a, b] = collidingPair();
    const c: VipKey = { address: "2001:db8:100::10", port: 443, protocol: "udp" };
    const rec = (k: VipKey, i: number) => ({ key: encodeVipKey(k), value: encodeVip({ vipIndex: i, tableOffset: 0, tableSize: 65537, mode: "dsr", flowTable: true }) });
    const image = vipIndexImage([rec(a, 0), rec(b, 1), rec(c, 2)]);
    expect(image).toHaveLength(LB_VIP_SLOTS);
    expect(vipSlotState(image[vipSlotOf(encodeVipKey(a))]!)).toBe("ask");
    expect(image[vipSlotOf(encodeVipKey(a))]!.every((x) => x === 0)).toBe(true);
    expect(hex(image[vipSlotOf(encodeVipKey(c))])).toBe(hex(encodeVipSlot("one", rec(c, 2).key, rec(c, 2).value)));
    const states = image.map((s) => vipSlotState(s));
    expect(states.filter((s) => s === "none")).toHaveLength(LB_VIP_SLOTS - 2);
  });

  it("a new map (all zero) reads as lb_vips alone; one apply fills it, a second writes nothing", () => {
    const vip = { key: encodeVipKey({ address: "198.51.100.10", port: 80, protocol: "tcp" }), value: encodeVip({ vipIndex: 0, tableOffset: 0, tableSize: 65537, mode: "dsr", flowTable: true }) };
    const image = vipIndexImage([vip]);
    const first = vipIndexOperations(image, new Map(), PIN);
    expect(first.before).toEqual([]);
    // NONE for 1023 slots (state byte only), ASK-with-bytes then ONE for the VIP's.
    expect(first.after).toHaveLength(LB_VIP_SLOTS + 1);
    const index = new Map<number, Uint8Array>();
    for (const op of first.after) applyOp(index, new Map(), op);
    expect(vipIndexOperations(image, index, PIN)).toEqual({ before: [], after: [] });
  });

  it("read reports the VIPs the program serves: a hand-changed slot shows as a VIP hidden or invented", () => {
    const rec = (k: VipKey, i: number) => ({ key: encodeVipKey(k), value: encodeVip({ vipIndex: i, tableOffset: 0, tableSize: 65537, mode: "dsr", flowTable: false }) });
    const a = rec({ address: "198.51.100.10", port: 80, protocol: "tcp" }, 0);
    const b = rec({ address: "198.51.100.11", port: 443, protocol: "tcp" }, 1);
    const c = rec({ address: "198.51.100.12", port: 53, protocol: "udp" }, 2);
    const keys = (m: Map<string, unknown>) => [...m.keys()].sort();
    const consistent = new Map(vipIndexImage([a, b]).map((slot, i) => [i, slot]));
    expect(keys(servedVips([a, b], new Map()))).toEqual(keys(new Map([[hex(a.key), 0], [hex(b.key), 0]]))); // no index (an older object): lb_vips
    expect(keys(servedVips([a, b], consistent))).toEqual([hex(a.key), hex(b.key)].sort());
    const hidden = new Map(consistent).set(vipSlotOf(a.key), encodeVipSlot("none"));
    expect(keys(servedVips([a, b], hidden))).toEqual([hex(b.key)]);
    const invented = new Map(consistent).set(vipSlotOf(c.key), encodeVipSlot("one", c.key, c.value));
    expect(keys(servedVips([a, b], invented))).toEqual([hex(a.key), hex(b.key), hex(c.key)].sort());
    expect(hex(servedVips([a, b], invented).get(hex(c.key))!.value)).toBe(hex(c.value));
    // A ONE slot whose key hashes elsewhere is never met by that key.
    const misplaced = new Map(consistent).set((vipSlotOf(c.key) + 1) % LB_VIP_SLOTS, encodeVipSlot("one", c.key, c.value));
    expect(keys(servedVips([a, b], misplaced))).toEqual([hex(a.key), hex(b.key)].sort());
  });

  it("never lets the index disagree with lb_vips, after any prefix of random changes, and never writes a torn-read hazard", () => {
    const rand = seededRandom(12);
    const [x, y] = collidingPair();
    // A small universe with collisions, both families and protocols, so slots go NONE <-> ONE <-> ASK.
    const universe: VipKey[] = [x, y, ...Array.from({ length: 10 }, (_, i) => ({ address: i % 3 === 0 ? `2001:db8:100::${i}` : `198.51.100.${200 + i}`, port: 80 + (i % 2), protocol: (i % 4 === 1 ? "udp" : "tcp") as L4Protocol }))];
    const probes = [...universe, { address: "198.51.100.250", port: 80, protocol: "tcp" as const }].map(encodeVipKey);
    const modes: LbMode[] = ["dsr", "nat", "ipip"];
    let vips = new Map<string, Uint8Array>();
    let index = new Map<number, Uint8Array>();
    for (let round = 0; round < 60; round++) {
      const to = new Map<string, { key: Uint8Array; value: Uint8Array }>();
      universe.forEach((k, i) => {
        if (rand() < 0.5) return;
        const key = encodeVipKey(k);
        to.set(hex(key), { key, value: encodeVip({ vipIndex: i, tableOffset: 0, tableSize: rand() < 0.5 ? 65537 : 1009, mode: modes[Math.floor(rand() * 3)]!, flowTable: rand() < 0.5 }) });
      });
      const ops = plannedOps(vips, to, index);
      const v = new Map(vips);
      const ix = new Map(index);
      for (const [i, op] of ops.entries()) {
        if (op.map === PIN && op.op === "update") {
          const slot = new DataView(op.key.buffer, op.key.byteOffset, 4).getUint32(0, true);
          const old = ix.get(slot) ?? new Uint8Array(SIZES.vipSlot);
          const onlyState = old.every((b, j) => j === STATE || b === op.value[j]);
          const askBothSides = old[STATE] === 0 && op.value[STATE] === 0;
          expect(onlyState || askBothSides, `round ${round}, write ${i}: slot ${slot} changes its bytes while not ASK`).toBe(true);
        }
        applyOp(ix, v, op);
        for (const key of probes) expect(programLookup(ix, v, key), `round ${round}, after write ${i + 1}/${ops.length}`).toBe(hex(v.get(hex(key))));
      }
      expect([...v.keys()].sort()).toEqual([...to.keys()].sort());
      expect(vipIndexOperations(vipIndexImage([...to.values()]), ix, PIN)).toEqual({ before: [], after: [] });
      vips = v;
      index = ix;
    }
  });
});
