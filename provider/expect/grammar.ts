/**
 * Packet expectations (issue 14): a packet and the outcome it must get from
 * what a resource attached on a host. One line of text, or the same as an
 * object:
 *
 *   [<hook>] [new|reply] <protocol> <source> > <destination> [<tcp flags>]: <outcome>
 *
 *   hook        ingress | egress. TcPolicy: required (it has both hooks).
 *               XdpFirewall and MaglevService: only ingress, and it may be left out.
 *   new|reply   TcPolicy only. "new" (the default, not written in the canonical
 *               text) is a packet no live flow knows; "reply" a packet of a flow
 *               the other side opened, i.e. the answer to the same packet with
 *               source and destination swapped sent through the other hook.
 *   protocol    tcp | udp | icmp ("icmp" is ICMP for IPv4 and ICMPv6 for IPv6;
 *               "icmpv6" is accepted for an IPv6 packet and written "icmp").
 *   source      tcp/udp: 10.0.0.5:33000 or [2001:db8::1]:53 (IPv6 in brackets);
 *   destination icmp: the address alone (10.0.0.5, 2001:db8::1 or [2001:db8::1]).
 *               One address each, not a prefix; both of one family. An
 *               IPv4-mapped IPv6 address (::ffff:10.0.0.5) is the IPv4 address,
 *               as everywhere in bpfleet (provider/cidr.ts parseInputPrefix).
 *               Ports 1-65535.
 *   tcp flags   tcp only: any of fin syn rst psh ack urg, in any order. Written
 *               in that (bit) order. Default: syn for a new packet, syn ack for
 *               a reply. ICMP is an echo request, or an echo reply for "reply".
 *   outcome     pass | drop. MaglevService also: backend <address>, or
 *               backend <address>:<port> / backend [<IPv6>]:<port> (tcp and
 *               udp only) — the backend the balancer must send the packet to.
 *
 * e.g. "tcp 10.0.0.5:33000 > 10.0.0.7:22 syn: pass",
 * "udp [2001:db8::1]:53 > [2001:db8::7]:40000: drop",
 * "ingress reply tcp 192.0.2.9:443 > 10.0.0.7:51000: pass",
 * "tcp 198.51.100.7:40000 > 198.51.100.10:80: backend 10.0.1.3".
 *
 * The canonical text (expectationText) is the expectation's key in state, so a
 * preview shows one `+`/`-` per expectation whatever spelling the user chose.
 */
import { CidrError, formatAddress, parseInputPrefix, type Family } from "../cidr";

/** The resource kind an expectation belongs to: what hooks, flows and outcomes it can name. */
export type ExpectKind = "xdpFirewall" | "tcPolicy" | "maglevService";
export type Hook = "ingress" | "egress";
export type ExpectProtocol = "tcp" | "udp" | "icmp";
export type TcpFlag = "fin" | "syn" | "rst" | "psh" | "ack" | "urg";

/** In the order of their bits in the TCP header (RFC 9293 §3.1), which is also the canonical order. */
export const TCP_FLAGS: readonly TcpFlag[] = ["fin", "syn", "rst", "psh", "ack", "urg"];
export const TCP_FLAG_BITS: Record<TcpFlag, number> = { fin: 0x01, syn: 0x02, rst: 0x04, psh: 0x08, ack: 0x10, urg: 0x20 };

export type Outcome = { verdict: "pass" | "drop" } | { backend: { address: string; port?: number } };

/** One expectation in canonical form. */
export interface Expectation {
  kind: ExpectKind;
  hook: Hook;
  /** TcPolicy: the packet belongs to a flow the other side opened. Always false elsewhere. */
  reply: boolean;
  protocol: ExpectProtocol;
  family: Family;
  /** Canonical address text (cidr.ts formatAddress). */
  source: string;
  destination: string;
  /** tcp and udp only. */
  sourcePort?: number;
  destinationPort?: number;
  /** tcp only, canonical order, never empty. */
  flags?: TcpFlag[];
  outcome: Outcome;
}

export class ExpectationError extends Error {}

const KIND_NAME: Record<ExpectKind, string> = { xdpFirewall: "XdpFirewall", tcPolicy: "TcPolicy", maglevService: "MaglevService" };

export const GRAMMAR: Record<ExpectKind, string> = {
  xdpFirewall: "[ingress] <tcp|udp|icmp> <source> > <destination> [tcp flags]: <pass|drop>",
  tcPolicy: "<ingress|egress> [new|reply] <tcp|udp|icmp> <source> > <destination> [tcp flags]: <pass|drop>",
  maglevService: "[ingress] <tcp|udp|icmp> <source> > <destination> [tcp flags]: <pass|drop|backend <address>>",
};

