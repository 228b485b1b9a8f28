/** Input rules shared by every resource kind. */
import { z } from "zod";
import { canonicalPrefix, CidrError } from "./cidr";

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
    return canonicalPrefix(text);
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
        const parsed = cidr.safeParse(text);
        if (parsed.success) canonical.add(parsed.data);
        else ctx.addIssue({ code: "custom", path: Array.isArray(raw) ? [index] : [text], message: parsed.error.issues[0]?.message ?? "invalid" });
      });
      if (canonical.size > maxEntries) {
        ctx.addIssue({ code: "custom", message: `has ${canonical.size} entries; the map holds at most ${maxEntries}` });
      }
      return sortedRecord([...canonical], value);
    });
}

export function sortedRecord<V>(keys: string[], value: V): Record<string, V> {
  const out: Record<string, V> = {};
  for (const key of [...keys].sort(compareCidrText)) out[key] = value;
  return out;
}

function compareCidrText(a: string, b: string): number {
  // IPv4 before IPv6, then numerically, so previews list entries in a natural order.
  const va = a.includes(":") ? 1 : 0;
  const vb = b.includes(":") ? 1 : 0;
  if (va !== vb) return va - vb;
  return a.localeCompare(b, "en", { numeric: true });
}
