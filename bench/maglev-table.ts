/**
 * What a Maglev table costs to compute and to write.
 *
 *   sudo npx tsx bench/maglev-table.ts [--size M] [--rounds N]
 *
 * 1. buildTable for M = 65537 with N = 10, 100, 1000 backends (median of
 *    `rounds` builds after one warm-up), in this Node process.
 * 2. For each N: the map writes of a one-backend change (add one, remove one:
 *    the backend record plus the changed slots, as provider/maglev/codec.ts
 *    encodes them) against a full write (every record and every slot), and the
 *    wall time of each through one `bpftool batch file` call against the real
 *    pinned maps of bpf/obj/xdp_maglev.bpf.o, loaded in the root namespace
 *    (the time includes starting bpftool, as the provider pays it on a host).
 * 3. A fleet's plan (issue 10): `--hosts` H hosts (default 100) with the same N
 *    backends each plan a one-backend change, which builds the old and the new
 *    table per host. "before": every build computes (the cache cleared before each,
 *    as before tables were kept); "after": the process keeps its tables, so the fleet
 *    computes each once. Rounds alternate before/after; medians. Runs first, needs no
 *    kernel.
 * Results are also written to .bench/maglev-table.json.
 */
import { cpus, release } from "node:os";
import { buildTable, clearTableCache, diffTable, type MaglevTable } from "../provider/maglev/table";
import { encodeBackend, encodeIndex, MAPS, tableOperations } from "../provider/maglev/codec";
import { buildObjects, kernelTestsUnavailable, loadProgram, objectPath, type LoadedProgram, type MapEntry } from "../test/kernel/progRun";
import { numberOption, printTable, writeBenchRecord } from "./support";

const M = numberOption("size", 65537);
const ROUNDS = numberOption("rounds", 9);
const HOSTS = numberOption("hosts", 100);

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

function ms(start: bigint): number {
  return Number(process.hrtime.bigint() - start) / 1e6;
}

/** Backends 10.x.y.z:8080, distinct and deterministic. */
function backends(n: number, from = 0): string[] {
  return Array.from({ length: n }, (_, i) => {
    const k = from + i + 1;
    return `10.${(k >> 16) & 255}.${(k >> 8) & 255}.${k & 255}:8080`;
  });
}

const record = (id: string) => encodeBackend({ address: id.slice(0, id.lastIndexOf(":")), port: 8080, mac: "02:00:00:00:00:01" });

/** Stable indexes: the position in `universe` plus one (0 names no backend). */
function indexer(universe: string[]): (id: string) => number {
  const index = new Map(universe.map((id, i) => [id, i + 1]));
  return (id) => index.get(id)!;
}

function entries(ops: ReturnType<typeof tableOperations>): MapEntry[] {
  return ops.map((o) => ({ key: Buffer.from(o.key), value: Buffer.from((o as { value: Uint8Array }).value) }));
}

interface ChangeRow {
  n: number;
  change: string;
  slotWrites: number;
  recordWrites: number;
  totalWrites: number;
  idealSlots: number;
  planMs: number;
  writeMs: number;
}

async function timeWrite(lb: LoadedProgram, records: MapEntry[], slots: MapEntry[]): Promise<number> {
  const t0 = process.hrtime.bigint();
  // Records and slots in one batch each; the provider sends them in one round trip.
  if (records.length) await lb.updateMap(MAPS.backends, records);
  if (slots.length) await lb.updateMap(MAPS.table, slots);
  return ms(t0);
}

/** H hosts planning the same one-backend change: the old and the new table each. */
function fleetPlan(old: { id: string }[], grown: { id: string }[], cached: boolean): number {
  clearTableCache();
  const t0 = process.hrtime.bigint();
  for (let h = 0; h < HOSTS; h++) {
    if (!cached) clearTableCache();
    buildTable(old, M);
    if (!cached) clearTableCache();
    buildTable(grown, M);
  }
  return ms(t0);
}

function fleetSection(): { n: number; beforeMs: number; afterMs: number }[] {
  const out: { n: number; beforeMs: number; afterMs: number }[] = [];
  for (const n of [10, 100, 1000]) {
    const old = backends(n).map((id) => ({ id }));
    const grown = backends(n + 1).map((id) => ({ id }));
    const before: number[] = [];
    const after: number[] = [];
    for (let r = 0; r < ROUNDS; r++) {
      if (r % 2 === 0) {
        before.push(fleetPlan(old, grown, false));
        after.push(fleetPlan(old, grown, true));
      } else {
        after.push(fleetPlan(old, grown, true));
        before.push(fleetPlan(old, grown, false));
      }
    }
    out.push({ n, beforeMs: median(before), afterMs: median(after) });
  }
  console.log(`a fleet's tables: ${HOSTS} hosts, the same N backends, one-backend change (old + new table per host), M = ${M}, median of ${ROUNDS}:`);
  printTable(
    ["N", "before: each host computes (ms)", "after: once per process (ms)", "after/before"],
    out.map((f) => [String(f.n), f.beforeMs.toFixed(1), f.afterMs.toFixed(1), (f.afterMs / f.beforeMs).toFixed(3)]),
    [],
  );
  console.log("");
  return out;
}

