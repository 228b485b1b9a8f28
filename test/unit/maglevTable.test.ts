// The Maglev table of provider/maglev/table.ts: the paper's algorithm, fixed
// hashes (a fleet must agree across versions), and its properties on many
// random backend sets. Measured figures are printed (vitest shows console
// output) so the numbers in the notes can be reproduced:
//   npx vitest run test/unit/maglevTable.test.ts
import { describe, expect, it } from "vitest";
import {
  buildTable, clearTableCache, DEFAULT_TABLE_SIZE, diffTable, entriesBound, entriesPerBackend, isPrime, MaglevError, nextPrime, NO_BACKEND,
  permutationSeeds, tableSizeProblem, type MaglevBackend, type MaglevTable,
} from "../../provider/maglev/table";
import { seededRandom } from "../support/seededRandom";

const M = DEFAULT_TABLE_SIZE;


/** `n` distinct backend identities as the MaglevService names them, IPv4 and IPv6 mixed. */
function randomBackends(rand: () => number, n: number): string[] {
  const ids = new Set<string>();
  const byte = () => Math.floor(rand() * 256);
  while (ids.size < n) {
    const port = 1 + Math.floor(rand() * 65535);
    if (rand() < 0.7) ids.add(`${byte()}.${byte()}.${byte()}.${byte()}:${port}`);
    else ids.add(`[2001:db8:${byte().toString(16)}::${byte().toString(16)}${byte().toString(16)}]:${port}`);
  }
  return [...ids];
}

/** Sizes from 1 to 1000, spread log-uniformly so small and large N both get covered. */
function randomSizes(rand: () => number, count: number, max = 1000): number[] {
  return Array.from({ length: count }, () => Math.max(1, Math.round(Math.exp(rand() * Math.log(max)))));
}

/** NSDI 2016, Pseudocode 1, transcribed literally (permutation matrix, round robin). */
function paperTable(ids: string[], size: number): number[] {
  const perm = ids.map((id) => {
    const { offset, skip } = permutationSeeds(id, size);
    return Array.from({ length: size }, (_, j) => (offset + j * skip) % size);
  });
  const next = new Array<number>(ids.length).fill(0);
  const entry = new Array<number>(size).fill(-1);
  let n = 0;
  for (;;) {
    for (let i = 0; i < ids.length; i++) {
      let c = perm[i]![next[i]!]!;
      while (entry[c]! >= 0) {
        next[i]!++;
        c = perm[i]![next[i]!]!;
      }
      entry[c] = i;
      next[i]!++;
      if (++n === size) return entry;
    }
  }
}

const byId = (a: string, b: string) => (a < b ? -1 : a > b ? 1 : 0);
const slotOwner = (t: MaglevTable, slot: number) => (t.slots[slot] === NO_BACKEND ? undefined : t.backends[t.slots[slot]!]);

describe("table size", () => {
  it("knows primes", () => {
    const small = Array.from({ length: 60 }, (_, i) => i).filter(isPrime);
    expect(small).toEqual([2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41, 43, 47, 53, 59]);
    expect([65537, 65521, 655373, 1_048_573, 1_048_589, 251, 1009].every(isPrime)).toBe(true);
    expect([65536, 65535, 655371, 1_048_575, 1, 0, -7, 2.5, 25, 65539].filter(isPrime)).toEqual([65539]);
    expect(nextPrime(65536)).toBe(65537);
    expect(nextPrime(100 * 700)).toBe(70001);
  });

  it("explains why a size is refused", () => {
    expect(tableSizeProblem(65537, 3)).toBeUndefined();
    expect(tableSizeProblem(65537, 655)).toBeUndefined();
    expect(tableSizeProblem(65536, 3)).toMatch(/not prime.*next one is 65537/);
    expect(tableSizeProblem(65537, 700)).toMatch(/smaller than 100 slots per backend for 700 backends \(70000\); use a prime of at least 70001/);
    expect(tableSizeProblem(1_048_601, 3)).toMatch(/at most 1048589/);
    expect(tableSizeProblem(1_048_589, 3)).toBeUndefined();
    expect(tableSizeProblem(0, 3)).toMatch(/prime/);
  });

  it("refuses to build a table of a size that is not prime", () => {
    expect(() => buildTable([{ id: "a" }], 65536)).toThrow(MaglevError);
    expect(() => buildTable([{ id: "a" }], 65536)).toThrow(/not prime/);
    expect(() => buildTable([{ id: "a" }], 1)).toThrow(/prime/);
  });
});

