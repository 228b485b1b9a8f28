/**
 * Inputs of MaglevService, as the user writes them and as check() canonicalises
 * them. VIPs and backends become records keyed by their canonical text
 * ("198.51.100.10:80/tcp", "10.0.0.2", "[2001:db8::2]:8080"), so a preview
 * shows one `+`/`-` per VIP or backend whatever order the user listed them in,
 * never the table's slots (DESIGN.md, "Inputs are canonical").
 */
import { expectationSet, maglevExpectationProblems } from "../expect/schema";
import { withPreviewNote } from "../expect/preview";
import type { ExpectationResult } from "../expect/hostRun";
import type * as pulumi from "@pulumi/pulumi";
import { z } from "zod";
import { CidrError, formatAddress, parseInputPrefix, parsePrefix } from "../cidr";
import { checkInputs, pathFailures, UNKNOWN } from "../dynamicAdapter";
import { credentialsSchema, hostSchema } from "../remote/hostSchema";
import { lockoutInputs } from "../remote/lockout";
import { chainPriority, interfaceName, pinName } from "../validation";
import { registeredContent } from "../sharedContent";
import { sharedListDrift, sharedListRef } from "../sharedList";
import { backendsOfLines } from "./backendLines";
import { LB_MAX_BACKENDS, LB_MAX_VIPS, LB_TABLE_CAPACITY, MAPS, type L4Protocol, type LbMode } from "./codec";
import { DEFAULT_TABLE_SIZE, MAX_TABLE_SIZE, MAX_WEIGHT, tableSizeProblem } from "./table";

/** Backend indexes run 1..LB_MAX_BACKENDS-1 (0 names no backend). */
export const MAX_BACKENDS = LB_MAX_BACKENDS - 1;
export const MAX_VIPS = LB_MAX_VIPS;

/**
 * Where each table lives in maglev_table. In dsr and nat a packet keeps its
 * family, so IPv4 VIPs share one table over the IPv4 backends and IPv6 VIPs
 * one over the IPv6 backends; in ipip every VIP shares one table over all
 * backends. The offsets are fixed, so that a change of table size rewrites
 * a table in place without ever overlapping the other one.
 */
export const TABLE_OFFSET = { v4: 0, v6: LB_TABLE_CAPACITY / 2, all: 0 } as const;
export type TableGroup = keyof typeof TABLE_OFFSET;
/** Largest prime that fits the IPv6 table's half of maglev_table (2^19 - 1). */
export const MAX_TABLE_SIZE_TWO_TABLES = 524_287;

// ---------------------------------------------------------------- addresses

/**
 * Canonical text of an exact IPv4/IPv6 address as written in an input (an
 * IPv4-mapped address becomes its IPv4 form: cidr.ts parseInputPrefix), or
 * why it is not one. `what` names the thing for the message ("a VIP").
 */
export function inputAddress(text: string, what: string): { address: string; family: 4 | 6 } | { problem: string } {
  const notAddress = { problem: `"${text}" is not an IPv4 or IPv6 address (${what} is one address, not a prefix or a name)` };
  if (typeof text !== "string" || text.includes("/")) return notAddress;
  try {
    const prefix = parseInputPrefix(text);
    return { address: formatAddress(prefix.bytes), family: prefix.family };
  } catch (err) {
    if (err instanceof CidrError && /IPv4-compatible/.test(err.message)) return { problem: err.message };
    return notAddress;
  }
}

/** Canonical text of an exact IPv4/IPv6 address, or undefined. */
export function canonicalAddress(text: string): { address: string; family: 4 | 6 } | undefined {
  const result = inputAddress(text, "an address");
  return "problem" in result ? undefined : result;
}

export function familyOf(address: string): 4 | 6 {
  return address.includes(":") ? 6 : 4;
}

