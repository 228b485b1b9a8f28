/**
 * Inputs of TrafficMirror, as the user writes them and as check() canonicalises
 * them. Filters become a record keyed by a tcpdump-like expression
 * ("tcp and dst port 80"), so that a preview shows one `+`/`-` per filter
 * whatever order the user listed them in (DESIGN.md, "Inputs are canonical").
 */
import { isIPv4, isIPv6 } from "node:net";
import type * as pulumi from "@pulumi/pulumi";
import { z } from "zod";
import { canonicalInputPrefix, CidrError, formatAddress, parseInputPrefix } from "../cidr";
import { checkInputs, pathFailures, UNKNOWN } from "../dynamicAdapter";
import { credentialsSchema, hostSchema } from "../remote/hostSchema";
import { lockoutInputs } from "../remote/lockout";
import { sharedListDrift, sharedListRef } from "../sharedList";
import { interfaceName, pinName } from "../validation";

/**
 * Filters the program holds (MIRROR_MAX_FILTERS in bpf/include/tc_mirror.h);
 * test/kernel/trafficMirror.test.ts proves mirror_filters' max_entries is twice this.
 */
export const MAX_FILTERS = 64;

/** Protocols known by name; any other is given (and shown) as its number. */
export const PROTOCOL_NUMBERS = { icmp: 1, tcp: 6, udp: 17, icmpv6: 58, sctp: 132 } as const;
export type ProtocolName = keyof typeof PROTOCOL_NUMBERS;
/** The protocols whose headers start with a source and destination port. */
export const PORT_PROTOCOLS: readonly number[] = [6, 17, 132];

export interface PortRange {
  from: number;
  to: number;
}

/** A port (80) or an inclusive range ("1024-65535"), canonical: a number, or "a-b" when a < b. */
export type PortSpec = number | string;

export function parsePortSpec(spec: PortSpec): PortRange {
  const text = typeof spec === "number" ? String(spec) : spec.trim();
  const m = /^(\d{1,5})(?:\s*-\s*(\d{1,5}))?$/.exec(text);
  if (!m) throw new Error(`"${String(spec)}" is not a port (0-65535) or a port range "from-to"`);
  const from = Number(m[1]);
  const to = m[2] === undefined ? from : Number(m[2]);
  if (from > 65535 || to > 65535) throw new Error(`"${String(spec)}": ports go from 0 to 65535`);
  if (from > to) throw new Error(`"${String(spec)}": the range's first port is greater than its last`);
  return { from, to };
}

export function formatPortRange(range: PortRange): PortSpec {
  return range.from === range.to ? range.from : `${range.from}-${range.to}`;
}

const portSpec = z.union([z.number(), z.string()]).transform((spec, ctx) => {
  if (typeof spec === "number" && !Number.isInteger(spec)) {
    ctx.addIssue({ code: "custom", message: `${spec} is not a whole port number` });
    return z.NEVER;
  }
  try {
    const range = parsePortSpec(spec);
    // As TcPolicy: no connection uses port 0, so a filter on it is a slip (e.g. a
    // range meant to start at 1); the codec still takes 0 for crafted packets.
    if (range.from === 0) {
      ctx.addIssue({ code: "custom", message: range.to === 0 ? "port 0 is not a port traffic is addressed to (use 1-65535)" : `"${String(spec)}": port 0 is not a port traffic is addressed to; start the range at 1 ("${formatPortRange({ from: 1, to: range.to })}")` });
      return z.NEVER;
    }
    return formatPortRange(range);
  } catch (err) {
    ctx.addIssue({ code: "custom", message: (err as Error).message });
    return z.NEVER;
  }
});

const protocol = z.union([z.enum(Object.keys(PROTOCOL_NUMBERS) as [ProtocolName, ...ProtocolName[]]), z.number().int().min(0).max(255)]).transform((p) => {
  const number = typeof p === "number" ? p : PROTOCOL_NUMBERS[p];
  const name = (Object.keys(PROTOCOL_NUMBERS) as ProtocolName[]).find((n) => PROTOCOL_NUMBERS[n] === number);
  return name ?? number;
});

export function protocolNumber(p: ProtocolName | number): number {
  return typeof p === "number" ? p : PROTOCOL_NUMBERS[p];
}

const prefix = z.string().transform((text, ctx) => {
  try {
    return canonicalInputPrefix(text);
  } catch (err) {
    ctx.addIssue({ code: "custom", message: err instanceof CidrError ? err.message : String(err) });
    return z.NEVER;
  }
});

