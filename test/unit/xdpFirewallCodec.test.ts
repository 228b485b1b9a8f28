import { describe, expect, it } from "vitest";
import { batchStepUnder, batchText } from "../../provider/remote/mapOperations";
import { planBatchText } from "../../provider/xdpFirewall/writeEntries";
import { decodeDenyEntry, DENY_MAPS, encodeDenyEntry } from "../../provider/xdpFirewall/codec";
import { denyOperations, planDeny } from "../../provider/xdpFirewall/plan";
import { BUCKET, buildIndex, indexOperations, packBlock, v4NetSlot, v4WayBucket, v6WayBucket, v6WayTag, WAYS } from "../../provider/xdpFirewall/index";
import { seededRandom } from "../support/seededRandom";
import { formatAddress, parsePrefix, prefixContains } from "../../provider/cidr";
import type { MapOperation } from "../../provider/remote/mapOperations";
import { canonicalDenyList } from "../../provider/denyList/entries";

const hex = (b: Uint8Array) => Buffer.from(b).toString("hex");
const u32le = (n: number) => { const b = Buffer.alloc(4); b.writeUInt32LE(n); return b; };
const u32be = (n: number) => { const b = Buffer.alloc(4); b.writeUInt32BE(n); return b; };

describe("deny entry codec", () => {
  it("puts exact addresses in the hash maps, keyed by wire bytes", () => {
    expect(encodeDenyEntry("192.0.2.9/32")).toEqual({ map: "deny_v4_exact", key: Uint8Array.of(192, 0, 2, 9) });
    const v6 = encodeDenyEntry("2001:db8::1/128");
    expect(v6.map).toBe("deny_v6_exact");
    expect(hex(v6.key)).toBe("20010db8000000000000000000000001");
  });

  it("puts prefixes in the LPM tries: little-endian u32 length, then the address", () => {
    const v4 = encodeDenyEntry("203.0.113.0/24");
    expect(v4.map).toBe("deny_v4_prefix");
    expect(hex(v4.key)).toBe("18000000cb007100");
    const v6 = encodeDenyEntry("2001:db8::/32");
    expect(v6.map).toBe("deny_v6_prefix");
    expect(hex(v6.key)).toBe("2000000020010db8000000000000000000000000");
  });

  it.each(["192.0.2.9/32", "203.0.113.0/24", "0.0.0.0/0", "2001:db8::1/128", "2001:db8::/32", "::/0"])("round-trips %s", (entry) => {
    const { map, key } = encodeDenyEntry(entry);
    expect(decodeDenyEntry(map, key)).toBe(entry);
  });

  it("normalises a hand-written prefix key with host bits set", () => {
    expect(decodeDenyEntry("deny_v4_prefix", Uint8Array.of(8, 0, 0, 0, 10, 1, 2, 3))).toBe("10.0.0.0/8");
  });

});

/** A plan between two lists in canonical form (prefixes masked, no duplicates), as the provider plans. */
function canonicalPlan(desired: string[], observed: string[]) {
  const canonical = (list: string[]) => Object.keys(canonicalDenyList(list)!.entries);
  return planDeny(canonical(desired), canonical(observed));
}