const EXAMPLE = '"tcp 10.0.0.5:33000 > 10.0.0.7:22 syn: pass"';

function usage(kind: ExpectKind): string {
  return `write "${GRAMMAR[kind]}", e.g. ${kind === "tcPolicy" ? '"ingress reply tcp 192.0.2.9:443 > 10.0.0.7:51000: pass"' : kind === "maglevService" ? '"tcp 198.51.100.7:40000 > 198.51.100.10:80: backend 10.0.1.3"' : EXAMPLE}`;
}

// ---------------------------------------------------------------- pieces

function parsePort(text: string, what: string): number {
  if (!/^\d{1,5}$/.test(text)) throw new ExpectationError(`${what}: "${text}" is not a port number (1-65535)`);
  const port = Number(text);
  if (port < 1 || port > 65535) throw new ExpectationError(`${what}: port ${port} is out of range (1-65535; no packet is addressed to port 0)`);
  return port;
}

/** One exact address as an input (IPv4-mapped → IPv4), or why it is not one. */
function parseAddress(text: string, what: string): { address: string; family: Family } {
  if (text.includes("/")) throw new ExpectationError(`${what}: "${text}" is a prefix; an expectation is one packet, so it names one address`);
  try {
    const prefix = parseInputPrefix(text);
    return { address: formatAddress(prefix.bytes), family: prefix.family };
  } catch (err) {
    if (err instanceof CidrError && /IPv4-compatible/.test(err.message)) throw new ExpectationError(`${what}: ${err.message}`);
    throw new ExpectationError(`${what}: "${text}" is not an IPv4 or IPv6 address`);
  }
}

/** "10.0.0.5:80", "[2001:db8::1]:80", and without a port "10.0.0.5", "2001:db8::1", "[2001:db8::1]". */
function splitEndpoint(text: string, what: string): { address: string; port?: string } {
  const bracketed = /^\[([^\]]*)\](?::(.*))?$/.exec(text);
  if (bracketed) return { address: bracketed[1]!, port: bracketed[2] };
  const colons = (text.match(/:/g) ?? []).length;
  if (colons === 1) {
    const [address, port] = text.split(":");
    return { address: address!, port };
  }
  if (colons > 1 && /^[0-9a-f:.]+:\d{1,5}$/i.test(text) && !isBareIPv6(text)) {
    throw new ExpectationError(`${what}: "${text}": write an IPv6 address with a port in brackets, e.g. "[2001:db8::1]:53"`);
  }
  return { address: text };
}

function isBareIPv6(text: string): boolean {
  try {
    return parseInputPrefix(text).family === 6 || text.includes("::ffff:");
  } catch {
    return false;
  }
}

function endpoint(text: string, protocol: ExpectProtocol, what: string): { address: string; family: Family; port?: number } {
  const parts = splitEndpoint(text, what);
  if (protocol === "icmp") {
    if (parts.port !== undefined) throw new ExpectationError(`${what}: icmp has no ports: write the address alone ("${parts.address}"), or use tcp or udp`);
    // A bare IPv6 address such as 2001:db8::1 has several colons and no port: all of it is the address.
    return parseAddress(parts.address, what);
  }
  if (parts.port === undefined || parts.port === "") {
    if (isBareIPv6(text)) throw new ExpectationError(`${what}: "${text}" has no port: write an IPv6 address in brackets with its port, e.g. "[2001:db8::1]:53"`);
    throw new ExpectationError(`${what}: "${text}" has no port: ${protocol} packets are written address:port, e.g. "10.0.0.5:33000"`);
  }
  const address = parseAddress(parts.address, what);
  return { ...address, port: parsePort(parts.port, what) };
}

function parseBackend(text: string): { address: string; port?: number } {
  const parts = splitEndpoint(text, "backend");
  const address = parseAddress(parts.address, "backend");
  if (parts.port === undefined) return { address: address.address };
  if (parts.port === "") throw new ExpectationError(`backend: "${text}" ends in ':' without a port`);
  return { address: address.address, port: parsePort(parts.port, "backend") };
}

function hostPort(address: string, port: number): string {
  return address.includes(":") ? `[${address}]:${port}` : `${address}:${port}`;
}

