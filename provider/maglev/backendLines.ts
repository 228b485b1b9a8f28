/**
 * A backend as one line of text, the form a MaglevBackendSet holds in state (one line
 * a backend, sorted) and a host records as applied: "10.0.0.2", "10.0.0.2 weight 3",
 * "[2001:db8::2]:8080 mac 02:00:00:00:00:0a". The first word is the backend's key
 * (backendKey: its Maglev identity), then `weight` (omitted at 1) and `mac` when set,
 * so a preview shows an added, removed or reweighted backend as one line.
 */
import { z } from "zod";
import { backendKey, backendsSchema, type Backend } from "./schema";

export function backendLine(backend: Backend): string {
  return `${backendKey(backend)}${backend.weight !== 1 ? ` weight ${backend.weight}` : ""}${backend.mac !== undefined ? ` mac ${backend.mac}` : ""}`;
}

const LINE_FORM = 'write a backend as "address[:port] [weight N] [mac xx:xx:xx:xx:xx:xx]", e.g. "10.0.0.2 weight 2" or "[2001:db8::2]:8080"';

/**
 * A line as the backend object it names (validated afterwards by the backend schema,
 * which names the bad field), or why the line has no such form.
 */
export function parseBackendLine(text: string): Record<string, unknown> | { problem: string } {
  const [key = "", ...words] = text.trim().split(/\s+/);
  const bracketed = /^\[([^\]]+)\]:(\d+)$/.exec(key);
  const v4Port = /^([^:[\]]+):(\d+)$/.exec(key);
  const [address, port] = bracketed ? [bracketed[1]!, Number(bracketed[2])] : v4Port ? [v4Port[1]!, Number(v4Port[2])] : [key, undefined];
  const backend: Record<string, unknown> = { address, ...(port !== undefined ? { port } : {}) };
  for (let i = 0; i < words.length; i += 2) {
    const [word, value] = [words[i]!, words[i + 1]];
    if (value === undefined || (word !== "weight" && word !== "mac") || word in backend) return { problem: `"${text}": ${LINE_FORM}` };
    backend[word] = word === "weight" ? (/^\d+$/.test(value) ? Number(value) : value) : value;
  }
  return backend;
}

/**
 * Backends as a list of lines or objects (lines parsed first), or the record form keyed
 * by line, validated and canonicalised as the service's inline `backends` are (a bad one
 * named by its index, the same backend twice refused); keyed by canonical line, each
 * line's value its backend key.
 */
export const backendLines = z.union([z.array(z.unknown()), z.record(z.string(), z.unknown())]).transform((raw, ctx): Record<string, string> => {
  const written = Array.isArray(raw) ? raw : Object.keys(raw);
  let unreadable = false;
  const objects = written.map((item, at) => {
    if (typeof item !== "string") return item;
    const parsed = parseBackendLine(item);
    if ("problem" in parsed) {
      ctx.addIssue({ code: "custom", path: [at], message: parsed.problem as string });
      unreadable = true;
    }
    return parsed;
  });
  if (unreadable) return z.NEVER;
  const result = backendsSchema.safeParse(objects);
  if (!result.success) {
    for (const issue of result.error.issues) ctx.addIssue({ code: "custom", path: issue.path.map((p) => (typeof p === "symbol" ? String(p) : p)), message: issue.message });
    return z.NEVER;
  }
  return Object.fromEntries(Object.entries(result.data).map(([key, backend]) => [backendLine(backend), key]));
});

/**
 * The backends a version's lines name, as the service's inputs key them (backendKey) and
 * in their order (so the Maglev tables are the inline form's for the same backends).
 * Remembered per frozen array: a registered version is the same frozen array for every
 * host of a deployment.
 */
const parsedVersions = new WeakMap<readonly string[], Record<string, Backend>>();

export function backendsOfLines(lines: readonly string[]): Record<string, Backend> {
  const known = parsedVersions.get(lines);
  if (known) return known;
  const backends = backendsSchema.parse(lines.map((line) => parseBackendLine(line)));
  if (Object.isFrozen(lines)) parsedVersions.set(lines, backends);
  return backends;
}

/** What a host records as applied for a service's backends: their lines. */
export function appliedBackendLines(backends: Record<string, Backend>): string[] {
  return Object.values(backends).map(backendLine);
}

/**
 * The backends a host's records hold, as lines comparable with the recorded ones: a
 * record whose backend the record names takes that backend's line (the records carry no
 * weight, which only the tables show), any other is its key alone. So refresh reports
 * a backend added or removed on the host, not every line.
 */
export function linesOnHost(recordKeys: Iterable<string>, recorded: readonly string[]): string[] {
  const byKey = new Map(recorded.map((line) => [line.split(" ", 1)[0]!, line]));
  return [...new Set(recordKeys)].map((key) => byKey.get(key) ?? key);
}
