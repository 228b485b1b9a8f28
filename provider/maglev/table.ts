/**
 * The Maglev lookup table (Eisenbud et al., "Maglev: A Fast and Reliable
 * Software Network Load Balancer", NSDI 2016, §3.4), computed here and written
 * to the host as data: the BPF program only reads `table[hash(5-tuple) % M]`.
 *
 * Determinism is the point: every host of a fleet, every Node version, every
 * order in which a user lists the backends must give the same table, so that
 * flows ECMP'd to different load balancers reach the same backend.
 *
 * - Identity: each backend is named by a string the caller chooses; the
 *   MaglevService uses its canonical "address:port" ("[v6]:port"). Backends
 *   are ordered by that string (UTF-16 code units, never the locale), which
 *   fixes the fill order.
 * - Two independent hashes (the paper's h1, h2) come from SHA-256 with domain
 *   separation: offset = first 8 bytes of SHA-256("bpfleet-maglev-offset\0" + id),
 *   big-endian, mod M; skip = first 8 bytes of SHA-256("bpfleet-maglev-skip\0"
 *   + id), mod (M - 1), plus 1. SHA-256 is fixed by FIPS 180-4 and node:crypto
 *   computes it the same on every version and platform, unlike a hash of our
 *   own choosing that a refactor could silently change.
 * - M is prime, so every skip in [1, M-1] is coprime with M and each
 *   backend's permutation (offset + j*skip) mod M visits every slot.
 * - Weights: the paper's round robin generalised by virtual time (stride
 *   scheduling, as Envoy's weighted Maglev does with whole iterations). A
 *   backend's k-th turn is due at virtual time k/w; turns are taken in order
 *   of that time, ties by backend order. With equal weights this is exactly
 *   the paper's round robin, so every backend gets floor(M/N) or ceil(M/N)
 *   slots. With weights, a backend gets between ideal-1 and ideal + w/mean(w)
 *   slots, where ideal = M*w/sum(w) (see entriesBound).
 */
import { createHash } from "node:crypto";

/** The paper's (and Katran's) default: prime, and ≥ 100 × N up to 655 backends. */
export const DEFAULT_TABLE_SIZE = 65537;
/** The largest prime that fits the BPF table array (LB_TABLE_CAPACITY = 16 × 65537 slots, bpf/include/maglev.h). */
export const MAX_TABLE_SIZE = 1_048_589;
/** The paper's guidance for M ≫ N: at least this many slots per backend keeps each within ~1% of ideal. */
export const MIN_SLOTS_PER_BACKEND = 100;
export const MAX_WEIGHT = 65_535;
/** `slots[i]` for a table without backends. */
export const NO_BACKEND = -1;

export interface MaglevBackend {
  /** The backend's identity, e.g. "10.0.0.2:8080" or "[2001:db8::2]:8080". */
  id: string;
  /** A positive integer; defaults to 1. */
  weight?: number;
}

export interface MaglevTable {
  size: number;
  /** Backend identities in fill order (sorted). */
  backends: readonly string[];
  /** For every slot, an index into `backends` (NO_BACKEND when there are none). */
  slots: Int32Array;
}

export class MaglevError extends Error {}

/** Deterministic primality by trial division: M ≤ MAX_TABLE_SIZE, so at most ~350 divisions. */
export function isPrime(n: number): boolean {
  if (!Number.isSafeInteger(n) || n < 2) return false;
  if (n % 2 === 0) return n === 2;
  if (n % 3 === 0) return n === 3;
  for (let d = 5; d * d <= n; d += 6) {
    if (n % d === 0 || n % (d + 2) === 0) return false;
  }
  return true;
}

/** The smallest prime ≥ n, for error messages that suggest a size. */
export function nextPrime(n: number): number {
  let candidate = Math.max(2, Math.ceil(n));
  while (!isPrime(candidate)) candidate++;
  return candidate;
}

/**
 * Why `size` is not a usable table size for `backendCount` backends, or
 * undefined. This is the user-facing rule (prime, at most MAX_TABLE_SIZE, at
 * least MIN_SLOTS_PER_BACKEND per backend); buildTable itself only needs a prime.
 */
