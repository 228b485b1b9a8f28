/**
 * The tunnel a TrafficMirror owns when its target is a remote collector:
 * a gretap/ip6gretap or vxlan device, named from the pin name and the tunnel's
 * parameters and marked as ours by its interface alias. Changing a parameter
 * gives a new name, so a new tunnel is made (and pointed at) before the old one
 * goes: copies never go to a device that is half configured.
 */
import { createHash } from "node:crypto";
import { HostPreconditionError } from "../remote/preflight";
import { runShellScript } from "../remote/shellScript";
import type { SshSession } from "../remote/ssh";
import { GUARD, type TunnelGuard } from "./codec";
import type { TunnelSpec } from "./schema";
import { hostJson, ipLinks } from "../remote/hostJson";

/** What `ip -d -j link show` says about one link. */
export interface LinkInfo {
  ifindex: number;
  ifname: string;
  altnames: string[];
  up: boolean;
  alias?: string;
  kind?: string;
  data?: Record<string, unknown>;
}

interface IpJsonLink {
  ifindex: number;
  ifname: string;
  altnames?: string[];
  flags?: string[];
  ifalias?: string;
  linkinfo?: { info_kind?: string; info_data?: Record<string, unknown> };
}

export function parseLinks(json: string): LinkInfo[] {
  return hostJson(ipLinks, json.trim() || "[]", { command: "ip -d -j link show" }).map((l: IpJsonLink) => ({
    ifindex: l.ifindex,
    ifname: l.ifname,
    altnames: l.altnames ?? [],
    up: (l.flags ?? []).includes("UP"),
    alias: l.ifalias,
    kind: l.linkinfo?.info_kind,
    data: l.linkinfo?.info_data,
  }));
}

export async function listLinks(session: SshSession): Promise<LinkInfo[]> {
  return parseLinks((await session.run(["ip", "-d", "-j", "link", "show"])).stdout);
}

/** A link by name or alternative name, as the kernel resolves names. */
export function linkNamed(links: readonly LinkInfo[], name: string): LinkInfo | undefined {
  return links.find((l) => l.ifname === name) ?? links.find((l) => l.altnames.includes(name));
}

/** The interface alias that marks a device as this mirror's. */
export function tunnelAlias(pinName: string): string {
  return `bpfleet traffic-mirror ${pinName}`;
}

function stableJson(value: unknown): string {
  if (value && typeof value === "object") {
    const record = value as Record<string, unknown>;
    return `{${Object.keys(record).sort().filter((k) => record[k] !== undefined).map((k) => `${JSON.stringify(k)}:${stableJson(record[k])}`).join(",")}}`;
  }
  return JSON.stringify(value);
}

/** "bfm" + 12 hex digits: 15 characters, the kernel's limit. */
export function tunnelDeviceName(pinName: string, spec: TunnelSpec): string {
  return `bfm${createHash("sha256").update(`${pinName}\n${stableJson(spec)}`).digest("hex").slice(0, 12)}`;
}

const isV6 = (address: string) => address.includes(":");

/** The `ip link add` arguments after the device name. */
export function tunnelLinkArgs(spec: TunnelSpec): string[] {
  if (spec.type === "vxlan") {
    return [
      "type", "vxlan", "id", String(spec.vni), "remote", spec.remote, "dstport", String(spec.port),
      ...(spec.local ? ["local", spec.local] : []),
      ...(spec.ttl ? ["ttl", String(spec.ttl)] : []),
      // Send-only: nothing should be learnt from (or flooded to) anyone but the collector.
      "nolearning",
    ];
  }
  const v6 = isV6(spec.remote);
  return [
    "type", v6 ? "ip6gretap" : "gretap", "remote", spec.remote,
    ...(spec.local ? ["local", spec.local] : []),
    ...(spec.key !== undefined ? ["key", String(spec.key)] : []),
    ...(spec.ttl ? [v6 ? "hoplimit" : "ttl", String(spec.ttl)] : []),
  ];
}

/** The packets the tunnel emits, which the program must never mirror. */
export function tunnelGuard(spec: TunnelSpec): TunnelGuard {
  return spec.type === "vxlan" ? { kind: GUARD.VXLAN, address: spec.remote, port: spec.port } : { kind: GUARD.GRE, address: spec.remote, port: 0 };
}

function greKey(value: unknown): number | undefined {
  if (typeof value === "number") return value;
  if (typeof value === "string" && /^\d+\.\d+\.\d+\.\d+$/.test(value)) {
    return value.split(".").reduce((n, octet) => n * 256 + Number(octet), 0);
  }
  if (typeof value === "string" && /^\d+$/.test(value)) return Number(value);
  return undefined;
}