function sortFlags(flags: Iterable<TcpFlag>): TcpFlag[] {
  const set = new Set(flags);
  return TCP_FLAGS.filter((f) => set.has(f));
}

// ---------------------------------------------------------------- assembling

/** The fields of an expectation before the rules that tie them together are checked. */
interface Draft {
  hook?: string;
  reply?: boolean;
  protocol: string;
  source: string;
  destination: string;
  /** Set when the object form gives ports on their own. */
  sourcePort?: number | string;
  destinationPort?: number | string;
  flags?: string[];
  verdict?: string;
  backend?: string;
}

function assemble(kind: ExpectKind, d: Draft): Expectation {
  let hook: Hook;
  if (d.hook === undefined) {
    if (kind === "tcPolicy") throw new ExpectationError(`a TcPolicy expectation names its hook: begin with "ingress" or "egress"`);
    hook = "ingress";
  } else if (d.hook === "ingress" || d.hook === "egress") {
    hook = d.hook;
  } else {
    throw new ExpectationError(`"${d.hook}" is not a hook: use ingress or egress`);
  }
  if (kind !== "tcPolicy" && hook === "egress") throw new ExpectationError(`${KIND_NAME[kind]} runs at XDP, on ingress only: an expectation cannot name egress`);
  const reply = d.reply ?? false;
  if (reply && kind !== "tcPolicy") throw new ExpectationError(`${KIND_NAME[kind]} keeps no flows a reply could belong to: "reply" is for TcPolicy expectations`);

  const protocolText = d.protocol.toLowerCase();
  let protocol: ExpectProtocol;
  if (protocolText === "tcp" || protocolText === "udp" || protocolText === "icmp") protocol = protocolText;
  else if (protocolText === "icmpv6") protocol = "icmp";
  else throw new ExpectationError(`"${d.protocol}" is not a protocol: use tcp, udp or icmp`);

  const withPort = (text: string, port: number | string | undefined) =>
    port === undefined ? text : hostPort(text.replace(/^\[(.*)\]$/, "$1"), port as number);
  if (protocol === "icmp" && (d.sourcePort !== undefined || d.destinationPort !== undefined)) {
    throw new ExpectationError("icmp has no ports: remove them, or use tcp or udp");
  }
  const checkPortValue = (port: number | string | undefined, what: string) => {
    if (port === undefined) return undefined;
    if (typeof port === "number" && !Number.isInteger(port)) throw new ExpectationError(`${what}: port ${port} is not a whole number`);
    return parsePort(String(port), what);
  };
  const srcPort = checkPortValue(d.sourcePort, "sourcePort");
  const dstPort = checkPortValue(d.destinationPort, "destinationPort");
  const src = endpoint(withPort(d.source, srcPort), protocol, "source");
  const dst = endpoint(withPort(d.destination, dstPort), protocol, "destination");
  if (src.family !== dst.family) {
    throw new ExpectationError(`source ${src.address} is IPv${src.family} but destination ${dst.address} is IPv${dst.family}: a packet has one address family`);
  }
  if (d.protocol.toLowerCase() === "icmpv6" && src.family === 4) throw new ExpectationError("icmpv6 is IPv6's; an IPv4 packet carries icmp");

  let flags: TcpFlag[] | undefined;
  if (d.flags !== undefined && d.flags.length > 0) {
    if (protocol !== "tcp") throw new ExpectationError(`${protocol} has no flags ("${d.flags.join(" ")}"): flags are tcp's`);
    for (const f of d.flags) {
      if (!TCP_FLAGS.includes(f.toLowerCase() as TcpFlag)) {
        throw new ExpectationError(`"${f}" is not a TCP flag: use ${TCP_FLAGS.join(", ")}`);
      }
    }
    flags = sortFlags(d.flags.map((f) => f.toLowerCase() as TcpFlag));
  } else if (protocol === "tcp") {
    flags = reply ? ["syn", "ack"] : ["syn"];
  }

  let outcome: Outcome;
  if (d.backend !== undefined) {
    if (d.verdict !== undefined) throw new ExpectationError("give either a verdict (pass or drop) or a backend, not both");
    if (kind !== "maglevService") throw new ExpectationError(`${KIND_NAME[kind]} sends packets to no backend: the outcome is pass or drop`);
    if (protocol === "icmp") throw new ExpectationError("the balancer sends only tcp and udp to backends: an icmp expectation is pass or drop");
    outcome = { backend: parseBackend(d.backend) };
  } else if (d.verdict === "pass" || d.verdict === "drop") {
    outcome = { verdict: d.verdict };
  } else if (d.verdict === undefined) {
    throw new ExpectationError(`the outcome is missing: end with ": pass" or ": drop"${kind === "maglevService" ? ' or ": backend <address>"' : ""}`);
  } else {
    throw new ExpectationError(`"${d.verdict}" is not an outcome: use pass or drop${kind === "maglevService" ? " or backend <address>" : ""}`);
  }

  const out: Expectation = { kind, hook, reply, protocol, family: src.family, source: src.address, destination: dst.address, outcome };
  if (protocol !== "icmp") {
    out.sourcePort = src.port;
    out.destinationPort = dst.port;
  }
  if (flags) out.flags = flags;
  return out;
}