/**
 * Which packets to mirror. Every field given must match (AND); a packet is
 * mirrored when any filter matches (OR). A filter with no fields matches every
 * packet, IP or not.
 */
export const filterSchema = z
  .strictObject({
    /** "tcp", "udp", "sctp", "icmp", "icmpv6", or an IP protocol number 0-255. Default: any. */
    protocol: protocol.optional(),
    /** Source IPv4/IPv6 address or CIDR prefix. Default: any. */
    source: prefix.optional(),
    /** Destination IPv4/IPv6 address or CIDR prefix, of the same family as source. Default: any. */
    destination: prefix.optional(),
    /**
     * Source port (80) or inclusive range ("1024-65535"), 1-65535. Ports imply tcp,
     * udp or sctp when protocol is not given; IPv4/IPv6 fragments after the first
     * carry no ports and never match a port filter.
     */
    sourcePort: portSpec.optional(),
    /** Destination port or range; same rules as sourcePort. */
    destinationPort: portSpec.optional(),
  })
  .superRefine((f, ctx) => {
    const family = (p: string | undefined) => (p === undefined ? undefined : p.includes(":") ? 6 : 4);
    const src = family(f.source);
    const dst = family(f.destination);
    if (src && dst && src !== dst) {
      ctx.addIssue({ code: "custom", path: ["destination"], message: `is IPv${dst} but source is IPv${src}: a packet has one address family` });
    }
    const fam = src ?? dst;
    if (f.protocol === "icmp" && fam === 6) ctx.addIssue({ code: "custom", path: ["protocol"], message: "icmp is IPv4's; IPv6 packets carry icmpv6" });
    if (f.protocol === "icmpv6" && fam === 4) ctx.addIssue({ code: "custom", path: ["protocol"], message: "icmpv6 is IPv6's; IPv4 packets carry icmp" });
    if (f.protocol !== undefined && !PORT_PROTOCOLS.includes(protocolNumber(f.protocol))) {
      for (const field of ["sourcePort", "destinationPort"] as const) {
        if (f[field] !== undefined) ctx.addIssue({ code: "custom", path: [field], message: `protocol ${f.protocol} has no ports; ports need tcp, udp or sctp` });
      }
    }
  });

export type MirrorFilter = z.infer<typeof filterSchema>;

/**
 * The filter as a tcpdump-style expression: the key it has in state and in
 * previews. Equal filters give equal text, and different filters different text.
 */
export function filterKey(f: MirrorFilter): string {
  const parts: string[] = [];
  if (f.protocol !== undefined) parts.push(typeof f.protocol === "number" ? `proto ${f.protocol}` : f.protocol);
  if (f.source !== undefined) parts.push(`src net ${f.source}`);
  if (f.destination !== undefined) parts.push(`dst net ${f.destination}`);
  const port = (dir: string, spec: PortSpec) => (typeof spec === "number" ? `${dir} port ${spec}` : `${dir} portrange ${spec}`);
  if (f.sourcePort !== undefined) parts.push(port("src", f.sourcePort));
  if (f.destinationPort !== undefined) parts.push(port("dst", f.destinationPort));
  return parts.length ? parts.join(" and ") : "all";
}

/** Only the fields that are set, in one order, so state never holds `undefined`s. */
export function canonicalFilter(f: MirrorFilter): MirrorFilter {
  const out: MirrorFilter = {};
  if (f.protocol !== undefined) out.protocol = f.protocol;
  if (f.source !== undefined) out.source = f.source;
  if (f.destination !== undefined) out.destination = f.destination;
  if (f.sourcePort !== undefined) out.sourcePort = f.sourcePort;
  if (f.destinationPort !== undefined) out.destinationPort = f.destinationPort;
  return out;
}

export function filterRecord(filters: readonly MirrorFilter[]): Record<string, MirrorFilter> {
  const byKey = new Map<string, MirrorFilter>();
  for (const f of filters) byKey.set(filterKey(f), canonicalFilter(f));
  const out: Record<string, MirrorFilter> = {};
  for (const key of [...byKey.keys()].sort()) out[key] = byKey.get(key)!;
  return out;
}

/**
 * A filter's fields from its text as filterKey() writes it ("tcp and dst port 80",
 * "proto 47 and src net 10.0.0.0/8", "all"), for filterSchema to judge: the form a
 * MirrorFilterSet's state holds, one filter a line. Case and spacing are free.
 */