describe("planning", () => {
  it("adds what is missing and removes what is extra, and keeps both whole sets for the index", () => {
    expect(planDeny(["a", "b", "c"], ["b", "c", "d"])).toEqual({ add: ["a"], remove: ["d"], desired: ["a", "b", "c"], observed: ["b", "c", "d"] });
    expect(planDeny(["a"], ["a"])).toMatchObject({ add: [], remove: [] });
  });

  it("writes the index, then record additions, then record deletions, one bpftool batch line each", () => {
    const pin = (m: string) => `/sys/fs/bpf/bpfleet/xdp-firewall/fw/maps/${m}`;
    const ops = denyOperations(planDeny(["10.0.0.1/32"], ["10.0.0.0/8"]), pin);
    const lines = batchText(ops).trimEnd().split("\n");
    expect(lines.slice(-2)).toEqual([
      `map update pinned ${pin("deny_v4_exact")} key hex 0a 00 00 01 value hex 01`,
      `map delete pinned ${pin("deny_v4_prefix")} key hex 08 00 00 00 0a 00 00 00`,
    ]);
    // The new address's fw_v4_ways bucket: the address in way 0 while not valid, then valid (no other address shares it).
    const bucket = Buffer.alloc(4);
    bucket.writeUInt32LE(v4WayBucket(0x0a000001));
    const bucketKey = [...bucket].map((b) => b.toString(16).padStart(2, "0")).join(" ");
    const bytes = (...parts: string[][]) => parts.flat().join(" ");
    const zeros = (n: number) => Array<string>(n).fill("00");
    expect(lines.slice(0, 2)).toEqual([
      `map update pinned ${pin("fw_v4_ways")} key hex ${bucketKey} value hex ${bytes(["0a", "00", "00", "01"], zeros(44), zeros(12), zeros(4))}`,
      `map update pinned ${pin("fw_v4_ways")} key hex ${bucketKey} value hex ${bytes(["0a", "00", "00", "01"], zeros(44), ["01"], zeros(11), zeros(4))}`,
    ]);
    expect(lines.slice(2, -2).every((l) => l.startsWith(`map update pinned ${pin("fw_v4_index")} `))).toBe(true);
    // 10.0.0.0/8 covered 256 blocks (/16s); the /32 leaves one bucket in the EXACT state.
    const blocks = ops.filter((o) => o.map === pin("fw_v4_index"));
    expect(blocks).toHaveLength(256);
    const block10_0 = blocks.find((o) => hex(o.key) === "000a0000")!;
    expect(block10_0.op === "update" && hex(block10_0.value)).toBe("02" + "00".repeat(63));
    expect(blocks.filter((o) => o.op === "update" && o.value.some((b) => b !== 0))).toHaveLength(1);
  });

  it("gives every host of a fleet the index writes a fresh computation gives, each with its own pins, when it remembers them", () => {
    const next = seededRandom(7);
    const random = (n: number) => Math.floor(next() * n);
    const list = (n: number) => Array.from({ length: n }, () => `10.${random(4)}.${random(256)}.${random(256)}/${[32, 32, 24, 28][random(4)]}`);
    const old = list(400);
    const wanted = [...old.slice(20), ...list(30)];
    const plan = canonicalPlan(wanted, old);
    const fresh = (pin: (m: string) => string) => indexOperations(buildIndex(plan.desired), buildIndex(plan.observed), pin);
    for (const host of ["h1", "h2", "h1"]) {
      const pin = (m: string) => `/sys/fs/bpf/bpfleet/xdp-firewall/${host}/maps/${m}`;
      const ops = denyOperations(plan, pin);
      expect(ops.slice(0, ops.length - plan.add.length - plan.remove.length), host).toEqual(fresh(pin));
    }
    // A pair that shares the wanted list but not the old one is not served the first pair's writes.
    const other = canonicalPlan(wanted, [...old, "10.9.9.9/32", "10.3.3.0/24"]);
    expect(denyOperations(other, (m) => m).slice(0, -other.add.length - other.remove.length)).toEqual(indexOperations(buildIndex(other.desired), buildIndex(other.observed), (m) => m));
  });

  it("gives every host created with one list the batch a fresh computation gives, each with its own pins, from the plan's one text", () => {
    const next = seededRandom(11);
    const random = (n: number) => Math.floor(next() * n);
    const wanted = Array.from({ length: 300 }, () => `10.${random(4)}.${random(256)}.${random(256)}/${[32, 32, 24][random(3)]}`);
    const plan = canonicalPlan(wanted, []);
    for (const unread of [true, false]) {
      for (const host of ["fw-h1", "fw-h2"]) {
        const dir = `/sys/fs/bpf/bpfleet/xdp-firewall/${host}/maps`;
        const step = batchStepUnder(planBatchText(plan, unread), dir);
        expect(step.stdin, `${host} unread=${unread}`).toBe(batchText(denyOperations(plan, (m) => `${dir}/${m}`, unread)));
        expect(step.command).toBe("bpftool batch file -");
      }
    }
    // A new firewall's batch (no reader yet) and an existing one's differ: neither is served the other's.
    expect(planBatchText(plan, true)).not.toBe(planBatchText(plan, false));
    expect(() => batchStepUnder(planBatchText(plan, true), "/sys/fs/bpf/x y")).toThrow(/unsafe pin path/);
    expect(() => batchStepUnder(planBatchText(plan, true), "/tmp/maps")).toThrow(/unsafe pin path/);
  });

  it("writes nothing when nothing changes", () => {
    expect(denyOperations(planDeny(["10.0.0.0/8", "2001:db8::/48"], ["2001:db8::/48", "10.0.0.0/8"]), (m) => m)).toEqual([]);
  });
});