function address(value: unknown): string | undefined {
  return typeof value === "string" && value !== "any" && value !== "" ? value : undefined;
}

function ttlOf(value: unknown): number | undefined {
  return typeof value === "number" && value > 0 ? value : undefined;
}

/** The tunnel parameters a link really has, in the schema's canonical shape. */
export function tunnelSpecOf(link: LinkInfo): TunnelSpec | undefined {
  const d = link.data ?? {};
  if (link.kind === "vxlan") {
    const remote = address(d.remote) ?? address(d.remote6);
    if (!remote || typeof d.id !== "number") return undefined;
    const spec: TunnelSpec = { type: "vxlan", remote, vni: d.id, port: typeof d.port === "number" ? d.port : 4789 };
    const local = address(d.local) ?? address(d.local6);
    if (local) spec.local = local;
    const ttl = ttlOf(d.ttl);
    if (ttl) spec.ttl = ttl;
    return spec;
  }
  if (link.kind === "gretap" || link.kind === "ip6gretap") {
    const remote = address(d.remote);
    if (!remote) return undefined;
    const spec: TunnelSpec = { type: "gretap", remote };
    const local = address(d.local);
    if (local) spec.local = local;
    const key = greKey(d.okey ?? d.key);
    if (key !== undefined) spec.key = key;
    const ttl = ttlOf(d.ttl ?? d.hoplimit);
    if (ttl) spec.ttl = ttl;
    return spec;
  }
  return undefined;
}

export function sameTunnel(a: TunnelSpec | undefined, b: TunnelSpec): boolean {
  return a !== undefined && stableJson(a) === stableJson(b);
}

const KERNEL_OPTION: Record<string, string> = { vxlan: "CONFIG_VXLAN", gretap: "CONFIG_NET_IPGRE", ip6gretap: "CONFIG_IPV6_GRE" };

/**
 * Makes sure the tunnel for `spec` exists, is up and is ours. A device of that
 * name that is not ours is never touched.
 */
export async function ensureTunnel(
  session: SshSession,
  pinName: string,
  spec: TunnelSpec,
  links: readonly LinkInfo[],
): Promise<{ link: LinkInfo; created: boolean }> {
  const device = tunnelDeviceName(pinName, spec);
  const alias = tunnelAlias(pinName);
  const existing = links.find((l) => l.ifname === device);
  if (existing) {
    if (existing.alias !== alias) {
      throw new HostPreconditionError(`${session.label}: a device named ${device} exists but is not this mirror's tunnel (its alias is ${JSON.stringify(existing.alias ?? "")}). Remove or rename it. Nothing was changed.`);
    }
    if (sameTunnel(tunnelSpecOf(existing), spec)) {
      if (!existing.up) await session.run(["ip", "link", "set", "dev", device, "up"]);
      return { link: { ...existing, up: true }, created: false };
    }
    // Same name, other parameters: changed by hand. Rebuild it.
    await session.run(["ip", "link", "del", "dev", device]);
  }
  const args = tunnelLinkArgs(spec);
  const result = await runShellScript(session, "tunnel-add", [device, alias, ...args], { allowFailure: true });
  if (result.code !== 0) {
    const kind = args[1]!;
    const hint = /Unknown device type|not supported/i.test(result.stderr) ? ` The host's kernel has no ${kind} support (${KERNEL_OPTION[kind] ?? kind}); use the other tunnel type.` : "";
    throw new HostPreconditionError(`${session.label}: could not create the ${kind} tunnel ${device} to ${spec.remote}: ${result.stderr.trim()}.${hint}`);
  }
  const link = parseLinks((await session.run(["ip", "-d", "-j", "link", "show", "dev", device])).stdout)[0];
  if (!link) throw new Error(`${session.label}: the tunnel ${device} vanished right after it was created`);
  return { link, created: true };
}

/** Every device marked as this mirror's. */
export function ownedTunnels(links: readonly LinkInfo[], pinName: string): LinkInfo[] {
  const alias = tunnelAlias(pinName);
  return links.filter((l) => l.alias === alias);
}

/** Removes this mirror's tunnels except `keep`; devices not marked as ours are never touched. */
export async function removeOwnedTunnels(session: SshSession, pinName: string, keep?: string): Promise<string[]> {
  const removed: string[] = [];
  for (const link of ownedTunnels(await listLinks(session), pinName)) {
    if (link.ifname === keep) continue;
    await session.run(["ip", "link", "del", "dev", link.ifname]);
    removed.push(link.ifname);
  }
  return removed;
}