export function filterFields(text: string): Record<string, unknown> {
  const normal = text.trim().replace(/\s+/g, " ").toLowerCase();
  const fields: Record<string, unknown> = {};
  if (normal === "all") return fields;
  const set = (field: string, value: unknown) => {
    if (field in fields) throw new Error(`"${text}" gives ${field} twice`);
    fields[field] = value;
  };
  for (const term of normal.split(" and ")) {
    let m: RegExpExecArray | null;
    if ((m = /^proto (\d+)$/.exec(term))) set("protocol", Number(m[1]));
    else if (Object.hasOwn(PROTOCOL_NUMBERS, term)) set("protocol", term);
    else if ((m = /^(src|dst) net (\S+)$/.exec(term))) set(m[1] === "src" ? "source" : "destination", m[2]);
    else if ((m = /^(src|dst) port (\d+)$/.exec(term))) set(m[1] === "src" ? "sourcePort" : "destinationPort", Number(m[2]));
    else if ((m = /^(src|dst) portrange (\d+ ?- ?\d+)$/.exec(term))) set(m[1] === "src" ? "sourcePort" : "destinationPort", m[2]);
    else {
      throw new Error(
        `"${text}": "${term}" is not a filter term (a protocol name or "proto N", "src net"/"dst net" PREFIX, "src port"/"dst port" N, "src portrange"/"dst portrange" A-B, joined by "and"; or "all")`,
      );
    }
  }
  return fields;
}

/**
 * A list of filters, or the record form check() produced (its keys are recomputed
 * from the values, never trusted); with `text`, a filter may also be given as its
 * text (filterFields), as a MirrorFilterSet's state holds it.
 */
function filterList(text: boolean) {
  return z.union([z.array(z.unknown()), z.record(z.string(), z.unknown())]).transform((raw, ctx) => {
    const entries: [string | number, unknown][] = Array.isArray(raw) ? raw.map((v, i) => [i, v]) : Object.entries(raw);
    const parsed: MirrorFilter[] = [];
    for (const [at, value] of entries) {
      let fields = value;
      if (text && typeof value === "string") {
        try {
          fields = filterFields(value);
        } catch (err) {
          ctx.addIssue({ code: "custom", path: [at], message: (err as Error).message });
          continue;
        }
      }
      const result = filterSchema.safeParse(fields);
      if (result.success) parsed.push(result.data);
      else for (const issue of result.error.issues) ctx.addIssue({ code: "custom", path: [at, ...issue.path.map((p) => (typeof p === "symbol" ? String(p) : p))], message: issue.message });
    }
    const record = filterRecord(parsed);
    const count = Object.keys(record).length;
    if (count > MAX_FILTERS) {
      ctx.addIssue({ code: "custom", message: `has ${count} distinct filters; the program holds at most ${MAX_FILTERS} (map mirror_filters has ${2 * MAX_FILTERS} slots: two sets of ${MAX_FILTERS}, one live while an update writes the other)` });
    }
    return record;
  });
}

const filtersSchema = filterList(false);

/** A MirrorFilterSet's filters: as a mirror's inline `filters`, or each as its text ("tcp and dst port 80"). */
export const filterSetFilters = filterList(true);

/** The filters of canonical texts (a set's version, registered or on the host): filterKey() of each is the text. */
export function filtersOfKeys(keys: readonly string[]): Record<string, MirrorFilter> {
  return filterRecord(keys.map((key) => filterSchema.parse(filterFields(key))));
}

/** An IP address (not a prefix, not a name): where a tunnel's packets go. Canonical text. */
export const ipAddress = z.string().transform((text, ctx) => {
  const trimmed = text.trim();
  if (!isIPv4(trimmed) && !(isIPv6(trimmed) && !trimmed.includes("%"))) {
    ctx.addIssue({ code: "custom", message: `"${text}" is not an IPv4 or IPv6 address (a tunnel endpoint must be an address, not a host name or a prefix)` });
    return z.NEVER;
  }
  try {
    // An IPv4-mapped endpoint becomes IPv4: as IPv6 the kernel would build a tunnel no packet can take.
    return formatAddress(parseInputPrefix(trimmed).bytes);
  } catch (err) {
    ctx.addIssue({ code: "custom", message: err instanceof CidrError ? err.message : String(err) });
    return z.NEVER;
  }
});

const ttl = z.number().int().min(1).max(255);