describe("index", () => {
  it("gives each 24-bit bucket its state, DENY over LONGER over EXACT", () => {
    const index = buildIndex(["192.0.2.9/32", "198.51.100.0/24", "198.51.100.1/32", "203.0.113.128/25", "203.0.113.5/32", "10.0.0.0/15", "2001:db8::/48", "2002::/16"]);
    const v4 = index.v4.states!;
    const b = (a: number, c: number, d: number) => (a << 16) | (c << 8) | d;
    expect(v4[b(192, 0, 2)]).toBe(BUCKET.exact);
    expect(v4[b(198, 51, 100)]).toBe(BUCKET.deny);
    expect(v4[b(203, 0, 113)]).toBe(BUCKET.longer);
    expect(v4[b(10, 0, 0)]).toBe(BUCKET.deny);
    expect(v4[b(10, 1, 255)]).toBe(BUCKET.deny);
    expect(v4[b(10, 2, 0)]).toBe(BUCKET.none);
    expect(v4.reduce((n, s) => n + (s ? 1 : 0), 0)).toBe(3 + 512);
    // The /25 and the exact address share the /24's bitmap: hosts 128..255 and 5.
    const bits = index.v4Hosts.get(b(203, 0, 113))!;
    expect(hex(bits)).toBe("20" + "00".repeat(15) + "ff".repeat(16));
    expect([...index.v4Hosts.keys()]).toEqual([b(203, 0, 113)]);
    const v6 = index.v6.states!;
    expect(v6[b(0x20, 0x01, 0x0d)]).toBe(BUCKET.longer);
    expect(v6[b(0x20, 0x02, 0x00)]).toBe(BUCKET.deny);
    expect(v6[b(0x20, 0x02, 0xff)]).toBe(BUCKET.deny);
    expect(v6[b(0x20, 0x03, 0x00)]).toBe(BUCKET.none);
    expect([...index.v6Long]).toEqual(["2001:db8::/48"]);
    // Length 48 is bit 127 - 48 = 79: byte 9, bit 7.
    expect(hex(index.v6Lengths)).toBe("00".repeat(9) + "80" + "00".repeat(6));
  });

  it("packs four buckets to a byte, low bits first", () => {
    const states = new Uint8Array(1 << 24);
    states[(7 << 8) | 0] = 1;
    states[(7 << 8) | 1] = 2;
    states[(7 << 8) | 2] = 3;
    states[(7 << 8) | 255] = 3;
    expect(hex(packBlock(states, 7))).toBe("39" + "00".repeat(62) + "c0");
  });

  it("orders detail, then blocks, then retired detail", () => {
    const ops = indexOperations(buildIndex(["203.0.113.128/25", "2001:db8::/48"]), buildIndex(["198.51.100.0/25", "2a00:1::/40"]), (m) => m);
    const maps = ops.map((o) => `${o.op} ${o.map}`);
    const first = (m: string) => maps.indexOf(m);
    const last = (m: string) => maps.lastIndexOf(m);
    expect(last("update fw_v4_hosts")).toBeLessThan(first("update fw_v4_index"));
    expect(last("update fw_v6_long")).toBeLessThan(first("update fw_v6_index"));
    expect(first("delete fw_v4_hosts")).toBeGreaterThan(last("update fw_v6_index"));
    expect(first("delete fw_v4_hosts")).toBeGreaterThan(last("update fw_v4_index"));
    // Length set: first old ∪ new, at the end the new alone.
    const lengths = ops.filter((o) => o.map === "fw_v6_lengths");
    expect(lengths.map((o) => (o.op === "update" ? hex(o.value) : ""))).toEqual([
      "00".repeat(9) + "8080" + "00".repeat(5),
      "00".repeat(9) + "80" + "00".repeat(6),
    ]);
  });

  /**
   * The program's lookup, transcribed over a model of the maps, so that a plan can
   * be replayed one write at a time: after every single write, every entry that
   * both the old and the new list hold must still be enforced.
   */
  describe("every write is individually safe", () => {
    type Maps = Map<string, Map<string, Uint8Array>>;
    const apply = (maps: Maps, op: MapOperation) => {
      const m = maps.get(op.map) ?? new Map<string, Uint8Array>();
      maps.set(op.map, m);
      if (op.op === "update") m.set(hex(op.key), op.value);
      else m.delete(hex(op.key));
    };
    const state = (maps: Maps, map: string, top: number) => {
      const block = maps.get(map)?.get(hex(Uint8Array.of(top >> 8 & 0xff, top >> 16, 0, 0)));
      return block ? (block[(top & 0xff) >> 2]! >> (((top & 0xff) & 3) * 2)) & 3 : 0;
    };
    const denied = (maps: Maps, address: Uint8Array): boolean => {
      const top = (address[0]! << 16) | (address[1]! << 8) | address[2]!;
      if (address.length === 4) {
        const s = state(maps, "fw_v4_index", top);
        if (s === 0 || s === 1) return s === 1;
        if (s === 3) {
          const net = hex(Uint8Array.of(address[0]!, address[1]!, address[2]!, 0));
          const bit = (bits: Uint8Array) => ((bits[address[3]! >> 3]! >> (address[3]! & 7)) & 1) === 1;
          // An array: a slot never written reads as zeros (not valid, no overflow).
          const hostSlot = maps.get("fw_v4_net_slots")?.get(hex(u32le(v4NetSlot(top)))) ?? new Uint8Array(40);
          if (hostSlot[4] === 1 && hex(hostSlot.subarray(0, 4)) === net) return bit(hostSlot.subarray(8));
          if (hostSlot[5] === 1) {
            const bits = maps.get("fw_v4_hosts")?.get(net);
            if (bits) return bit(bits);
          }
        }
        // fw_v4_ways: addr[12] at 0, valid[12] at 48, overflow at 60.
        const ways = maps.get("fw_v4_ways")?.get(hex(u32le(v4WayBucket(Buffer.from(address).readUInt32BE(0))))) ?? new Uint8Array(64);
        for (let i = 0; i < WAYS; i++) if (ways[4 * WAYS + i] === 1 && hex(ways.subarray(4 * i, 4 * i + 4)) === hex(address)) return true;
        if (ways[5 * WAYS] !== 1) return false;
        return maps.get("deny_v4_exact")?.has(hex(address)) ?? false;
      }
      const s = state(maps, "fw_v6_index", top);
      if (s === 0 || s === 1) return s === 1;
      // fw_v6_key_listed's bucket: "hit", "miss", or "ask" the hash. fw_v6_ways: addr[12][16] at 0,
      // tag[16] at 192, len[12] at 208, valid[12] at 220, overflow at 232; a way is compared
      // only where its tag is the probe's.
      const v6SlotAnswer = (masked: Uint8Array, len: number) => {
        const ways = maps.get("fw_v6_ways")?.get(hex(u32le(v6WayBucket(masked, len)))) ?? new Uint8Array(240);
        const tag = v6WayTag(masked, len);
        for (let i = 0; i < WAYS; i++) {
          if (ways[192 + i] === tag && ways[220 + i] === 1 && ways[208 + i] === len && hex(ways.subarray(16 * i, 16 * i + 16)) === hex(masked)) return "hit";
        }
        return ways[232] === 1 ? "ask" : "miss";
      };
      if (s === 3) {
        const lengths = maps.get("fw_v6_lengths")?.get("00000000") ?? new Uint8Array(16);
        for (let len = 127; len >= 25; len--) {
          const k = 127 - len;
          if (!((lengths[k >> 3]! >> (k & 7)) & 1)) continue;
          const masked = Uint8Array.from(address, (byte, i) => (i * 8 + 8 <= len ? byte : i * 8 >= len ? 0 : byte & (0xff << (8 - (len - i * 8)))));
          const answer = v6SlotAnswer(masked, len);
          if (answer === "hit") return true;
          if (answer === "ask" && maps.get("fw_v6_long")?.has(hex(encodeDenyEntry(`${formatAddress(masked)}/${len}`).key))) return true;
        }
      }
      const answer = v6SlotAnswer(address, 128);
      if (answer !== "ask") return answer === "hit";
      return maps.get("deny_v6_exact")?.has(hex(address)) ?? false;
    };
    /**
     * `op` as a reader may see it half written: every mix of old and new bytes
     * of a slot or way bucket value (the kernel copies a value with memcpy), then the
     * whole write. Other maps change atomically (hash elements are replaced
     * whole) or byte by byte (an index block: each bucket's 2 bits are in one byte).
     */
    const tearing = seededRandom(7);
    const torn = (maps: Maps, op: MapOperation, check: (when: string) => void) => {
      if (op.op === "update" && (op.map === "fw_v4_ways" || op.map === "fw_v6_ways" || op.map === "fw_v4_net_slots")) {
        const old = maps.get(op.map)?.get(hex(op.key)) ?? new Uint8Array(op.value.length);
        // Every value (2^40 mixes and more): each byte alone, all but each byte, and 100 random mixes.
        const n = op.value.length;
        const masks: boolean[][] = n === 8
          ? Array.from({ length: 254 }, (_, m) => Array.from({ length: 8 }, (_, i) => (((m + 1) >> i) & 1) === 1))
          : [
              ...Array.from({ length: n }, (_, j) => Array.from({ length: n }, (_, i) => i === j)),
              ...Array.from({ length: n }, (_, j) => Array.from({ length: n }, (_, i) => i !== j)),
              ...Array.from({ length: 100 }, () => Array.from({ length: n }, () => tearing() < 0.5)),
            ];
        for (const mask of masks) {
          apply(maps, { ...op, value: Uint8Array.from(op.value, (b, i) => (mask[i] ? b : old[i]!)) });
          check(`torn (new bytes ${mask.map((x, i) => (x ? i : "")).filter(String).join(",")})`);
        }
      }
      apply(maps, op);
    };
    // Addresses that an entry covers: its first and last, and one inside.
    const probes = (entry: string) => {
      const p = parsePrefix(entry);
      const last = Uint8Array.from(p.bytes, (byte, i) => {
        const fixed = Math.min(8, Math.max(0, p.prefixLength - i * 8));
        return byte | (0xff >> fixed);
      });
      const middle = Uint8Array.from(p.bytes, (byte, i) => (i === p.bytes.length - 1 ? (byte + last[i]!) >> 1 : byte));
      return [p.bytes, last, middle];
    };

    // WAYS + 2 IPv4 addresses in one fw_v4_ways bucket, lowest first (198.51.100.0 the lowest).
    const S: string[] = [];
    const base = 0xc6336400; // 198.51.100.0
    for (let a = base; S.length < WAYS + 2; a++) if (v4WayBucket(a) === v4WayBucket(base)) S.push(`${formatAddress(u32be(a))}/32`);

    // WAYS + 2 IPv6 addresses, and as many /64 prefixes, in one fw_v6_ways bucket each.
    const sharing6 = (length: number, word: number) => {
      const out: string[] = [];
      const bytes = Buffer.from("20010db8000000000000000000000000", "hex");
      const want = v6WayBucket(bytes, length);
      for (let i = 0; out.length < WAYS + 2; i++) {
        bytes.writeUInt32BE(i, word * 4);
        if (v6WayBucket(bytes, length) === want) out.push(`${formatAddress(bytes)}/${length}`);
      }
      return out;
    };
    const T = sharing6(128, 3);
    const P = sharing6(64, 1);
    const upTo = (keys: string[], n: number) => keys.slice(0, n);

    // Three /24s in one fw_v4_net_slots slot (h1 < h2 < h3), as "a.b.c." prefixes.
    const H: string[] = [];
    for (let t = 0xcb0071; H.length < 3; t++) if (v4NetSlot(t) === v4NetSlot(0xcb0071)) H.push(`${t >>> 16}.${(t >>> 8) & 0xff}.${t & 0xff}.`);

    const lists: [string, string[], string[]][] = [
      ["/24 replaced by its halves", ["198.51.100.0/24", "198.51.100.7/32"], ["198.51.100.0/25", "198.51.100.128/25", "198.51.100.7/32"]],
      ["exact addresses under a prefix that goes", ["10.0.0.0/8", "10.1.2.3/32", "10.1.2.0/30"], ["10.1.2.3/32", "10.1.2.0/30", "10.9.0.0/16"]],
      ["an exact /24 grows a long prefix", ["192.0.2.1/32", "192.0.2.200/32"], ["192.0.2.1/32", "192.0.2.128/26"]],
      ["IPv6 lengths come and go", ["2001:db8::/48", "2001:db8:0:1::/64", "2001:db8::1/128", "2001:db8::/24"], ["2001:db8::/48", "2001:db8::1/128", "2001:db8:0:2::/56", "2001:db9::/32"]],
      ["everything to nothing and back", ["0.0.0.0/0", "::/0"], ["0.0.0.0/0", "::/0", "10.0.0.1/32"]],
      // fw_v4_ways: S* share one bucket, ascending.
      ["a bucket's lowest address goes and the others move down a way", [S[0]!, S[1]!, S[2]!, "10.0.0.1/32"], [S[1]!, S[2]!, "10.0.0.1/32"]],
      ["a lower address joins a bucket held alone", [S[1]!], [S[0]!, S[1]!]],
      ["a way changes hands between two addresses", [S[0]!, S[2]!], [S[1]!, S[2]!]],
      ["one of two addresses of a bucket goes", [S[0]!, S[1]!], [S[0]!]],
      // A full bucket: WAYS in the ways, the rest in the hash.
      ["a full bucket's lowest address goes and the first past the ways moves into a way", upTo(S, WAYS + 2), S.slice(1)],
      ["a full bucket empties to three: a kept address moves down four ways, the highest from the hash into a way", upTo(S, WAYS + 2), [S[1]!, S[5]!, S[WAYS + 1]!]],
      ["a bucket fills past its ways", [S[3]!, S[WAYS]!], upTo(S, WAYS + 1)],
      // fw_v6_ways: T* exact addresses of one bucket, P* /64 prefixes of one bucket.
      ["an IPv6 way changes hands, an exact address and a /64 prefix", [T[0]!, T[2]!, P[1]!, "2001:db8:77::/48"], [T[1]!, T[2]!, P[0]!, P[1]!, "2001:db8:77::/48"]],
      ["an IPv6 bucket's lowest key goes", [T[0]!, T[1]!, T[2]!, P[0]!, P[1]!, P[2]!], [T[1]!, T[2]!, P[1]!, P[2]!]],
      ["a full IPv6 bucket of addresses: the lowest goes", upTo(T, WAYS + 2), T.slice(1)],
      ["a full IPv6 bucket of /64s empties to three: a kept one moves, the highest from the hash into a way", upTo(P, WAYS + 2), [P[1]!, P[5]!, P[WAYS + 1]!]],
      // fw_v4_net_slots: H* /24s of one slot; their /25–/31 and exact addresses share its bitmap.
      ["a net slot's lowest /24 goes and the next takes the slot", [`${H[0]}128/25`, `${H[1]}8/29`, `${H[1]}77/32`, `${H[2]}2/31`], [`${H[1]}8/29`, `${H[1]}77/32`, `${H[2]}2/31`]],
      ["a lower /24 joins a net slot held alone", [`${H[1]}64/26`, `${H[1]}200/32`], [`${H[0]}0/30`, `${H[1]}64/26`, `${H[1]}200/32`]],
      ["a net slot changes hands, its bitmaps change too", [`${H[0]}0/25`, `${H[2]}4/30`], [`${H[1]}16/28`, `${H[2]}4/30`, `${H[2]}9/32`]],
      ["a net slot's bitmap changes in place", [`${H[0]}0/25`, `${H[0]}130/31`, `${H[1]}0/27`], [`${H[0]}0/25`, `${H[0]}200/29`, `${H[1]}0/27`, `${H[1]}99/32`]],
      ["a /24 with long prefixes is covered by a new prefix, and uncovered", [`${H[0]}128/25`, `${H[1]}0/31`], [`${H[0]}128/25`, `${H[1]}0/31`, `${H[0]!.split(".").slice(0, 2).join(".")}.0.0/16`]],
    ];
    // A new firewall is filled before it goes on its hook (and boot restore likewise):
    // nothing reads a slot yet, so the step that protects a concurrent reader is left out.
    it.each(lists)("%s: filled before any reader, each new slot is written once, and the maps end as with the guarded steps", (_name, before, after) => {
      for (const list of [before, after]) {
        const guarded = denyOperations(planDeny(list, []), (m) => m);
        const unread = denyOperations(planDeny(list, []), (m) => m, true);
        const slotWrites = (ops: MapOperation[]) => ops.filter((o) => o.map === "fw_v4_ways" || o.map === "fw_v6_ways" || o.map === "fw_v4_net_slots");
        const slotsUsed = new Set(slotWrites(guarded).map((o) => `${o.map} ${hex(o.key)}`));
        expect(slotWrites(unread)).toHaveLength(slotsUsed.size);
        // Guarded: keys while not valid, then valid; and a bucket past its ways turns `overflow` on last.
        const overflowing = slotWrites(unread).filter((o) => o.op === "update" && o.map !== "fw_v4_net_slots" && o.value[o.map === "fw_v4_ways" ? 5 * WAYS : 232] === 1).length;
        expect(slotWrites(guarded).length).toBe(2 * slotsUsed.size + overflowing);
        const end = (ops: MapOperation[]) => {
          const maps: Maps = new Map();
          for (const op of ops) apply(maps, op);
          return JSON.stringify([...maps].map(([m, e]) => [m, [...e].map(([k, v]) => [k, hex(v)]).sort()]).sort());
        };
        expect(end(unread)).toBe(end(guarded));
      }
    });

    it.each(lists)("%s: the way buckets end with the bytes of a bucket built from the new list alone", (_name, before, after) => {
      const ways = (maps: Maps) => JSON.stringify(["fw_v4_ways", "fw_v6_ways"].map((m) => [...(maps.get(m) ?? new Map<string, Uint8Array>())].filter(([, v]) => v.some((b) => b !== 0)).map(([k, v]) => [k, hex(v)]).sort()));
      for (const [from, to] of [[before, after], [after, before]] as const) {
        const updated: Maps = new Map();
        for (const op of [...denyOperations(planDeny(from, []), (m) => m), ...denyOperations(planDeny(to, from), (m) => m)]) apply(updated, op);
        const fresh: Maps = new Map();
        for (const op of denyOperations(planDeny(to, []), (m) => m, true)) apply(fresh, op);
        expect(ways(updated)).toBe(ways(fresh));
      }
    });

    // bpftool batch stops at the first failed line; the next run plans from the records.
    it.each(lists)("%s: a batch cut short at any line is completed by the next run with the same list", (_name, before, after) => {
      const pin = (m: string) => m;
      const records = (maps: Maps) => {
        const out: string[] = [];
        for (const map of DENY_MAPS) for (const key of maps.get(map)?.keys() ?? []) out.push(decodeDenyEntry(map, Buffer.from(key, "hex")));
        return out;
      };
      for (const [from, to] of [[before, after], [after, before]] as const) {
        const full = denyOperations(planDeny(to, from), pin);
        // Every line of short batches; of long ones (a /8's 256 blocks) the first, last and 8 spread between.
        const n = full.length;
        const cuts = n <= 24 ? Array.from({ length: n + 1 }, (_, i) => i) : [...new Set([0, 1, 2, 3, ...Array.from({ length: 8 }, (_, i) => Math.round(((i + 1) * n) / 9)), n - 2, n - 1, n])];
        for (const cut of cuts) {
          const maps: Maps = new Map();
          for (const op of denyOperations(planDeny(from, []), pin)) apply(maps, op);
          for (const op of full.slice(0, cut)) apply(maps, op);
          for (const op of denyOperations(planDeny(to, records(maps)), pin)) apply(maps, op);
          for (const entry of to) for (const address of probes(entry)) expect(denied(maps, address), `cut at ${cut}: ${entry}`).toBe(true);
          for (const entry of from.filter((e) => !to.includes(e))) {
            for (const address of probes(entry)) {
              const covered = to.some((e) => prefixContains(parsePrefix(e), parsePrefix(formatAddress(address))));
              expect(denied(maps, address), `cut at ${cut}: ${entry} ${formatAddress(address)}`).toBe(covered);
            }
          }
        }
      }
    }, 300_000);

    it.each(lists)("%s", (_name, before, after) => {
      for (const [from, to] of [[before, after], [after, before]] as const) {
        const maps: Maps = new Map();
        for (const op of denyOperations(planDeny(from, []), (m) => m)) apply(maps, op);
        const kept = from.filter((e) => to.includes(e));
        const check = (when: string) => {
          for (const entry of kept) for (const address of probes(entry)) expect(denied(maps, address), `${entry} ${formatAddress(address)} ${when}`).toBe(true);
        };
        check("before");
        const ops = denyOperations(planDeny(to, from), (m) => m);
        ops.forEach((op, i) => {
          torn(maps, op, (how) => check(`during write ${i + 1} of ${ops.length} (${op.op} ${op.map}), ${how}`));
          check(`after write ${i + 1} of ${ops.length} (${op.op} ${op.map})`);
        });
        // At the end, exactly the new list: each of its entries denied, each removed one passes
        // unless a new entry covers it.
        for (const entry of to) for (const address of probes(entry)) expect(denied(maps, address), entry).toBe(true);
        for (const entry of from.filter((e) => !to.includes(e))) {
          for (const address of probes(entry)) {
            const covered = to.some((e) => prefixContains(parsePrefix(e), parsePrefix(formatAddress(address))));
            expect(denied(maps, address), `${entry} ${formatAddress(address)}`).toBe(covered);
          }
        }
      }
    });
  });
});