describe("hashing (fixed forever: hosts of a fleet and versions of bpfleet must agree)", () => {
  it("derives offset and skip from SHA-256 with domain separation (checked against sha256sum)", () => {
    // printf 'bpfleet-maglev-offset\0%s' 10.0.0.1:80 | sha256sum  -> 064b512f862c9400... mod 65537 = 22712
    // printf 'bpfleet-maglev-skip\0%s'   10.0.0.1:80 | sha256sum  -> 3289d9cff8cf1165... mod 65536 + 1 = 4454
    expect(permutationSeeds("10.0.0.1:80", 65537)).toEqual({
      offset: Number(0x064b512f862c9400n % 65537n),
      skip: Number(0x3289d9cff8cf1165n % 65536n) + 1,
    });
    expect(permutationSeeds("10.0.0.1:80", 65537)).toEqual({ offset: 22712, skip: 4454 });
  });

  it("keeps every skip in [1, M-1] and every offset in [0, M-1]", () => {
    const rand = seededRandom(11);
    for (const size of [13, 251, 65537]) {
      for (const id of randomBackends(rand, 500)) {
        const { offset, skip } = permutationSeeds(id, size);
        expect(offset).toBeGreaterThanOrEqual(0);
        expect(offset).toBeLessThan(size);
        expect(skip).toBeGreaterThanOrEqual(1);
        expect(skip).toBeLessThan(size);
      }
    }
  });

  it("gives these exact tables (a golden copy: a change here splits a fleet mid-upgrade)", () => {
    const small = buildTable([{ id: "10.0.0.1:80" }, { id: "10.0.0.2:80" }, { id: "10.0.0.3:80", weight: 2 }], 13);
    expect(Array.from(small.slots)).toEqual([1, 0, 1, 2, 1, 0, 2, 0, 2, 2, 2, 2, 2]);
    const big = buildTable([{ id: "10.0.0.1:80" }, { id: "10.0.0.2:80" }, { id: "[2001:db8::1]:443" }]);
    expect(big.backends).toEqual(["10.0.0.1:80", "10.0.0.2:80", "[2001:db8::1]:443"]);
    expect(Array.from(big.slots.subarray(0, 24))).toEqual([2, 1, 2, 1, 2, 0, 1, 1, 0, 1, 1, 0, 1, 1, 0, 2, 1, 0, 1, 2, 0, 2, 1, 0]);
  });
});

describe("population", () => {
  it("is the paper's Pseudocode 1 when weights are equal", () => {
    const rand = seededRandom(1);
    for (const [n, size] of [[1, 13], [3, 13], [13, 13], [7, 251], [50, 1009], [120, 65537]] as const) {
      const ids = randomBackends(rand, n).sort(byId);
      expect(Array.from(buildTable(ids.map((id) => ({ id })), size).slots), `N=${n} M=${size}`).toEqual(paperTable(ids, size));
    }
  });

  it("does not depend on the order backends are listed in", () => {
    const rand = seededRandom(2);
    const ids = randomBackends(rand, 40);
    const weighted = ids.map((id, i) => ({ id, weight: 1 + (i % 4) }));
    const shuffled = [...weighted].sort(() => rand() - 0.5);
    const a = buildTable(weighted, 1009);
    const b = buildTable(shuffled, 1009);
    expect(b.backends).toEqual(a.backends);
    expect(Buffer.from(b.slots.buffer).equals(Buffer.from(a.slots.buffer))).toBe(true);
  });

  it("fills a table without backends with NO_BACKEND", () => {
    const t = buildTable([], 13);
    expect(t.backends).toEqual([]);
    expect(Array.from(t.slots)).toEqual(new Array(13).fill(NO_BACKEND));
  });

  it("refuses duplicate identities and weights that are not whole numbers from 1 to 65535", () => {
    expect(() => buildTable([{ id: "a" }, { id: "a" }])).toThrow(/backend a is listed twice/);
    for (const weight of [0, -1, 1.5, Number.NaN, 65536]) {
      expect(() => buildTable([{ id: "a", weight }]), String(weight)).toThrow(/weight must be a whole number from 1 to 65535/);
    }
    expect(() => buildTable([{ id: "" }])).toThrow(/non-empty/);
  });
});