/** A VXLAN tunnel (RFC 7348) to a collector, created and owned by the mirror. */
export const vxlanTunnelSchema = z.strictObject({
  /** "vxlan". */
  type: z.literal("vxlan"),
  /** The collector's IPv4 or IPv6 address (an address, not a host name). */
  remote: ipAddress,
  /** VXLAN network identifier, 0-16777215. */
  vni: z.number().int().min(0).max(0xffffff),
  /** UDP destination port. Default 4789 (IANA). */
  port: z.number().int().min(1).max(65535).default(4789),
  /** Source address of the encapsulated packets. Default: chosen by the host's routing. */
  local: ipAddress.optional(),
  /** TTL (hop limit) of the encapsulated packets. Default: the kernel's (64). */
  ttl: ttl.optional(),
});

/** A GRE tunnel carrying Ethernet frames (gretap; ip6gretap for an IPv6 remote), created and owned by the mirror. */
export const gretapTunnelSchema = z.strictObject({
  /** "gretap". */
  type: z.literal("gretap"),
  /** The collector's IPv4 or IPv6 address. IPv6 makes an ip6gretap device. */
  remote: ipAddress,
  /** GRE key (RFC 2890), 0-4294967295. Default: no key. */
  key: z.number().int().min(0).max(0xffffffff).optional(),
  /** Source address of the encapsulated packets; required by the kernel for an IPv6 remote, optional for IPv4. */
  local: ipAddress.optional(),
  /** TTL (hop limit) of the encapsulated packets. Default: the kernel's (64). */
  ttl: ttl.optional(),
});

export const tunnelSchema = z.discriminatedUnion("type", [vxlanTunnelSchema, gretapTunnelSchema]).superRefine((t, ctx) => {
  if (t.local !== undefined && t.local.includes(":") !== t.remote.includes(":")) {
    ctx.addIssue({ code: "custom", path: ["local"], message: "must be of the same address family as remote" });
  }
  if (t.type === "gretap" && t.remote.includes(":") && t.local === undefined) {
    ctx.addIssue({ code: "custom", path: ["local"], message: "is required for an IPv6 gretap tunnel (ip6gretap needs its source address)" });
  }
});

export type TunnelSpec = z.infer<typeof tunnelSchema>;

/** Exactly one of: a local interface, or a tunnel this resource creates and owns. */
export const targetSchema = z
  .strictObject({
    /**
     * A local interface the copies are sent out of (a dummy, or a veth feeding a
     * capture tool). It must exist, be up, and differ from the mirrored interface
     * (and not be "lo"); bpfleet does not create or remove it. Egress copies of
     * the host's own packets still carry a partial L4 checksum (it is completed
     * after TC, on the way out); turn TX checksum offload off on the target
     * (`ethtool -K <target> tx off`) and the kernel completes the copies' too.
     */
    interface: interfaceName.optional(),
    /**
     * A tunnel to a remote collector: `{ type: "vxlan", remote, vni, port?, local?, ttl? }`
     * or `{ type: "gretap", remote, key?, local?, ttl? }`. The mirror creates it (named
     * "bfm" + a hash, see the `targetInterface` output) before pointing at it, replaces
     * it when a parameter changes, and removes it on delete. Its own encapsulated
     * packets are never mirrored, even when it leaves through the mirrored interface.
     */
    tunnel: tunnelSchema.optional(),
  })
  .superRefine((t, ctx) => {
    if ((t.interface === undefined) === (t.tunnel === undefined)) {
      ctx.addIssue({ code: "custom", message: "give exactly one of interface (a local interface) or tunnel (a remote collector)" });
    }
  });

export type MirrorTarget = z.infer<typeof targetSchema>;

