/** Input rules shared by every resource kind. */
import { z } from "zod";
import { canonicalInputPrefix, CidrError, parsePrefix } from "./cidr";

// The kernel accepts any name under 16 bytes without '/', ':' or white space; we
// accept the subset that Linux tooling produces, so a name can never be read as
// an option or a shell word anywhere it is printed.
export const interfaceName = z
  .string()
  .min(1, "must not be empty")
  .max(15, "must be at most 15 characters (the kernel's IFNAMSIZ limit)")
  .regex(/^[A-Za-z0-9][A-Za-z0-9_.-]*$/, "must start with a letter or digit and contain only letters, digits, '_', '.' and '-'")
  .refine((name) => name !== "." && name !== "..", "must not be '.' or '..'");

/**
 * The per-resource pin directory name under /sys/fs/bpf/bpfleet/<kind>/. bpffs
 * refuses names containing '.', so a dot is rejected here, before any host is touched.
 */
export const pinName = z
  .string()
  .min(1, "must not be empty")
  .max(64, "must be at most 64 characters")
  .regex(/^[A-Za-z0-9][A-Za-z0-9_-]*$/, "must start with a letter or digit and contain only letters, digits, '_' and '-' (bpffs refuses '.')");

/** An IPv4/IPv6 address or CIDR prefix, turned into canonical text (network address, prefix length). */
export const cidr = z.string().transform((text, ctx) => {
  try {
    return canonicalInputPrefix(text);
  } catch (err) {
    ctx.addIssue({ code: "custom", message: err instanceof CidrError ? err.message : String(err) });
    return z.NEVER;
  }
});

/**
 * A set of CIDR entries, given as a list (any order, duplicates allowed) or as the
 * canonical object form kept in state. Always becomes `{ "<canonical cidr>": value }`
 * with sorted keys, so the engine's diff of inputs is exactly the entry-level diff.
 */
export function cidrSet<V extends string>(value: V, maxEntries: number) {
  return z
    .union([z.array(z.string()), z.record(z.string(), z.literal(value))])
    .transform((raw, ctx) => {
      const texts = Array.isArray(raw) ? raw : Object.keys(raw);
      const canonical = new Set<string>();
      texts.forEach((text, index) => {
        try {
          canonical.add(canonicalInputPrefix(text));
        } catch (err) {
          ctx.addIssue({ code: "custom", path: Array.isArray(raw) ? [index] : [text], message: err instanceof CidrError ? err.message : String(err) });
        }
      });
      if (canonical.size > maxEntries) {
        ctx.addIssue({ code: "custom", message: `has ${canonical.size} entries; the map holds at most ${maxEntries}` });
      }
      return sortedRecord([...canonical], value);
    });
}

/**
 * The items of a keyed set given as a list (texts or objects, duplicates allowed) or
 * as the canonical `{ "<text>": "<value>" }` form kept in state, by canonical text.
 * `parse` reads one item and throws `UserError` for a mistake of the user's, which
 * becomes an issue at the item's index or key; in the record form the value must be
 * the one the key's own text names (`valueName`, e.g. "the rule's action").
 */
export function canonicalItems<I, T>(
  raw: readonly I[] | Record<string, string>,
  ctx: z.RefinementCtx,
  item: { parse(input: I | string): T; text(item: T): string; value(item: T): string; valueName: string; UserError: new (message: string) => Error },
): Map<string, T> {
  const entries: [I | string, (string | number)[]][] = Array.isArray(raw) ? raw.map((r, i) => [r, [i]]) : Object.keys(raw).map((k) => [k, [k]]);
  const canonical = new Map<string, T>();
  for (const [input, path] of entries) {
    try {
      const parsed = item.parse(input);
      if (!Array.isArray(raw) && (raw as Record<string, string>)[input as string] !== item.value(parsed)) {
        throw new item.UserError(`the value must be ${item.valueName}, "${item.value(parsed)}"`);
      }
      canonical.set(item.text(parsed), parsed);
    } catch (err) {
      if (!(err instanceof item.UserError)) throw err;
      ctx.addIssue({ code: "custom", path, message: err.message });
    }
  }
  return canonical;
}

export function sortedRecord<V>(keys: string[], value: V): Record<string, V> {
  const out: Record<string, V> = {};
  for (const key of sortCidrs(keys)) out[key] = value;
  return out;
}

/**
 * IPv4 before IPv6, then by address bytes, then by prefix length, so previews list
 * entries in a natural order. Decorate-sort-undecorate: one parse per entry, so a
 * 100k-entry list sorts in milliseconds.
 */
function sortCidrs(keys: string[]): string[] {
  const decorated = keys.map((key) => {
    const prefix = parsePrefix(key);
    return { key, sortKey: `${prefix.family}${Buffer.from(prefix.bytes).toString("hex")}${String(prefix.prefixLength).padStart(3, "0")}` };
  });
  decorated.sort((a, b) => (a.sortKey < b.sortKey ? -1 : a.sortKey > b.sortKey ? 1 : 0));
  return decorated.map((d) => d.key);
}

/** A slot of an interface's XDP chain (bpf/include/xdp_chain.h): 0 runs first. */
export const chainPriority = z
  .number("must be an integer from 0 to 7 (the slot in the interface's XDP chain; 0 runs first)")
  .int("must be an integer from 0 to 7")
  .min(0, "must be from 0 to 7 (0 runs first)")
  .max(7, "must be from 0 to 7: an interface's XDP chain has 8 slots");
