// Small helpers the benchmarks share: command-line options, wall-clock timing,
// the machine's load, and the .bench/<name>.json record each bench leaves.
import { mkdirSync, writeFileSync } from "node:fs";
import { loadavg } from "node:os";
import { join, resolve } from "node:path";

export const REPO_ROOT = resolve(__dirname, "..");

/** The value after `--<name>` on the command line, or `fallback` when the option is absent. */
export function option(name: string, fallback: string, argv: readonly string[] = process.argv.slice(2)): string {
  const at = argv.indexOf(`--${name}`);
  if (at < 0) return fallback;
  const value = argv[at + 1];
  if (value === undefined || value.startsWith("--")) throw new Error(`--${name} needs a value`);
  return value;
}

/** A numeric option, e.g. `--repeat 1000000`. */
export function numberOption(name: string, fallback: number): number {
  const value = Number(option(name, String(fallback)));
  if (!Number.isFinite(value)) throw new Error(`--${name} must be a number`);
  return value;
}

/** A comma-separated list of positive whole numbers, e.g. `--hosts 1,10,30`. */
export function numberList(name: string, fallback: string): number[] {
  const list = option(name, fallback).split(",").map(Number);
  if (list.some((n) => !Number.isInteger(n) || n < 1)) throw new Error(`--${name} must be positive whole numbers separated by commas, e.g. ${fallback}`);
  return list;
}

/** Wall time of `fn`, in seconds. */
export async function seconds(fn: () => Promise<unknown>): Promise<number> {
  const start = process.hrtime.bigint();
  await fn();
  return Number(process.hrtime.bigint() - start) / 1e9;
}

/** 1, 5 and 15 minute load averages, as `uptime` prints them: the machine is shared, so a figure needs its context. */
export function loadAverage(): string {
  return loadavg()
    .map((l) => l.toFixed(2))
    .join(", ");
}

/** Prints a table: columns padded to their widest cell, those in `leftColumns` left-aligned, the others right-aligned. */
export function printTable(header: readonly string[], rows: readonly (readonly string[])[], leftColumns: readonly number[] = [0]): void {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (cells: readonly string[]) => cells.map((c, i) => (leftColumns.includes(i) ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join("  ");
  console.log(line(header));
  console.log(widths.map((w) => "-".repeat(w)).join("  "));
  for (const r of rows) console.log(line(r));
}

/** Writes `.bench/<name>.json` (gitignored) with the date in front of `record`. */
export function writeBenchRecord(name: string, record: Record<string, unknown>): string {
  const dir = join(REPO_ROOT, ".bench");
  mkdirSync(dir, { recursive: true });
  const file = join(dir, `${name}.json`);
  writeFileSync(file, JSON.stringify({ date: new Date().toISOString(), ...record }, null, 2));
  return file;
}