export const trafficMirrorSchema = z.object({
  /** The host. Changing it replaces the mirror. */
  host: hostSchema,
  credentials: credentialsSchema.default({}),
  /** The interface whose traffic is mirrored, e.g. "eth0". Changing it replaces the mirror. */
  interface: interfaceName,
  /** The pin directory name, /sys/fs/bpf/bpfleet/traffic-mirror/<name>/: the SDK's `pinName`, documented there. */
  name: pinName,
  /**
   * "ingress" (received), "egress" (sent), "both", or "none" (program, maps and
   * tunnel in place, nothing attached: staging). Default "both". Changes in place.
   * A read that finds no filter attached reports "none".
   */
  direction: z.enum(["ingress", "egress", "both", "none"]).default("both"),
  /**
   * Up to 64 filters, ORed; none mirrors every packet. Order and duplicates do not
   * matter: state keeps them keyed by a tcpdump-like expression
   * ("tcp and dst port 80"), so a preview shows exactly the filters added and
   * removed. Changes in place; packets see either the old or the new list.
   */
  filters: filtersSchema.default({}),
  /**
   * A MirrorFilterSet to mirror by instead of `filters` (held once in the stack's
   * state, however many mirrors bind it): its name, digest and count, which is all
   * this mirror's state carries of it. The SDK fills it from `filterSet`. Give
   * `filters` or `filterSet`, not both.
   */
  filterSet: sharedListRef.optional(),
  /**
   * Set by `pulumi refresh`, never by you: filters the mirror's live set holds beyond
   * the MirrorFilterSet version the host recorded as applied ("stray") or lacks
   * ("missing"). The next `up` writes the set's filters again.
   */
  filterDrift: sharedListDrift.optional(),
  /**
   * Mirror 1 in N matching packets: every Nth on each CPU, deterministic, not
   * random (periodic traffic can alias with it). Default 1 (all).
   */
  sampleRate: z.number().int().min(1).max(0x7fffffff).default(1),
  /**
   * Where the copies go: exactly one of `interface` and `tunnel`. Changing it changes
   * in place: the new target is ready before the mirror points at it.
   */
  target: targetSchema,
  /**
   * TC filter priority on the interface's hooks, 1-65535 (lower runs first).
   * Default 1, so copies show packets before any other TC program acts on them;
   * the mirror always hands packets on to the next filter. Changing it replaces the mirror.
   */
  priority: z.number().int().min(1).max(0xffff).default(1),
  /**
   * When the mirrored interface, or the interface the tunnel's packets leave
   * through (its underlay), carries the management SSH session: before a
   * change, arm a revert timer on the host; after it, prove that a fresh SSH
   * login works, then disarm. If the login fails, the host undoes the change by
   * itself within `lockoutRevertSeconds` (config, filters and previous program
   * back, a tunnel the change made removed; a new mirror removed whole) and the
   * update fails saying so. A mirror never drops packets, but a change loads a
   * BPF object into the interface's hooks and may add a device on the path.
   * false applies changes without the timer. Default true.
   */
  lockoutGuard: lockoutInputs.lockoutGuard,
  /** Seconds until an undisarmed revert timer undoes the change (10–3600). Default 30. */
  lockoutRevertSeconds: lockoutInputs.lockoutRevertSeconds,
});

export type TrafficMirrorInputs = z.infer<typeof trafficMirrorSchema>;

/**
 * check() for TrafficMirror: the schema, then what it cannot see across
 * properties. A local target equal to the mirrored interface would send every
 * copy out of the interface it mirrors, mirroring it again (a loop); check
 * sees both names, so it refuses before any host is touched (the lifecycle
 * refuses it too, for a target that is the same device under another name).
 */
export function checkTrafficMirror(news: Record<string, unknown>): pulumi.dynamic.CheckResult {
  const result = checkInputs(trafficMirrorSchema, news);
  if (result.failures?.length || !result.inputs) return result;
  const inputs = result.inputs as Partial<TrafficMirrorInputs>;
  if (inputs.filterSet !== undefined && Object.keys(inputs.filters ?? {}).length > 0) {
    return { failures: pathFailures([{ property: "filterSet", reason: "filterSet: give the filters either as `filters` or as a `filterSet` (a MirrorFilterSet), not both" }], news) };
  }
  const target = inputs.target as { interface?: unknown } | undefined;
  if (typeof target?.interface === "string" && target.interface !== UNKNOWN && target.interface === inputs.interface) {
    return {
      failures: pathFailures(
        [{ property: "target.interface", reason: `target.interface: "${target.interface}" is the mirrored interface itself: every copy sent out of it would be mirrored again (a loop); pick another interface or a tunnel` }],
        news,
      ),
    };
  }
  return result;
}
export type Direction = TrafficMirrorInputs["direction"];

export interface TrafficMirrorCounters {
  /** Packets (and bytes) that matched a filter, before sampling. */
  matchedPackets: number;
  matchedBytes: number;
  /** Copies handed to the target. */
  mirroredPackets: number;
  mirroredBytes: number;
  /** Copies that could not be made or sent; the originals passed all the same. */
  cloneFailures: number;
}

export interface TrafficMirrorOutputs extends TrafficMirrorInputs {
  /** sha256 of the BPF object that is loaded. */
  objectSha256: string;
  programId: number;
  programTag: string;
  /** The TC filter handle on the interface's hooks (derived from the pin name). */
  tcHandle: number;
  /** The interface copies go out of: the local target, or the tunnel device this mirror owns. */
  targetInterface: string;
  targetIfindex: number;
  /** Whether this mirror added the interface's clsact qdisc (and so removes it when it is the last user). */
  qdiscCreated: boolean;
  counters: TrafficMirrorCounters;
}
