/**
 * Digests of resource outputs: what a fleet calls a host's "version", and what
 * makes a wave's health gate run again. Canonical JSON (sorted keys, undefined
 * dropped), so the digest depends on values only, never on the order in which
 * a program or the engine happened to build an object.
 */
import { createHash } from "node:crypto";

export function canonicalJson(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map((v) => (v === undefined ? "null" : canonicalJson(v))).join(",")}]`;
  if (value && typeof value === "object") {
    const record = value as Record<string, unknown>;
    const keys = Object.keys(record)
      .filter((k) => record[k] !== undefined)
      .sort();
    return `{${keys.map((k) => `${JSON.stringify(k)}:${canonicalJson(record[k])}`).join(",")}}`;
  }
  return value === undefined ? "null" : JSON.stringify(value);
}

/** sha256 (hex) of the canonical JSON of `value`. */
export function digestOf(value: unknown): string {
  return createHash("sha256").update(canonicalJson(value)).digest("hex");
}