async function main(): Promise<void> {
  const fleet = fleetSection();
  const unavailable = kernelTestsUnavailable();
  if (unavailable) {
    console.error(`bench/maglev-table: ${unavailable}`);
    process.exit(2);
  }
  await buildObjects();

  const builds: { n: number; buildMs: number }[] = [];
  for (const n of [10, 100, 1000]) {
    const set = backends(n).map((id) => ({ id }));
    buildTable(set, M);
    const times: number[] = [];
    for (let r = 0; r < ROUNDS; r++) {
      // The computation itself, not the process's kept table.
      clearTableCache();
      const t0 = process.hrtime.bigint();
      buildTable(set, M);
      times.push(ms(t0));
    }
    builds.push({ n, buildMs: median(times) });
  }

  const lb = await loadProgram(objectPath("xdp_maglev"));
  const rows: ChangeRow[] = [];
  try {
    for (const n of [10, 100, 1000]) {
      const universe = backends(n + 1);
      const indexOf = indexer(universe);
      const base = universe.slice(0, n);
      const pin = lb.mapPin(MAPS.table);

      // Full write: every record, every slot.
      clearTableCache(); // plan times below are of a host's first plan, as before tables were kept
      let t0 = process.hrtime.bigint();
      const table: MaglevTable = buildTable(base.map((id) => ({ id })), M);
      const fullOps = tableOperations(diffTable(buildTable([], M), table), 0, indexOf, pin);
      const fullRecords = base.map((id) => ({ key: Buffer.from(encodeIndex(indexOf(id))), value: Buffer.from(record(id)) }));
      const fullPlan = ms(t0);
      const fullWrite = await timeWrite(lb, fullRecords, entries(fullOps));
      rows.push({ n, change: "full table", slotWrites: fullOps.length, recordWrites: fullRecords.length, totalWrites: fullOps.length + fullRecords.length, idealSlots: M, planMs: fullPlan, writeMs: fullWrite });

      // Add one backend: its record, then the slots that change.
      const added = universe[n]!;
      clearTableCache();
      t0 = process.hrtime.bigint();
      const grown = buildTable(universe.map((id) => ({ id })), M);
      const addOps = tableOperations(diffTable(table, grown), 0, indexOf, pin);
      const addPlan = ms(t0);
      const addWrite = await timeWrite(lb, [{ key: Buffer.from(encodeIndex(indexOf(added))), value: Buffer.from(record(added)) }], entries(addOps));
      rows.push({ n, change: "add one", slotWrites: addOps.length, recordWrites: 1, totalWrites: addOps.length + 1, idealSlots: Math.round(M / (n + 1)), planMs: addPlan, writeMs: addWrite });

      // Remove it again: the slots first, the cleared record last.
      clearTableCache();
      t0 = process.hrtime.bigint();
      const shrunk = buildTable(base.map((id) => ({ id })), M);
      const removeOps = tableOperations(diffTable(grown, shrunk), 0, indexOf, pin);
      const removePlan = ms(t0);
      const t1 = process.hrtime.bigint();
      await lb.updateMap(MAPS.table, entries(removeOps));
      await lb.updateMap(MAPS.backends, [{ key: Buffer.from(encodeIndex(indexOf(added))), value: Buffer.from(encodeBackend(undefined)) }]);
      rows.push({ n, change: "remove one", slotWrites: removeOps.length, recordWrites: 1, totalWrites: removeOps.length + 1, idealSlots: Math.round(M / (n + 1)), planMs: removePlan, writeMs: ms(t1) });
    }
  } finally {
    lb.close();
  }

  console.log(`kernel ${release()}, ${cpus()[0]?.model ?? "unknown CPU"}, Node ${process.version}, M = ${M}\n`);
  console.log("buildTable (median of " + ROUNDS + "):");
  for (const b of builds) console.log(`  N = ${String(b.n).padStart(4)}: ${b.buildMs.toFixed(1)} ms`);
  console.log("\nmap writes through bpftool batch (one call per map, into pinned maps of xdp_maglev):");
  const header = ["N", "change", "slot writes", "record writes", "total", "ideal slots", "plan ms", "write ms"];
  const table = rows.map((r) => [String(r.n), r.change, String(r.slotWrites), String(r.recordWrites), String(r.totalWrites), String(r.idealSlots), r.planMs.toFixed(1), r.writeMs.toFixed(1)]);
  printTable(header, table, [1]);

  writeBenchRecord("maglev-table", { size: M, rounds: ROUNDS, builds, rows, fleet: { hosts: HOSTS, rows: fleet } });
}

main().catch((e) => {
  console.error(e instanceof Error ? e.message : e);
  process.exit(1);
});
