/**
 * The JSON that bpftool, ip and tc print on a host, as bpfleet reads it: one zod
 * schema per command, and one function that parses a command's output against
 * its schema. Output of an unexpected shape (another bpftool or iproute2 than the
 * ones bpfleet knows, a tool that printed a warning before its JSON) fails here,
 * naming the host, the command and what was unexpected, instead of surfacing
 * later as an undefined id or a TypeError far from its cause.
 *
 * Schemas list only the fields bpfleet reads; other fields are dropped.
 */
import { z } from "zod";

/** Where a piece of JSON came from, for the error when it is not what bpfleet expects. */
export interface JsonSource {
  /** The host's label; omitted by pure parsers, whose callers' errors name the host. */
  host?: string;
  /** The command as it ran on the host, e.g. "bpftool -j net show dev eth0". */
  command: string;
}

export class HostOutputError extends Error {
  constructor(
    readonly source: JsonSource,
    readonly problem: string,
  ) {
    super(`${source.host ? `${source.host}: ` : ""}\`${source.command}\` printed ${problem}, which bpfleet cannot read. Check which bpftool and iproute2 the host runs (\`bpftool version\`, \`ip -V\`).`);
    this.name = "HostOutputError";
  }
}

function excerpt(text: string): string {
  const flat = text.replace(/\s+/g, " ").trim();
  return flat.length > 80 ? `${flat.slice(0, 80)}…` : flat;
}

function pathOf(path: readonly PropertyKey[]): string {
  return path.map((p) => (typeof p === "number" ? `[${p}]` : `.${String(p)}`)).join("").replace(/^\./, "") || "the top level";
}

// A union's own message is "Invalid input"; its first branch's first issue says what was wrong.
function firstIssue(issue: z.core.$ZodIssue): { path: PropertyKey[]; message: string } {
  const branch = issue.code === "invalid_union" ? issue.errors[0]?.[0] : undefined;
  if (!branch) return { path: issue.path, message: issue.message };
  const inner = firstIssue(branch);
  return { path: [...issue.path, ...inner.path], message: inner.message };
}

/** Parses `text` (a command's stdout) and checks it against `schema`. */
export function hostJson<S extends z.ZodType>(schema: S, text: string, source: JsonSource): z.output<S> {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    throw new HostOutputError(source, `something other than JSON (it began: ${JSON.stringify(excerpt(text))})`);
  }
  const parsed = schema.safeParse(value);
  if (!parsed.success) {
    const issue = firstIssue(parsed.error.issues[0]!);
    throw new HostOutputError(source, `JSON of another shape, at ${pathOf(issue.path)}: ${issue.message} (it began: ${JSON.stringify(excerpt(text))})`);
  }
  return parsed.data;
}

// bpftool prog show pinned <pin>: the few fields bpfleet reads of a program.
export const progShow = z.object({ id: z.number(), tag: z.string(), name: z.string() });
/** A program whose id alone matters (a dispatcher, a chain member). */
export const progId = z.object({ id: z.number() });

// bpftool map show pinned <pin>.
export const mapShow = z.object({ max_entries: z.number().optional(), bytes_memlock: z.number().optional() });

// bpftool net show dev <iface>: one object per device. An XDP entry names its mode
// ("driver", "generic", "offload") and program; with programs in several modes at
// once the kernel reports "multi" and bpftool lists them under multi_attachments,
// read here as mode "multi" with the first one's program.
const xdpEntry = z.union([
  z.object({ mode: z.string(), id: z.number() }),
  z.object({ multi_attachments: z.array(z.object({ mode: z.string(), id: z.number() })).min(1) }).transform((m) => ({ mode: "multi", id: m.multi_attachments[0]!.id })),
]);
export const netShow = z.array(
  z.object({
    xdp: z.array(xdpEntry).optional(),
    tc: z.array(z.object({ kind: z.string().optional(), id: z.number().optional(), prog_id: z.number().optional() })).optional(),
  }),
);

/** The XDP program `bpftool net show dev` found on the device, if any. */
export function xdpOfNetShow(net: z.output<typeof netShow> | null): { mode: string; programId: number } | undefined {
  const xdp = net?.[0]?.xdp?.[0];
  return xdp ? { mode: xdp.mode, programId: xdp.id } : undefined;
}

// bpftool -j feature probe kernel: only the program types and their helpers.
export const featureProbe = z.object({
  program_types: z.record(z.string(), z.boolean()).optional(),
  helpers: z.record(z.string(), z.array(z.string())).optional(),
});

// Bytes print as "0x0a"; not checked one by one, since a Maglev table dump holds
// about a million of them.
const hexBytes = z.array(z.string());

// bpftool -j map dump pinned <pin>: raw key and value(s) as hex bytes; per-CPU maps
// give one value per CPU. With BTF, bpftool adds a "formatted" copy (read for the
// XDP chain's prog array, whose formatted value is the program id).
export const mapDump = z.array(
  z.object({
    key: hexBytes,
    value: hexBytes.optional(),
    values: z.array(z.object({ cpu: z.number(), value: hexBytes })).optional(),
  }),
);
export const chainDump = z.array(z.object({ formatted: z.object({ key: z.number(), value: z.number() }).optional() }));

// bpftool -j batch file - of `map lookup` lines: one object per line, its output
// null (or absent) when the line failed.
export const batchLookups = z.array(
  z.object({
    output: z
      .object({ value: hexBytes.optional(), values: z.array(z.object({ value: hexBytes })).optional() })
      .nullish(),
  }),
);

// ip [-d] -j link show.
export const ipLinks = z.array(
  z.object({
    ifindex: z.number(),
    ifname: z.string(),
    link_type: z.string().optional(),
    altnames: z.array(z.string()).optional(),
    flags: z.array(z.string()).optional(),
    ifalias: z.string().optional(),
    linkinfo: z.object({ info_kind: z.string().optional(), info_data: z.record(z.string(), z.unknown()).optional() }).optional(),
  }),
);

// ip -j route get <address>.
export const ipRouteGet = z.array(z.object({ dev: z.string().optional(), prefsrc: z.string().optional() }));

// tc -j filter show dev <iface> ingress|egress: a line per priority (no options)
// and one per filter (its handle printed as "0x1").
export const tcFilterRows = z.array(
  z.object({
    protocol: z.string().optional(),
    pref: z.number().optional(),
    kind: z.string().optional(),
    options: z
      .object({
        handle: z.string().optional(),
        "direct-action": z.boolean().optional(),
        prog: z.object({ id: z.number().optional(), name: z.string().optional(), tag: z.string().optional() }).optional(),
      })
      .optional(),
  }),
);

// tc -j qdisc show dev <iface>.
export const tcQdiscRows = z.array(z.object({ kind: z.string().optional(), parent: z.string().optional() }));
