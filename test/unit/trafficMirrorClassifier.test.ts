// The mirror's classifier (bpf/include/tc_mirror.h), compiled by codec.ts,
// held against the filter semantics written out one filter at a time
// (test/support/mirrorModel.ts): the bytes are read here exactly as
// bpf/tc_mirror.bpf.c reads them (test/kernel/trafficMirror.test.ts runs the
// program itself against the same model). Then every prefix of an update's
// map writes, applied to a simulated host, must match exactly the old list or
// exactly the new one.
import { describe, expect, it } from "vitest";
import { parsePrefix } from "../../provider/cidr";
import type { MapOperation } from "../../provider/remote/mapOperations";
import {
  BOUNDS, classifierDrift, compileClassifier, CONFIG_MAP, decodeConfig, EMPTY_CONFIG, FILTERS_MAP, HEADS_MAP, liveFilterList, RANGE, RANGE6, RANGES_MAP,
  RANGES6_MAP, RANGES_DEPTH, RANGES6_DEPTH, SET_SLOTS, type Classifier, type MirrorConfig,
} from "../../provider/trafficMirror/codec";
import { mirrorOperations, planMirror } from "../../provider/trafficMirror/plan";
import { filterRecord, filterSchema, type MirrorFilter } from "../../provider/trafficMirror/schema";
import { listMatches, randomFilters, randomPacket, type ModelPacket } from "../support/mirrorModel";
import { seededRandom } from "../support/seededRandom";

const u64 = (b: Uint8Array, at: number) => new DataView(b.buffer, b.byteOffset, b.byteLength).getBigUint64(at, true);
const u32 = (b: Uint8Array, at: number) => new DataView(b.buffer, b.byteOffset, b.byteLength).getUint32(at, true);
const HEAD = { live: 0, anyPacket: 1, v4: 2, v6: 3, protoAny: 4, portsAny: 5, sportAny: 6, dportAny: 7, srcAny: 8, dstAny: 9, proto: 10 };
const h = (c: Classifier, field: number) => u64(c.head, 8 * field);

function addressValue(address: string): bigint {
  let n = 0n;
  for (const b of parsePrefix(address).bytes) n = (n << 8n) | BigInt(b);
  return n;
}

/** rank32/rank128 of the program: the number of bounds <= v, by the same steps (depth of them, then bound[127]). */
function rank(bound: (i: number) => bigint, depth: number, v: bigint): number {
  let i = 0;
  for (let step = 2 ** (Math.min(depth, 7) - 1); step >= 1; step /= 2) if (bound(i + step - 1) <= v) i += step;
  return i + (bound(BOUNDS - 1) <= v ? 1 : 0);
}

function rangeBits(r: Uint8Array, v: number): bigint {
  return u64(r, 4 * BOUNDS + 8 * rank((i) => BigInt(u32(r, 4 * i)), u32(r, RANGES_DEPTH), BigInt(v)));
}

function range6Bits(r: Uint8Array, v: bigint): bigint {
  return u64(r, 16 * BOUNDS + 8 * rank((i) => (u64(r, 16 * i) << 64n) | u64(r, 16 * i + 8), u32(r, RANGES6_DEPTH), v));
}

/** matches_any() of bpf/tc_mirror.bpf.c, over a set's classifier; `length` is the set's length in mirror_config. */
function programMatches(c: Classifier, length: number, p: ModelPacket): boolean {
  if (length === 0) return true;
  let m = h(c, HEAD.live);
  if (p.family === 0) return (m & h(c, HEAD.anyPacket)) !== 0n;
  m &= p.family === 4 ? h(c, HEAD.v4) : h(c, HEAD.v6);
  if (m & ~h(c, HEAD.protoAny)) m &= h(c, HEAD.protoAny) | (p.protocol !== undefined ? h(c, HEAD.proto + p.protocol) : 0n);
  if (m & ~h(c, HEAD.portsAny)) {
    if (p.sport === undefined || p.dport === undefined) m &= h(c, HEAD.portsAny);
    else {
      if (m & ~h(c, HEAD.dportAny)) m &= h(c, HEAD.dportAny) | rangeBits(c.ranges[RANGE.DPORT]!, p.dport);
      if (m & ~h(c, HEAD.sportAny)) m &= h(c, HEAD.sportAny) | rangeBits(c.ranges[RANGE.SPORT]!, p.sport);
    }
  }
  const addr = (a: string, v4: number, v6: number) =>
    p.family === 4 ? rangeBits(c.ranges[v4]!, Number(addressValue(a))) : range6Bits(c.ranges6[v6]!, addressValue(a));
  if (m & ~h(c, HEAD.srcAny)) m &= h(c, HEAD.srcAny) | addr(p.src!, RANGE.SRC4, RANGE6.SRC6);
  if (m & ~h(c, HEAD.dstAny)) m &= h(c, HEAD.dstAny) | addr(p.dst!, RANGE.DST4, RANGE6.DST6);
  return m !== 0n;
}