describe("properties on random backend sets, M = 65537", () => {
  const rand = seededRandom(42);
  const sets = [...randomSizes(rand, 60), 1000, 1000, 655, 100, 10].map((n) => randomBackends(rand, n));

  it("fills every slot with a listed backend, gives each backend floor(M/N) or ceil(M/N) slots, within 1% of ideal for N ≤ 1000", () => {
    let worstRatio = 1;
    let worstDeviation = 0;
    let worstN = 0;
    for (const ids of sets) {
      const t = buildTable(ids.map((id) => ({ id })));
      const n = ids.length;
      expect(t.slots.every((b) => b >= 0 && b < n)).toBe(true);
      const counts = [...entriesPerBackend(t).values()];
      expect(counts.reduce((a, b) => a + b, 0)).toBe(M);
      const lo = Math.min(...counts);
      const hi = Math.max(...counts);
      // The round robin gives each backend one slot per round: counts differ by at most one.
      expect(lo).toBeGreaterThanOrEqual(Math.floor(M / n));
      expect(hi).toBeLessThanOrEqual(Math.ceil(M / n));
      const ideal = M / n;
      const deviation = Math.max(hi / ideal - 1, 1 - lo / ideal);
      expect(deviation).toBeLessThan(0.01);
      if (hi / lo > worstRatio) [worstRatio, worstN] = [hi / lo, n];
      worstDeviation = Math.max(worstDeviation, deviation);
    }
    console.log(
      `balance over ${sets.length} random sets (N = 1..1000, M = ${M}): worst max/min = ${worstRatio.toFixed(4)} (N = ${worstN}), ` +
        `worst deviation from M/N = ${(worstDeviation * 100).toFixed(2)}%`,
    );
  });

  it("honours weights: every backend within [ideal - 1, ideal + w·N/Σw] of M·w/Σw", () => {
    let worstRelative = 0;
    let worstAbsolute = 0;
    for (const ids of sets.slice(0, 40)) {
      const backends: MaglevBackend[] = ids.map((id) => ({ id, weight: 1 + Math.floor(rand() * (rand() < 0.2 ? 1000 : 10)) }));
      const weights = backends.map((b) => b.weight!);
      const t = buildTable(backends);
      expect(t.slots.every((b) => b >= 0)).toBe(true);
      const counts = entriesPerBackend(t);
      for (const b of backends) {
        const count = counts.get(b.id)!;
        const { ideal, min, max } = entriesBound(M, weights, b.weight!);
        expect(count, `${b.id} weight ${b.weight} among ${ids.length}`).toBeGreaterThanOrEqual(Math.floor(min));
        expect(count, `${b.id} weight ${b.weight} among ${ids.length}`).toBeLessThanOrEqual(Math.ceil(max));
        worstAbsolute = Math.max(worstAbsolute, Math.abs(count - ideal));
        if (ideal >= 100) worstRelative = Math.max(worstRelative, Math.abs(count - ideal) / ideal);
      }
    }
    console.log(
      `weighted (weights 1..1000): worst |count - ideal| = ${worstAbsolute.toFixed(2)} slots; ` +
        `worst relative deviation for backends with ideal ≥ 100 slots = ${(worstRelative * 100).toFixed(3)}%`,
    );
  });

  it("gives a backend of weight 3 three times the slots of a backend of weight 1", () => {
    const t = buildTable([{ id: "a", weight: 1 }, { id: "b", weight: 3 }, { id: "c", weight: 1 }]);
    const counts = entriesPerBackend(t);
    expect(counts.get("b")! / counts.get("a")!).toBeCloseTo(3, 3);
    expect(Math.abs(counts.get("a")! - counts.get("c")!)).toBeLessThanOrEqual(1);
  });

  it("moves close to the ideal 1/N of slots when one of N backends is removed or added", () => {
    // Ideal: only the removed backend's slots move (M/N), or only the slots the
    // new one takes (M/(N+1)). Maglev moves more as N/M grows (the paper, §3.4
    // and Figure 13: it trades some disruption for balance); these bounds are
    // the measured worst cases over the random sets, rounded up.
    const bound = (n: number) => (n <= 10 ? 1.1 : n <= 100 ? 2 : n <= 300 ? 4.5 : 8);
    const rows: { n: number; removed: number; added: number }[] = [];
    for (const ids of sets.filter((s) => s.length >= 2)) {
      const n = ids.length;
      const before = buildTable(ids.map((id) => ({ id })));
      const gone = ids[Math.floor(rand() * n)]!;
      const afterRemove = buildTable(ids.filter((id) => id !== gone).map((id) => ({ id })));
      const removeChanges = diffTable(before, afterRemove);
      // Every slot of the removed backend moves, and nothing moves to it.
      const goneSlots = Array.from(before.slots).filter((b) => before.backends[b] === gone).length;
      expect(removeChanges.filter((c) => slotOwner(before, c.slot) === gone)).toHaveLength(goneSlots);
      const fresh = randomBackends(rand, 1)[0]!;
      const afterAdd = buildTable([...ids, fresh].map((id) => ({ id })));
      const addChanges = diffTable(before, afterAdd);
      // Slots only ever move to the new backend... or between the old ones as the fill order shifts;
      // the new backend gets its fair share.
      expect(addChanges.filter((c) => c.backend === fresh).length).toBeGreaterThanOrEqual(Math.floor(M / (n + 1)));
      const removed = removeChanges.length / (M / n);
      const added = addChanges.length / (M / (n + 1));
      expect(removed, `remove one of ${n}`).toBeLessThanOrEqual(bound(n));
      expect(added, `add one to ${n}`).toBeLessThanOrEqual(bound(n));
      rows.push({ n, removed, added });
    }
    const summary = [[1, 10], [11, 100], [101, 300], [301, 1000]].map(([lo, hi]) => {
      const r = rows.filter((x) => x.n >= lo! && x.n <= hi!);
      const mean = (k: "removed" | "added") => (r.reduce((a, x) => a + x[k], 0) / r.length).toFixed(2);
      const max = (k: "removed" | "added") => Math.max(...r.map((x) => x[k])).toFixed(2);
      return `N ${lo}-${hi} (${r.length} sets): remove ${mean("removed")}x ideal (worst ${max("removed")}x), add ${mean("added")}x (worst ${max("added")}x)`;
    });
    console.log(`disruption, changed slots / ideal, M = ${M}:\n  ${summary.join("\n  ")}`);
  });

  it("moves fewer slots with a bigger table (M = 655373, N = 1000)", () => {
    const ids = sets.find((s) => s.length === 1000)!;
    const big = 655373;
    const before = buildTable(ids.map((id) => ({ id })), big);
    const after = buildTable(ids.slice(1).map((id) => ({ id })), big);
    const ratio = diffTable(before, after).length / (big / 1000);
    const smallRatio = diffTable(buildTable(ids.map((id) => ({ id }))), buildTable(ids.slice(1).map((id) => ({ id })))).length / (M / 1000);
    console.log(`remove one of 1000: ${smallRatio.toFixed(2)}x ideal at M = ${M}, ${ratio.toFixed(2)}x at M = ${big}`);
    expect(ratio).toBeLessThan(smallRatio);
  });
});