// ---------------------------------------------------------------- text form

const OUTCOME_AT_END = /^(.*?)\s*:\s*(pass|drop|backend(?:\s+\S*)?)\s*$/i;

/** Parses the text form; throws ExpectationError saying what is wrong. */
export function parseExpectationText(kind: ExpectKind, text: string): Expectation {
  if (typeof text !== "string" || text.trim() === "") throw new ExpectationError(`an expectation is a non-empty text: ${usage(kind)}`);
  const m = OUTCOME_AT_END.exec(text.trim());
  let packetText: string;
  let verdict: string | undefined;
  let backend: string | undefined;
  if (m) {
    packetText = m[1]!;
    const outcome = m[2]!.trim().split(/\s+/);
    if (outcome[0]!.toLowerCase() === "backend") {
      if (outcome[1] === undefined) throw new ExpectationError(`"backend" needs the backend's address after it, e.g. ": backend 10.0.1.3"`);
      backend = outcome[1];
    } else {
      verdict = outcome[0]!.toLowerCase();
    }
  } else {
    // No known outcome at the end: say whether one is missing or unknown.
    const tail = /:\s+(\S+(?:\s+\S+)*)\s*$/.exec(text.trim());
    if (tail && !/[>]/.test(tail[1]!)) {
      throw new ExpectationError(`"${tail[1]}" is not an outcome: use pass or drop${kind === "maglevService" ? " or backend <address>" : ""}`);
    }
    throw new ExpectationError(`"${text.trim()}" has no outcome: end it with ": pass" or ": drop"${kind === "maglevService" ? ' or ": backend <address>"' : ""}; ${usage(kind)}`);
  }

  const words = packetText.replace(/>/g, " > ").trim().split(/\s+/).filter(Boolean);
  let hook: string | undefined;
  let reply: boolean | undefined;
  if (words[0] && ["ingress", "egress"].includes(words[0].toLowerCase())) hook = words.shift()!.toLowerCase();
  if (words[0] && ["new", "reply"].includes(words[0].toLowerCase())) {
    reply = words.shift()!.toLowerCase() === "reply";
    if (kind !== "tcPolicy") throw new ExpectationError(`${KIND_NAME[kind]} keeps no flows: "new" and "reply" are for TcPolicy expectations`);
  }
  const arrow = words.indexOf(">");
  if (words.length < 4 || arrow !== 2) {
    if (words[0] && !["tcp", "udp", "icmp", "icmpv6"].includes(words[0].toLowerCase()) && words.length >= 2) {
      throw new ExpectationError(`"${words[0]}" is not a protocol: use tcp, udp or icmp; ${usage(kind)}`);
    }
    throw new ExpectationError(`"${text.trim()}" is not an expectation: ${usage(kind)}`);
  }
  const [protocol, source, , destination, ...flags] = words;
  return assemble(kind, { hook, reply, protocol: protocol!, source: source!, destination: destination!, flags, verdict, backend });
}

/** The canonical text of an expectation: its key in state and previews. */
export function expectationText(e: Expectation): string {
  const parts: string[] = [];
  if (e.kind === "tcPolicy") parts.push(e.hook);
  if (e.reply) parts.push("reply");
  parts.push(e.protocol);
  parts.push(e.protocol === "icmp" ? e.source : hostPort(e.source, e.sourcePort!));
  parts.push(">");
  parts.push(e.protocol === "icmp" ? e.destination : hostPort(e.destination, e.destinationPort!));
  if (e.flags) parts.push(...e.flags);
  return `${parts.join(" ")}: ${outcomeText(e.outcome)}`;
}

export function outcomeText(o: Outcome): string {
  if ("verdict" in o) return o.verdict;
  return `backend ${o.backend.port === undefined ? o.backend.address : hostPort(o.backend.address, o.backend.port)}`;
}