export function tableSizeProblem(size: number, backendCount: number): string | undefined {
  if (!Number.isSafeInteger(size) || size < 2) return `table size must be a prime number, got ${size}`;
  if (size > MAX_TABLE_SIZE) return `table size ${size} is larger than the program's table capacity allows (at most ${MAX_TABLE_SIZE})`;
  if (!isPrime(size)) return `table size ${size} is not prime (Maglev needs a prime; the next one is ${nextPrime(size)})`;
  const needed = MIN_SLOTS_PER_BACKEND * backendCount;
  if (size < needed) {
    return `table size ${size} is smaller than ${MIN_SLOTS_PER_BACKEND} slots per backend for ${backendCount} backends (${needed}); use a prime of at least ${nextPrime(needed)}`;
  }
  return undefined;
}

function hash64(domain: string, id: string): bigint {
  return createHash("sha256").update(`${domain}\0${id}`, "utf8").digest().readBigUInt64BE(0);
}

/** The paper's offset and skip for one backend in a table of prime size M. */
export function permutationSeeds(id: string, size: number): { offset: number; skip: number } {
  const m = BigInt(size);
  return {
    offset: Number(hash64("bpfleet-maglev-offset", id) % m),
    skip: Number(hash64("bpfleet-maglev-skip", id) % (m - 1n)) + 1,
  };
}