/** A host's maps as bytes, keyed by map name and element index. */
type Host = Map<string, Map<number, Uint8Array>>;

function apply(host: Host, op: MapOperation): void {
  if (op.op !== "update") throw new Error("the planner only writes");
  if (!host.has(op.map)) host.set(op.map, new Map());
  host.get(op.map)!.set(u32(op.key, 0), op.value);
}

function hostConfig(host: Host): MirrorConfig {
  const bytes = host.get(CONFIG_MAP)?.get(0);
  return bytes ? decodeConfig(bytes) : EMPTY_CONFIG;
}

/** The live set's classifier as the program finds it. */
function liveClassifier(host: Host): { c: Classifier; length: number } {
  const config = hostConfig(host);
  const set = config.activeSet;
  const el = (map: string, key: number) => host.get(map)?.get(key) ?? new Uint8Array(map === HEADS_MAP ? 2128 : map === RANGES_MAP ? 1552 : 3088);
  return {
    c: {
      head: el(HEADS_MAP, set),
      ranges: Object.values(RANGE).map((f) => el(RANGES_MAP, set * 4 + f)),
      ranges6: Object.values(RANGE6).map((f) => el(RANGES6_MAP, set * 2 + f)),
    },
    length: config.setLength[set],
  };
}

function observe(host: Host) {
  const config = hostConfig(host);
  const records = liveFilterList(config, host.get(FILTERS_MAP) ?? new Map());
  return { config, filters: filterRecord(records) };
}

function update(host: Host, filters: readonly MirrorFilter[]): MapOperation[] {
  const ops = mirrorOperations(planMirror({ targetIfindex: 3, sampleRate: 1, filters: filterRecord(filters) }, observe(host)), (m) => m);
  return ops;
}

describe("the compiled classifier matches exactly what the filters match", () => {
  it.each([1, 2, 3, 4, 5, 6, 7, 8])("random lists of 1-64 filters, seed %i", (seed) => {
    const rnd = seededRandom(seed * 7919);
    const outcomes = [0, 0];
    for (let list = 0; list < 12; list++) {
      const count = 1 + Math.floor(rnd() * SET_SLOTS);
      // A filter with no field matches everything; only a short list may have one and still say something.
      const filters = Object.values(filterRecord(randomFilters(rnd, count, count <= 4)));
      const c = compileClassifier(filters);
      for (let n = 0; n < 200; n++) {
        const p = randomPacket(rnd, filters);
        const want = listMatches(filters, p);
        outcomes[want ? 1 : 0]! += 1;
        if (programMatches(c, filters.length, p) !== want) {
          throw new Error(`seed ${seed}: ${JSON.stringify(p)} ${want ? "matches" : "does not match"} ${JSON.stringify(filters)}`);
        }
      }
    }
    // Both verdicts are common, so a classifier that always says one of them fails.
    expect(Math.min(...outcomes)).toBeGreaterThan(400);
  });

  it("cuts every prefix length 0-32 and 0-128 at its first and last address", () => {
    for (const family of [4, 6] as const) {
      const width = family === 4 ? 32 : 128;
      const base = family === 4 ? "10.20.30.40" : "2001:db8:aaaa:bbbb:cccc:dddd:eeee:ffff";
      for (let length = 0; length <= width; length++) {
        const f = filterSchema.parse({ destination: `${base}/${length}` });
        const c = compileClassifier([f]);
        const p = parsePrefix(f.destination!);
        let lo = 0n;
        for (const b of p.bytes) lo = (lo << 8n) | BigInt(b);
        const hi = lo | ((1n << BigInt(width - length)) - 1n);
        const max = (1n << BigInt(width)) - 1n;
        const at = (v: bigint) => {
          const text = family === 4 ? [24n, 16n, 8n, 0n].map((s) => String((v >> s) & 0xffn)).join(".") : Array.from({ length: 8 }, (_, i) => ((v >> BigInt(112 - 16 * i)) & 0xffffn).toString(16)).join(":");
          return programMatches(c, 1, { family, protocol: 6, src: text, dst: text, sport: 1, dport: 1 });
        };
        expect([at(lo), at(hi)], `/${length}`).toEqual([true, true]);
        if (lo > 0n) expect(at(lo - 1n), `/${length} below`).toBe(false);
        if (hi < max) expect(at(hi + 1n), `/${length} above`).toBe(false);
      }
    }
  });

  it("holds 64 filters with 128 distinct ends on one field", () => {
    const filters = Array.from({ length: 64 }, (_, i) => filterSchema.parse({ destinationPort: `${100 + 3 * i}-${101 + 3 * i}` }));
    const c = compileClassifier(filters);
    for (let port = 95; port < 100 + 3 * 64 + 5; port++) {
      const want = port >= 100 && (port - 100) % 3 !== 2 && port < 100 + 3 * 64;
      expect(programMatches(c, 64, { family: 4, protocol: 17, src: "10.0.0.1", dst: "10.0.0.2", sport: 1, dport: port }), `port ${port}`).toBe(want);
    }
  });
});