/** Sort key: IPv4 before IPv6, then address bytes, then the rest. */
function addressSortKey(address: string): string {
  const prefix = parsePrefix(address);
  return `${prefix.family}${Buffer.from(prefix.bytes).toString("hex")}`;
}

function hostPort(address: string, port: number): string {
  return familyOf(address) === 6 ? `[${address}]:${port}` : `${address}:${port}`;
}

// ---------------------------------------------------------------- VIPs

export interface Vip {
  address: string;
  port: number;
  protocol: L4Protocol;
}

/** "198.51.100.10:80/tcp", "[2001:db8::10]:443/udp": the VIP's key in state and previews. */
export function vipKey(vip: Vip): string {
  return `${hostPort(vip.address, vip.port)}/${vip.protocol}`;
}

const VIP_EXAMPLE = 'write "address:port/protocol", e.g. "198.51.100.10:80/tcp" or "[2001:db8::10]:443/udp"';

/** Parses "addr:port/proto" (IPv6 in brackets), saying exactly what is missing. */
export function parseVip(text: string): Vip {
  const trimmed = text.trim();
  const slash = trimmed.lastIndexOf("/");
  const hostPart = slash < 0 ? trimmed : trimmed.slice(0, slash);
  const protocolText = slash < 0 ? undefined : trimmed.slice(slash + 1).toLowerCase();
  let addressText: string;
  let portText: string | undefined;
  const bracketed = /^\[([^\]]+)\](?::(.*))?$/.exec(hostPart);
  if (bracketed) {
    addressText = bracketed[1]!;
    portText = bracketed[2];
  } else if ((hostPart.match(/:/g) ?? []).length > 1) {
    throw new Error(`"${text}": write an IPv6 VIP in brackets with its port, e.g. "[2001:db8::10]:80/tcp"`);
  } else {
    const colon = hostPart.indexOf(":");
    addressText = colon < 0 ? hostPart : hostPart.slice(0, colon);
    portText = colon < 0 ? undefined : hostPart.slice(colon + 1);
  }
  const address = inputAddress(addressText, "a VIP");
  if ("problem" in address) throw new Error(`"${text}": ${address.problem}`);
  if (portText === undefined || portText === "") throw new Error(`"${text}" has no port: ${VIP_EXAMPLE}`);
  if (!/^\d{1,5}$/.test(portText) || Number(portText) < 1 || Number(portText) > 65535) throw new Error(`"${text}": port must be a number from 1 to 65535`);
  if (protocolText === undefined) throw new Error(`"${text}" has no protocol: ${VIP_EXAMPLE}`);
  if (protocolText !== "tcp" && protocolText !== "udp") throw new Error(`"${text}": protocol must be tcp or udp, got "${protocolText}"`);
  return { address: address.address, port: Number(portText), protocol: protocolText };
}

/** A service address as an object; the string form "198.51.100.10:80/tcp" ("[2001:db8::10]:80/tcp" for IPv6) is the same. */
export const vipObject = z.strictObject({
  /** The IPv4 or IPv6 address clients send to. The network must route it to the load balancer host. */
  address: z.string().transform((text, ctx) => {
    const address = inputAddress(text, "a VIP");
    if ("problem" in address) {
      ctx.addIssue({ code: "custom", message: address.problem });
      return z.NEVER;
    }
    return address.address;
  }),
  /** Destination port, 1-65535. */
  port: z.number().int("must be a whole number").min(1, "must be from 1 to 65535").max(65535, "must be from 1 to 65535"),
  /** "tcp" or "udp". */
  protocol: z.enum(["tcp", "udp"]),
});

const vipEntry = z.unknown().transform((raw, ctx): Vip => {
  if (typeof raw === "string") {
    try {
      return parseVip(raw);
    } catch (err) {
      ctx.addIssue({ code: "custom", message: (err as Error).message });
      return z.NEVER;
    }
  }
  const result = vipObject.safeParse(raw);
  if (result.success) return result.data;
  for (const issue of result.error.issues) ctx.addIssue({ code: "custom", path: issue.path.map((p) => (typeof p === "symbol" ? String(p) : p)), message: issue.message });
  return z.NEVER;
});