describe("diffTable", () => {
  const ids = randomBackends(seededRandom(3), 20);
  const before = buildTable(ids.map((id) => ({ id })), 1009);

  it("lists exactly the slots whose backend changed, and applying it gives the new table", () => {
    const after = buildTable([...ids.slice(1), "192.0.2.1:80"].map((id) => ({ id })), 1009);
    const changes = diffTable(before, after);
    const applied = Array.from({ length: 1009 }, (_, s) => slotOwner(before, s));
    for (const c of changes) applied[c.slot] = c.backend;
    expect(applied).toEqual(Array.from({ length: 1009 }, (_, s) => slotOwner(after, s)));
    for (let s = 0; s < 1009; s++) {
      expect(changes.some((c) => c.slot === s)).toBe(slotOwner(before, s) !== slotOwner(after, s));
    }
    expect(changes.map((c) => c.slot)).toEqual([...changes.map((c) => c.slot)].sort((a, b) => a - b));
  });

  it("compares identities, not indexes (indexes shift when a backend sorts in front)", () => {
    const after = buildTable([{ id: "0.0.0.0:1" }, ...ids.map((id) => ({ id }))], 1009);
    expect(after.backends[0]).toBe("0.0.0.0:1");
    const changes = diffTable(before, after);
    expect(changes.length).toBeLessThan(1009 / 10);
    expect(changes.every((c) => c.backend === "0.0.0.0:1" || slotOwner(before, c.slot) !== c.backend)).toBe(true);
  });

  it("is empty for the same backends and rewrites everything when the size changes", () => {
    expect(diffTable(before, buildTable([...ids].reverse().map((id) => ({ id })), 1009))).toEqual([]);
    expect(diffTable(before, buildTable(ids.map((id) => ({ id })), 1013))).toHaveLength(1013);
  });

  it("goes from no backends to one and back", () => {
    const empty = buildTable([], 13);
    const one = buildTable([{ id: "a" }], 13);
    expect(diffTable(empty, one)).toEqual(Array.from({ length: 13 }, (_, slot) => ({ slot, backend: "a" })));
    expect(diffTable(one, empty)).toEqual(Array.from({ length: 13 }, (_, slot) => ({ slot, backend: undefined })));
  });
});