describe("updates", () => {
  it("every prefix of an update's writes matches exactly the old list or exactly the new one", () => {
    const rnd = seededRandom(4242);
    const host: Host = new Map();
    let current: MirrorFilter[] = [];
    for (let round = 0; round < 30; round++) {
      // The next list keeps some filters, drops some, adds some.
      const kept = current.filter(() => rnd() < 0.6);
      const next = Object.values(filterRecord([...kept, ...randomFilters(rnd, Math.floor(rnd() * (SET_SLOTS - kept.length)) + (kept.length ? 0 : 1))]));
      const ops = update(host, next);
      const packets = Array.from({ length: 40 }, () => randomPacket(rnd, [...current, ...next]));
      const check = (filters: MirrorFilter[], when: string) => {
        const { c, length } = liveClassifier(host);
        for (const p of packets) expect(programMatches(c, length, p), `${when}: ${JSON.stringify(p)}`).toBe(listMatches(filters, p));
      };
      check(current, `round ${round}, before`);
      ops.forEach((op, i) => {
        apply(host, op);
        check(i === ops.length - 1 ? next : current, `round ${round}, after write ${i + 1} of ${ops.length}`);
      });
      current = next;
      expect(observe(host).filters).toEqual(filterRecord(next));
    }
  });

  it("reads back drift: a record the classifier does not carry as written is not live", () => {
    const filters = Object.values(filterRecord([{ protocol: "tcp", destinationPort: 80 }, { protocol: "udp", source: "192.0.2.0/24" }, { destination: "2001:db8::/32" }].map((f) => filterSchema.parse(f))));
    const c = compileClassifier(filters);
    expect(classifierDrift(filters, c)).toEqual(new Set());
    expect(classifierDrift(filters, undefined)).toEqual(new Set([0, 1, 2]));
    // The UDP filter's bit cleared in the head's proto[17]: only that filter drifted.
    const udp = filters.findIndex((f) => f.protocol === "udp");
    const head = Uint8Array.from(c.head);
    const at = 8 * (HEAD.proto + 17);
    expect(u64(head, at)).toBe(1n << BigInt(udp));
    new DataView(head.buffer).setBigUint64(at, 0n, true);
    expect(classifierDrift(filters, { ...c, head })).toEqual(new Set([udp]));
    // A bit of a filter with no record: nothing is trustworthy.
    const stray = Uint8Array.from(c.head);
    new DataView(stray.buffer).setBigUint64(0, u64(stray, 0) | (1n << 9n), true);
    expect(classifierDrift(filters, { ...c, head: stray })).toEqual(new Set([0, 1, 2]));
    // Bounds moved by hand.
    const ranges = c.ranges.map((r) => Uint8Array.from(r));
    new DataView(ranges[RANGE.DPORT]!.buffer).setUint32(0, 81, true);
    expect(classifierDrift(filters, { ...c, ranges })).toEqual(new Set([0, 1, 2]));
  });
});