function entriesOf(raw: unknown[] | Record<string, unknown>): [string | number, unknown][] {
  return Array.isArray(raw) ? raw.map((v, i) => [i, v]) : Object.entries(raw);
}

function subIssues(ctx: z.RefinementCtx, at: string | number, issues: readonly { path: PropertyKey[]; message: string }[]): void {
  for (const issue of issues) ctx.addIssue({ code: "custom", path: [at, ...issue.path.map((p) => (typeof p === "symbol" ? String(p) : p))], message: issue.message });
}

/**
 * VIPs as a list of "addr:port/proto" strings or {address, port, protocol}
 * objects, or the record form check() produced (keys recomputed, never
 * trusted). The same VIP twice is refused, naming both places.
 */
const vipsSchema = z.union([z.array(z.unknown()), z.record(z.string(), z.unknown())]).transform((raw, ctx) => {
  const byKey = new Map<string, Vip>();
  const firstAt = new Map<string, string | number>();
  for (const [at, value] of entriesOf(raw)) {
    const result = vipEntry.safeParse(value);
    if (!result.success) {
      subIssues(ctx, at, result.error.issues);
      continue;
    }
    const key = vipKey(result.data);
    const first = firstAt.get(key);
    if (first !== undefined) {
      // A VIP is a short hand-written list: the same one twice (often spelt two ways) is a slip, e.g. :80 meant as :443.
      ctx.addIssue({ code: "custom", path: [at], message: `${key} is listed twice (also at ${typeof first === "number" ? `vips[${first}]` : `vips[${JSON.stringify(first)}]`}); list each VIP once` });
      continue;
    }
    firstAt.set(key, at);
    byKey.set(key, result.data);
  }
  if (byKey.size > MAX_VIPS) {
    ctx.addIssue({ code: "custom", message: `has ${byKey.size} VIPs; the load balancer holds at most ${MAX_VIPS} (map ${MAPS.vips}, and ${MAPS.vipStats} for their counters)` });
  }
  const sorted = [...byKey.values()].sort((a, b) => compareKeys(`${addressSortKey(a.address)}${pad(a.port)}${a.protocol}`, `${addressSortKey(b.address)}${pad(b.port)}${b.protocol}`));
  return Object.fromEntries(sorted.map((v) => [vipKey(v), v])) as Record<string, Vip>;
});

// ---------------------------------------------------------------- backends

export interface Backend {
  address: string;
  /** nat: the port the backend listens on; omitted, the VIP's port is kept. Not allowed in dsr and ipip. */
  port?: number;
  weight: number;
  /** Next-hop MAC to use instead of resolving it on the host. */
  mac?: string;
}

/** "10.0.0.2", "10.0.0.2:8080", "[2001:db8::2]:8080": the backend's key in state and its Maglev identity. */
export function backendKey(backend: Pick<Backend, "address" | "port">): string {
  return backend.port === undefined ? backend.address : hostPort(backend.address, backend.port);
}