// ---------------------------------------------------------------- object form

/**
 * The object form, with the mirror filter's field names:
 * `{ protocol: "udp", source: "2001:db8::1", sourcePort: 53, destination: "2001:db8::7",
 *    destinationPort: 40000, verdict: "drop" }`; `hook`, `reply` and `flags` as in the
 * text, `backend: "10.0.1.3"` instead of `verdict` for a balancer. A port may also
 * be written into the address ("10.0.0.5:33000").
 */
export interface ExpectationObject {
  /** "ingress" or "egress". Required for a TcPolicy; an XdpFirewall or MaglevService runs on ingress only. */
  hook?: string;
  /** TcPolicy: true for a packet of a flow the other side opened (its flow is opened first through the other hook). Default false. */
  reply?: boolean;
  /** "tcp", "udp" or "icmp" (ICMP for IPv4, ICMPv6 for IPv6: an echo request, or an echo reply for a reply). */
  protocol: string;
  /** Source address, one IPv4/IPv6 address (not a prefix); "10.0.0.5:33000" or "[2001:db8::1]:53" may carry the port. */
  source: string;
  /** Source port, 1-65535; tcp and udp only, required for them. */
  sourcePort?: number | string;
  /** Destination address, of the source's family. */
  destination: string;
  /** Destination port, 1-65535; tcp and udp only, required for them. */
  destinationPort?: number | string;
  /** TCP flags, any of fin syn rst psh ack urg. Default: syn, or syn ack for a reply. */
  flags?: string[] | string;
  /** "pass" or "drop". Exactly one of verdict and backend. */
  verdict?: string;
  /** MaglevService: the backend the packet must be sent to ("10.0.1.3", "[2001:db8::3]:8080"). */
  backend?: string;
}

const OBJECT_KEYS = new Set(["hook", "reply", "protocol", "source", "sourcePort", "destination", "destinationPort", "flags", "verdict", "backend"]);

export function parseExpectationObject(kind: ExpectKind, o: ExpectationObject): Expectation {
  if (o === null || typeof o !== "object" || Array.isArray(o)) throw new ExpectationError(`an expectation is a text or an object: ${usage(kind)}`);
  for (const key of Object.keys(o)) {
    if (!OBJECT_KEYS.has(key)) throw new ExpectationError(`unknown field "${key}": an expectation object has ${[...OBJECT_KEYS].join(", ")}`);
  }
  for (const key of ["protocol", "source", "destination"] as const) {
    if (typeof o[key] !== "string") throw new ExpectationError(`${key} is required (a text)`);
  }
  for (const key of ["hook", "verdict", "backend"] as const) {
    if (o[key] !== undefined && typeof o[key] !== "string") throw new ExpectationError(`${key} must be a text`);
  }
  if (o.reply !== undefined && typeof o.reply !== "boolean") throw new ExpectationError("reply must be true or false");
  for (const [address, port, what] of [[o.source, o.sourcePort, "source"], [o.destination, o.destinationPort, "destination"]] as const) {
    if (port !== undefined && splitEndpoint(address.trim(), what).port !== undefined) {
      throw new ExpectationError(`${what}: the port is given twice, in "${address}" and as ${what}Port`);
    }
  }
  if (kind !== "tcPolicy" && o.reply !== undefined && o.reply) {
    throw new ExpectationError(`${KIND_NAME[kind]} keeps no flows a reply could belong to: "reply" is for TcPolicy expectations`);
  }
  const flags = o.flags === undefined ? undefined : Array.isArray(o.flags) ? o.flags : String(o.flags).split(/[\s,]+/).filter(Boolean);
  if (flags?.some((f) => typeof f !== "string")) throw new ExpectationError("flags must be texts such as \"syn\" and \"ack\"");
  return assemble(kind, {
    hook: o.hook?.toLowerCase(),
    reply: o.reply,
    protocol: o.protocol,
    source: o.source.trim(),
    destination: o.destination.trim(),
    sourcePort: o.sourcePort,
    destinationPort: o.destinationPort,
    flags,
    verdict: o.verdict?.toLowerCase(),
    backend: o.backend?.trim(),
  });
}

/** Text or object: one expectation in canonical form. */
export function parseExpectation(kind: ExpectKind, input: unknown): Expectation {
  if (typeof input === "string") return parseExpectationText(kind, input);
  return parseExpectationObject(kind, input as ExpectationObject);
}