describe("one table per fleet: computed once per process for the same backends, weights and size (issue 10)", () => {
  const ids = Array.from({ length: 50 }, (_, i) => `10.0.${i >> 8}.${i & 255}:8080`);

  it("the same backends in any order give the same table object, equal to a fresh computation", () => {
    clearTableCache();
    const first = buildTable(ids.map((id) => ({ id })), 4099);
    const again = buildTable([...ids].reverse().map((id) => ({ id, weight: 1 })), 4099);
    expect(again).toBe(first);
    clearTableCache();
    const fresh = buildTable(ids.map((id) => ({ id })), 4099);
    expect(fresh).not.toBe(first);
    expect(fresh.backends).toEqual(first.backends);
    expect([...fresh.slots]).toEqual([...first.slots]);
  });

  it("a different weight, backend or size is another table", () => {
    clearTableCache();
    const base = buildTable(ids.map((id) => ({ id })), 4099);
    const weighted = buildTable(ids.map((id, i) => ({ id, weight: i === 0 ? 2 : 1 })), 4099);
    const fewer = buildTable(ids.slice(1).map((id) => ({ id })), 4099);
    const larger = buildTable(ids.map((id) => ({ id })), 8191);
    for (const other of [weighted, fewer, larger]) expect(other).not.toBe(base);
    expect(entriesPerBackend(weighted).get(ids[0]!)).toBeGreaterThan(entriesPerBackend(base).get(ids[0]!)!);
    expect(fewer.backends).not.toContain(ids[0]);
    expect(larger.size).toBe(8191);
    // Still cached: the old and new version of an update are both at hand.
    expect(buildTable(ids.map((id) => ({ id })), 4099)).toBe(base);
  });

  it("keeps the last 8 tables: a ninth evicts the least recently used", () => {
    clearTableCache();
    const sets = Array.from({ length: 9 }, (_, k) => ids.slice(k).map((id) => ({ id })));
    const built = sets.slice(0, 8).map((set) => buildTable(set, 4099));
    expect(buildTable(sets[0]!, 4099)).toBe(built[0]);
    buildTable(sets[8]!, 4099);
    expect(buildTable(sets[0]!, 4099)).toBe(built[0]);
    expect(buildTable(sets[1]!, 4099)).not.toBe(built[1]);
  });
});