/** A backend as an object; an address string is a backend with the defaults. */
export const backendObject = z.strictObject({
  /**
   * The backend's own IPv4/IPv6 address. In dsr and nat a backend serves the
   * VIPs of its address family; in ipip every VIP.
   */
  address: z.string().transform((text, ctx) => {
    const address = inputAddress(text, "a backend");
    if ("problem" in address) {
      ctx.addIssue({ code: "custom", message: address.problem });
      return z.NEVER;
    }
    return address.address;
  }),
  /**
   * nat only: the port the backend listens on (the VIP's port is rewritten to
   * it). Default: the VIP's port. dsr and ipip keep the VIP's port and refuse one.
   */
  port: z.number().int("must be a whole number").min(1, "must be from 1 to 65535").max(65535, "must be from 1 to 65535").optional(),
  /** Share of new flows relative to the other backends (weighted Maglev), 1-65535. Default 1. */
  weight: z
    .number()
    .int("must be a whole number")
    .min(1, `must be from 1 to ${MAX_WEIGHT} (a backend that should get no traffic is removed from the list)`)
    .max(MAX_WEIGHT, `must be from 1 to ${MAX_WEIGHT}`)
    .default(1),
  /**
   * The next hop's MAC, to skip resolving it. Default: resolved on the load
   * balancer host from its neighbour table (`ip route get`, `ip neigh`, after a
   * ping when needed); an unresolvable backend fails the update with the reason.
   */
  mac: z
    .string()
    .regex(/^[0-9a-fA-F]{2}([:-][0-9a-fA-F]{2}){5}$/, 'must be a MAC address like "02:00:00:00:00:0a"')
    .transform((mac) => mac.toLowerCase().replace(/-/g, ":"))
    .optional(),
});

export const backendEntry = z.unknown().transform((raw, ctx): Backend => {
  const result = backendObject.safeParse(typeof raw === "string" ? { address: raw } : raw);
  if (result.success) {
    const b = result.data;
    return { address: b.address, ...(b.port !== undefined ? { port: b.port } : {}), weight: b.weight, ...(b.mac !== undefined ? { mac: b.mac } : {}) };
  }
  for (const issue of result.error.issues) ctx.addIssue({ code: "custom", path: issue.path.map((p) => (typeof p === "symbol" ? String(p) : p)), message: issue.message });
  return z.NEVER;
});

/**
 * Backends as a list of {address, port?, weight?, mac?} (or plain addresses),
 * or the record form check() produced. The same address and port twice is an
 * error: which weight would count?
 */
export const backendsSchema = z.union([z.array(z.unknown()), z.record(z.string(), z.unknown())]).transform((raw, ctx) => {
  const byKey = new Map<string, { backend: Backend; at: string | number }>();
  for (const [at, value] of entriesOf(raw)) {
    const result = backendEntry.safeParse(value);
    if (!result.success) {
      subIssues(ctx, at, result.error.issues);
      continue;
    }
    const key = backendKey(result.data);
    const first = byKey.get(key);
    if (first) {
      ctx.addIssue({ code: "custom", path: [at], message: `${key} is listed twice (also at ${typeof first.at === "number" ? `backends[${first.at}]` : `backends[${JSON.stringify(first.at)}]`}); list each address and port once and use weight for a bigger share` });
      continue;
    }
    byKey.set(key, { backend: result.data, at });
  }
  if (byKey.size > MAX_BACKENDS) {
    ctx.addIssue({ code: "custom", message: `has ${byKey.size} backends; the load balancer holds at most ${MAX_BACKENDS} (map ${MAPS.backends} has ${LB_MAX_BACKENDS} slots and slot 0 names no backend)` });
  }
  const sorted = [...byKey.values()].map((e) => e.backend).sort((a, b) => compareKeys(`${addressSortKey(a.address)}${pad(a.port ?? 0)}`, `${addressSortKey(b.address)}${pad(b.port ?? 0)}`));
  return Object.fromEntries(sorted.map((b) => [backendKey(b), b])) as Record<string, Backend>;
});

function pad(port: number): string {
  return String(port).padStart(5, "0");
}