function compareIds(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

function checkBackends(backends: readonly MaglevBackend[]): { id: string; weight: number }[] {
  const seen = new Set<string>();
  const out: { id: string; weight: number }[] = [];
  for (const b of backends) {
    if (typeof b.id !== "string" || b.id === "") throw new MaglevError("a backend identity must be a non-empty string");
    if (seen.has(b.id)) throw new MaglevError(`backend ${b.id} is listed twice`);
    seen.add(b.id);
    const weight = b.weight ?? 1;
    if (!Number.isInteger(weight) || weight < 1 || weight > MAX_WEIGHT) {
      throw new MaglevError(`backend ${b.id}: weight must be a whole number from 1 to ${MAX_WEIGHT}, got ${weight}`);
    }
    out.push({ id: b.id, weight });
  }
  return out.sort((x, y) => compareIds(x.id, y.id));
}

/**
 * Tables computed in this process, by a digest of what determines them (size, the
 * sorted identities and weights): every host of a fleet must hold the same table for
 * the same backends (issue 10), and one provider process plans every host's update,
 * so N hosts with the same backends cost one computation, not N (about 10 ms per
 * table at 1,000 backends, M = 65537; the plan of an update builds two). The last
 * few are kept: an update needs the old and the new version of each of its tables.
 * A cached table is shared: its `slots` must not be written to (no caller does).
 */
const TABLES_KEPT = 8;
const tables = new Map<string, MaglevTable>();

function tableKey(sorted: readonly { id: string; weight: number }[], size: number): string {
  const hash = createHash("sha256").update(`${size}\n`);
  for (const b of sorted) hash.update(`${b.id} ${b.weight}\n`);
  return hash.digest("hex");
}

/**
 * Fills a table of prime `size` from `backends` (any order). Throws MaglevError
 * for a non-prime size, duplicate identities or bad weights. The same backends,
 * weights and size give the same table object (see `tables`).
 */
export function buildTable(backends: readonly MaglevBackend[], size = DEFAULT_TABLE_SIZE): MaglevTable {
  if (!isPrime(size) || size > MAX_TABLE_SIZE) {
    throw new MaglevError(tableSizeProblem(size, 0) ?? `table size ${size} is not usable`);
  }
  const sorted = checkBackends(backends);
  const key = tableKey(sorted, size);
  const cached = tables.get(key);
  if (cached) {
    // Most recently used last, so the oldest is the one to drop.
    tables.delete(key);
    tables.set(key, cached);
    return cached;
  }
  const table = fillTable(sorted, size);
  tables.set(key, table);
  if (tables.size > TABLES_KEPT) tables.delete(tables.keys().next().value!);
  return table;
}

/** For benchmarks and tests: forget every computed table. */
export function clearTableCache(): void {
  tables.clear();
}

function fillTable(sorted: readonly { id: string; weight: number }[], size: number): MaglevTable {
  const n = sorted.length;
  const slots = new Int32Array(size).fill(NO_BACKEND);
  const table: MaglevTable = { size, backends: sorted.map((b) => b.id), slots };
  if (n === 0) return table;

  const next = new Int32Array(n);
  const skip = new Int32Array(n);
  const weight = new Float64Array(n);
  const turns = new Float64Array(n);
  sorted.forEach((b, i) => {
    const seeds = permutationSeeds(b.id, size);
    next[i] = seeds.offset;
    skip[i] = seeds.skip;
    weight[i] = b.weight;
  });

  // Min-heap of backends by the virtual time of their next turn, (turns+1)/weight,
  // compared exactly by cross-multiplying (products < 2^21 · 2^16, exact in a double).
  const before = (a: number, b: number): boolean => {
    const lhs = (turns[a]! + 1) * weight[b]!;
    const rhs = (turns[b]! + 1) * weight[a]!;
    return lhs < rhs || (lhs === rhs && a < b);
  };
  const heap = new Int32Array(n);
  for (let i = 0; i < n; i++) heap[i] = i;
  const siftDown = (from: number) => {
    let i = from;
    for (;;) {
      const l = 2 * i + 1;
      const r = l + 1;
      let best = i;
      if (l < n && before(heap[l]!, heap[best]!)) best = l;
      if (r < n && before(heap[r]!, heap[best]!)) best = r;
      if (best === i) return;
      const t = heap[i]!;
      heap[i] = heap[best]!;
      heap[best] = t;
      i = best;
    }
  };
  for (let i = (n >> 1) - 1; i >= 0; i--) siftDown(i);

  for (let filled = 0; filled < size; filled++) {
    const b = heap[0]!;
    let c = next[b]!;
    const s = skip[b]!;
    while (slots[c] !== NO_BACKEND) {
      c += s;
      if (c >= size) c -= size;
    }
    slots[c] = b;
    c += s;
    next[b] = c >= size ? c - size : c;
    turns[b]!++;
    siftDown(0);
  }
  return table;
}

/** Slots per backend identity (backends without slots are listed with 0). */
export function entriesPerBackend(table: MaglevTable): Map<string, number> {
  const counts = new Array<number>(table.backends.length).fill(0);
  for (const b of table.slots) if (b !== NO_BACKEND) counts[b]!++;
  return new Map(table.backends.map((id, i) => [id, counts[i]!]));
}

/**
 * The proven bounds on one backend's slot count (see the header comment):
 * ideal - 1 ≤ count ≤ ideal + weight·N/sum(weights), ideal = M·weight/sum(weights).
 * With equal weights: floor(M/N) ≤ count ≤ ceil(M/N).
 */
export function entriesBound(size: number, weights: readonly number[], weight: number): { ideal: number; min: number; max: number } {
  const total = weights.reduce((a, b) => a + b, 0);
  const ideal = (size * weight) / total;
  return { ideal, min: ideal - 1, max: ideal + (weight * weights.length) / total };
}

export interface SlotChange {
  slot: number;
  /** The backend identity the slot names after the change; undefined: no backend. */
  backend: string | undefined;
}

/**
 * The slots whose backend differs between two tables, in slot order. Tables of
 * different sizes differ everywhere (the slot of a flow depends on M).
 */
export function diffTable(before: MaglevTable, after: MaglevTable): SlotChange[] {
  const changes: SlotChange[] = [];
  const sameSize = before.size === after.size;
  for (let slot = 0; slot < after.size; slot++) {
    const was = sameSize ? before.slots[slot]! : NO_BACKEND;
    const is = after.slots[slot]!;
    const wasId = was === NO_BACKEND ? undefined : before.backends[was];
    const isId = is === NO_BACKEND ? undefined : after.backends[is];
    if (!sameSize || wasId !== isId) changes.push({ slot, backend: isId });
  }
  return changes;
}