function compareKeys(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

// ---------------------------------------------------------------- the schema

export const maglevServiceSchema = z.object({
  /** The load balancer host. Changing it replaces the service. */
  host: hostSchema,
  credentials: credentialsSchema.default({}),
  /**
   * The interface VIP traffic arrives on (and, in nat, the backends' replies), e.g.
   * "eth0"; an XDP program is attached there, and bpfleet refuses an interface that
   * already carries another XDP program, unless both are bpfleet programs with a
   * `chainPriority`. Changing it replaces the service.
   */
  interface: interfaceName,
  /** The pin directory name, /sys/fs/bpf/bpfleet/maglev/<name>/: the SDK's `pinName`, documented there. */
  name: pinName,
  /**
   * The services, "address:port/protocol" strings ("198.51.100.10:80/tcp",
   * "[2001:db8::10]:80/tcp") or objects, IPv4 and IPv6, at most 256. Order does not
   * matter; the same VIP twice is an error. Only TCP/UDP packets to a VIP are
   * balanced; everything else passes untouched.
   */
  vips: vipsSchema,
  /**
   * The backends every VIP of their family balances over (all VIPs in ipip), at
   * most 4095 (an address string is a backend with defaults). The same address and
   * port twice is an error. Adding or removing one rewrites only the table slots
   * that change (about M/N), in one batch whose every step balances: a new
   * backend's record is written before any slot names it, a removed one's cleared
   * only after no slot does. Give `backends` or `backendSet`, not both.
   */
  backends: backendsSchema.prefault([]),
  /**
   * A MaglevBackendSet to balance over instead of `backends` (held once in the stack's
   * state, however many services bind it): its name, digest and count, which is all this
   * service's state carries of it. The SDK fills it from `backendSet`.
   */
  backendSet: sharedListRef.optional(),
  /**
   * Set by `pulumi refresh`, never by you: backends this service's host holds beyond the
   * MaglevBackendSet it recorded as applied ("stray") or lacks ("missing"). The next `up`
   * removes the strays and restores the missing ones.
   */
  backendDrift: sharedListDrift.optional(),
  /**
   * "dsr" (default): only the destination MAC is rewritten; backends hold the
   * VIP on a loopback with arp_ignore=1/arp_announce=2 (IPv6: on lo, where it
   * is not announced) and answer clients directly. Backends must be on the
   * interface's network segment.
   *
   * "nat": destination address and port are rewritten (checksums updated);
   * backends must route replies back through the load balancer (e.g. default
   * route via it), where they are translated back to the VIP. Needs IP
   * forwarding on the interface; as the load balancer sends replies out of
   * the interface they came in on, turn its ICMP redirects off
   * (net.ipv4.conf.<if>.send_redirects=0) or have backends ignore them, or a
   * backend may learn to answer clients directly, untranslated.
   *
   * "ipip": packets are encapsulated (IPv4/IPv6-in-IPv4/IPv6) to backends
   * anywhere, which decapsulate and answer directly. Needs IP forwarding.
   *
   * Changes in place (every VIP and table is rewritten in one batch).
   */
  mode: z.enum(["dsr", "nat", "ipip"]).default("dsr"),
  /**
   * M, the slots per Maglev table: a prime of at least 100 × the backends of a
   * table, at most 1,048,589 (524,287 when dsr/nat has IPv6 VIPs, which get a
   * table of their own). Default 65537. Changing it moves most flows.
   */
  tableSize: z
    .number()
    .int("must be a whole number")
    .default(DEFAULT_TABLE_SIZE)
    .superRefine((size, ctx) => {
      if (Number.isSafeInteger(size) && size > MAX_TABLE_SIZE) {
        ctx.addIssue({ code: "custom", message: `table size ${size} does not fit map ${MAPS.table} (${LB_TABLE_CAPACITY} slots): at most ${MAX_TABLE_SIZE}, the largest prime that fits` });
        return;
      }
      const problem = tableSizeProblem(size, 0);
      if (problem) ctx.addIssue({ code: "custom", message: problem });
    }),
  /**
   * Pin each flow to its backend in an LRU connection table (262,144 flows,
   * ~30 MiB preallocated, as Katran does), so established flows keep their
   * backend through backend additions and removals; only flows of a removed
   * backend move. New connections (TCP SYN) always follow the table.
   * false: every packet follows the table. Default true.
   */
  connectionTable: z.boolean().default(true),
  /** XDP attach mode: "native" (driver), "generic" (skb) or "auto". Default "auto". Changing it replaces the service. */
  xdpMode: z.enum(["native", "generic", "auto"]).default("auto"),
  /**
   * Share the interface with other bpfleet XDP programs, e.g. an XdpFirewall
   * (chainPriority 0) in front of this service (chainPriority 1): each gets a slot of
   * the interface's XDP chain, 0-7, and lower runs first. bpfleet's dispatcher sits on
   * the hook and runs the members in order; a packet one member passes goes on to the
   * next, any other verdict ends the chain. The first member to arrive attaches the
   * dispatcher, the last to leave removes it. Unset (default): attach alone, and refuse
   * an interface another program uses. Setting it on a program attached alone moves it
   * into the chain in place (no moment without it); two members may not share a slot.
   */
  chainPriority: chainPriority.optional(),
  /**
   * Before attaching or swapping the program on the interface that carries the
   * management SSH session, arm a revert timer on the host, prove a fresh SSH
   * login works afterwards, then disarm; otherwise the host undoes the change by
   * itself and the update fails. Default true.
   */
  lockoutGuard: lockoutInputs.lockoutGuard,
  /** Seconds after which an undisarmed revert timer undoes the change, 10-3600. Default 30. */
  lockoutRevertSeconds: lockoutInputs.lockoutRevertSeconds,
  /**
   * Packets and the outcome they must get, proven on the host on every create and
   * update: texts `"[ingress] <tcp|udp|icmp> <source> > <destination> [tcp flags]: <pass|drop|backend <address>>"`
   * (e.g. `"tcp 198.51.100.7:40000 > 198.51.100.10:80: backend 10.0.1.3"`) or objects. A
   * backend expectation must be a packet to one of the VIPs, naming one of the backends.
   * After the change is applied, while the revert timer is armed, each runs through a probe
   * copy of the balancer (through the interface's XDP chain when it has one) with a scratch
   * connection table and NAT records; the backend is read from the rewritten packet. Any
   * miss reverts the change at once (the program and hook by the host's revert, then the
   * tables and backend records the change wrote) and fails the update with a table. Kept keyed
   * by the canonical text. At most 1,000. Default: none.
   */
  expect: expectationSet("maglevService").default({}),
});

export type MaglevServiceInputs = z.infer<typeof maglevServiceSchema>;

/** The table groups a configuration needs, with the backends each one balances over. */
export function tableGroups(mode: LbMode, vips: Record<string, Vip>, backends: Record<string, Backend>): Map<TableGroup, string[]> {
  const groups = new Map<TableGroup, string[]>();
  const vipList = Object.values(vips);
  if (vipList.length === 0) return groups;
  if (mode === "ipip") {
    groups.set("all", Object.keys(backends));
    return groups;
  }
  for (const family of [4, 6] as const) {
    if (!vipList.some((v) => familyOf(v.address) === family)) continue;
    groups.set(family === 4 ? "v4" : "v6", Object.keys(backends).filter((id) => familyOf(backends[id]!.address) === family));
  }
  return groups;
}

export interface InputProblem {
  property: string;
  reason: string;
}

/** Where an entry of `vips`/`backends` sat in what the user wrote: "backends[2]" or backends["10.0.0.2"]. */
function locate(property: "vips" | "backends", raw: unknown, key: string, keyOf: (value: unknown) => string | undefined): string {
  if (Array.isArray(raw)) {
    const index = raw.findIndex((value) => keyOf(value) === key);
    if (index >= 0) return `${property}[${index}]`;
  }
  return `${property}[${JSON.stringify(key)}]`;
}

function rawVipKey(value: unknown): string | undefined {
  const result = vipEntry.safeParse(value);
  return result.success ? vipKey(result.data) : undefined;
}

function rawBackendKey(value: unknown): string | undefined {
  const result = backendEntry.safeParse(value);
  return result.success ? backendKey(result.data) : undefined;
}

/**
 * Rules across properties, on canonical inputs: what a mode allows of
 * backends, families that cannot meet, and the table size for the backends it
 * holds. `raw` is what the user wrote, to name list positions.
 */
export function serviceProblems(
  inputs: Pick<MaglevServiceInputs, "mode" | "vips" | "backends" | "tableSize">,
  raw: { vips?: unknown; backends?: unknown } = {},
): InputProblem[] {
  const problems: InputProblem[] = [];
  const add = (property: string, reason: string) => problems.push({ property, reason: `${property}: ${reason}` });
  const where = (id: string) => locate("backends", raw.backends, id, rawBackendKey);
  const { mode, vips, backends, tableSize } = inputs;

  if (mode !== "nat") {
    for (const [id, b] of Object.entries(backends)) {
      if (b.port !== undefined) {
        add(`${where(id)}.port`, `${mode} keeps the VIP's destination port, so a backend cannot have its own port (use mode "nat" to rewrite ports)`);
      }
    }
  }
  if (mode !== "ipip") {
    const vipFamilies = new Set(Object.values(vips).map((v) => familyOf(v.address)));
    const backendFamilies = new Set(Object.values(backends).map((b) => familyOf(b.address)));
    if (vipFamilies.size > 0) {
      for (const [id, b] of Object.entries(backends)) {
        const family = familyOf(b.address);
        if (!vipFamilies.has(family)) {
          add(
            where(id),
            `IPv${family} backend ${b.address}, but every VIP is IPv${family === 4 ? 6 : 4}: in ${mode} mode a packet keeps its address family, so it can only reach a backend of the VIP's family (use mode "ipip" to tunnel across families)`,
          );
        }
      }
    }
    if (backendFamilies.size > 0) {
      for (const [key, v] of Object.entries(vips)) {
        const family = familyOf(v.address);
        if (!backendFamilies.has(family)) {
          add(locate("vips", raw.vips, key, rawVipKey), `IPv${family} VIP ${key} has no IPv${family} backend: in ${mode} mode a packet keeps its address family (add an IPv${family} backend, or use mode "ipip")`);
        }
      }
    }
  }

  const groups = tableGroups(mode, vips, backends);
  const largest = Math.max(0, ...[...groups.values()].map((ids) => ids.length));
  const problem = tableSizeProblem(tableSize, groups.size > 0 ? largest : Object.keys(backends).length);
  if (problem) {
    add("tableSize", problem);
  } else if (groups.has("v6") && tableSize > MAX_TABLE_SIZE_TWO_TABLES) {
    add("tableSize", `table size ${tableSize} does not fit: IPv6 VIPs in ${mode} mode get a table of their own in the second half of map ${MAPS.table} (${LB_TABLE_CAPACITY} slots: at most ${MAX_TABLE_SIZE_TWO_TABLES} per table)`);
  }
  return problems;
}

function isUnknown(value: unknown): boolean {
  return JSON.stringify(value ?? null).includes(UNKNOWN);
}

/**
 * check() for MaglevService: the per-property schema (checkInputs), then the
 * rules across properties once the properties they read are known. checkInputs
 * parses a pick of the known properties, which drops object-level refinements,
 * so they live here.
 */
export function checkMaglevService(news: Record<string, unknown>): pulumi.dynamic.CheckResult {
  const bound = news.backendSet !== undefined && news.backendSet !== null;
  const inline = news.backends !== undefined && news.backends !== null;
  if (bound && inline && (isUnknown(news.backends) || Object.keys(news.backends as object).length > 0)) {
    return { failures: pathFailures([{ property: "backendSet", reason: "backendSet: give the backends either as `backends` or as a `backendSet`, not both" }], news) };
  }
  if (!bound && !inline) return { failures: [{ property: "", reason: "backends: required: give the backends as `backends` or as a `backendSet` (a MaglevBackendSet)" }] };
  const result = checkInputs(maglevServiceSchema, news);
  if (result.failures?.length || !result.inputs) return result;
  const declared = result.inputs as MaglevServiceInputs;
  // A bound service is judged with the set's backends, registered by the set's own check,
  // which the engine runs first (the service depends on the set). Without them (a set not
  // in this deployment) the lifecycle judges them on the host instead.
  if (bound && (isUnknown(declared.backendSet) || !registeredContent(declared.backendSet!.digest))) return result;
  const inputs = bound ? withBackendSet(declared, backendsOfLines(registeredContent(declared.backendSet!.digest)!)) : declared;
  if ([inputs.mode, inputs.vips, inputs.backends, inputs.tableSize].some(isUnknown)) return result;
  const problems = bound ? boundProblems(inputs) : serviceProblems(inputs, { vips: news.vips, backends: news.backends });
  if (!isUnknown(inputs.expect)) problems.push(...maglevExpectationProblems(inputs.expect, inputs.vips, inputs.backends, news.expect));
  if (problems.length > 0) return { failures: pathFailures(problems, news) };
  // With a set the backends are not among this service's inputs: preview does not
  // evaluate the expectations against them, and the host run during `up` stays the proof.
  return bound ? result : withPreviewNote("maglevService", result, ["mode", "vips", "backends", "tableSize", "expect"]);
}

/** A bound service with its set's backends in `backends`: what the tables and the rules across properties read. */
export function withBackendSet(inputs: MaglevServiceInputs, backends: Record<string, Backend>): MaglevServiceInputs {
  return { ...inputs, backends };
}

/** serviceProblems for a service bound to a MaglevBackendSet: a backend is named in the set, by its key. */
export function boundProblems(inputs: MaglevServiceInputs): InputProblem[] {
  const set = `backendSet '${inputs.backendSet!.name}'`;
  return serviceProblems(inputs).map(({ property, reason }) =>
    property.startsWith("backends") ? { property: "backendSet", reason: `backendSet: ${set}: ${reason}` } : { property, reason },
  );
}

// ---------------------------------------------------------------- outputs

export interface Counter {
  packets: number;
  bytes: number;
}

export interface MaglevCounters {
  /** Packets that reached each VIP (before a backend was picked). */
  vips: Record<string, Counter>;
  /** Packets sent to each backend. */
  backends: Record<string, Counter>;
  /** The program's totals by outcome (lb_stats): notVip, noBackend, tx, redirect, stack, fibDrop, staticMac, reverseNat, flowHit, encapFail. */
  totals: Record<string, Counter>;
}

export interface MaglevServiceOutputs extends MaglevServiceInputs {
  /** sha256 of the BPF object that is loaded. */
  objectSha256: string;
  programId: number;
  programTag: string;
  /** How the kernel reports the attachment ("driver", "generic"), or "detached". */
  attachMode: string;
  /** Index of each backend in lb_backends (stable while the backend exists). */
  backendIndexes: Record<string, number>;
  /** Where the next new backend's index search starts: freed indexes are not reused right away (lb_flows may still name them). */
  nextBackendIndex: number;
  /** Index of each VIP's counters in lb_vip_ctr. */
  vipIndexes: Record<string, number>;
  /** The next-hop MAC each backend record carries ("" when the program relies on the FIB alone). */
  backendMacs: Record<string, string>;
  /** Backends whose record's next hop (MAC, MTU) differs from what the host resolves now, as the last refresh saw: the next `up` rewrites them. */
  nextHopDrift?: string[];
  /** sha256 over every table's geometry and slots, as on the host: equal digests, equal tables. */
  tableDigest: string;
  /** Whether the program translates backends' replies (lb_config), as on the host. */
  reverseNat: boolean;
  counters: MaglevCounters;
  /** Each packet expectation's result on the host at the last create/update, by canonical text (provider/expect/hostRun.ts). */
  expectResults: Record<string, ExpectationResult>;
}
