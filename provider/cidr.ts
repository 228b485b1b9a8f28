/**
 * IPv4/IPv6 addresses and prefixes in canonical form: the network address of a
 * prefix (host bits cleared), lower-case compressed IPv6 (RFC 5952), and an
 * explicit prefix length. Canonical text is what inputs, state and previews
 * show, so "10.0.0.1/8" and "10.0.0.0/8" are one entry, never two.
 */
import { isIPv4, isIPv6 } from "node:net";

export type Family = 4 | 6;

export interface Prefix {
  family: Family;
  /** Network address bytes, host bits cleared; 4 or 16 bytes. */
  bytes: Uint8Array;
  prefixLength: number;
}

export class CidrError extends Error {}

export function parsePrefix(text: string): Prefix {
  if (typeof text !== "string") throw new CidrError(`expected an address or CIDR prefix as a string, got ${typeof text}`);
  const trimmed = text.trim();
  const slash = trimmed.indexOf("/");
  const addressText = slash < 0 ? trimmed : trimmed.slice(0, slash);
  const lengthText = slash < 0 ? undefined : trimmed.slice(slash + 1);
  let family: Family;
  let bytes: Uint8Array;
  if (isIPv4(addressText)) {
    family = 4;
    bytes = Uint8Array.from(addressText.split(".").map((octet) => Number(octet)));
  } else if (isIPv6(addressText) && !addressText.includes("%")) {
    family = 6;
    bytes = parseIPv6(addressText);
  } else {
    throw new CidrError(`"${text}" is not an IPv4 or IPv6 address or CIDR prefix`);
  }
  const maxLength = family === 4 ? 32 : 128;
  let prefixLength = maxLength;
  if (lengthText !== undefined) {
    if (!/^\d{1,3}$/.test(lengthText) || Number(lengthText) > maxLength) {
      throw new CidrError(`"${text}": prefix length must be a whole number from 0 to ${maxLength}`);
    }
    prefixLength = Number(lengthText);
  }
  return { family, bytes: clearHostBits(bytes, prefixLength), prefixLength };
}

/**
 * An address or prefix as a user writes it in an input, in the form packets
 * carry it. An IPv4-mapped IPv6 address (::ffff:a.b.c.d, RFC 4291 2.5.5.2) is
 * how a dual-stack socket, `ss` or a log line shows an IPv4 peer; it never
 * appears in a packet on the wire, so kept as IPv6 it would match nothing
 * (issue 15: "::ffff:10.200.1.201" in a deny list let the client's IPv4 pings
 * through). The user means the IPv4 address, unambiguously: it becomes that,
 * and the preview shows the IPv4 form. An IPv4-compatible address (::a.b.c.d,
 * deprecated by RFC 4291 2.5.5.1) is refused instead: its bytes are also those
 * of ordinary IPv6 addresses (::2 is ::0.0.0.2), so guessing the family could
 * turn an IPv6 intent into an IPv4 rule. :: and ::1 (unspecified, loopback)
 * stay IPv6. Map dumps go through parsePrefix, which keeps every byte as it is.
 */
export function parseInputPrefix(text: string): Prefix {
  const prefix = parsePrefix(text);
  if (prefix.family !== 6 || prefix.prefixLength < 96) return prefix;
  const head = prefix.bytes.slice(0, 12);
  const v4 = prefix.bytes.slice(12);
  const v4Text = Array.from(v4).join(".");
  if (head.slice(0, 10).every((b) => b === 0) && head[10] === 0xff && head[11] === 0xff) {
    return { family: 4, bytes: v4, prefixLength: prefix.prefixLength - 96 };
  }
  const tail = ((v4[0]! << 24) | (v4[1]! << 16) | (v4[2]! << 8) | v4[3]!) >>> 0;
  if (head.every((b) => b === 0) && !(prefix.prefixLength >= 127 && tail <= 1)) {
    const ipv4 = `${v4Text}${prefix.prefixLength === 128 ? "" : `/${prefix.prefixLength - 96}`}`;
    throw new CidrError(
      `"${String(text).trim()}" is an IPv4-compatible IPv6 address (::a.b.c.d, deprecated by RFC 4291): no packet carries it, so it would match nothing; write the IPv4 form "${ipv4}" (or a real IPv6 address)`,
    );
  }
  return prefix;
}

/** Canonical text of an address or prefix written in an input (see parseInputPrefix). */
export function canonicalInputPrefix(text: string): string {
  return formatPrefix(parseInputPrefix(text));
}

export function isExact(prefix: Prefix): boolean {
  return prefix.prefixLength === (prefix.family === 4 ? 32 : 128);
}

export function formatPrefix(prefix: Prefix): string {
  return `${formatAddress(prefix.bytes)}/${prefix.prefixLength}`;
}

/** Canonical text of an address or prefix; throws CidrError for anything else. */
export function canonicalPrefix(text: string): string {
  return formatPrefix(parsePrefix(text));
}

export function formatAddress(bytes: Uint8Array): string {
  if (bytes.length === 4) return Array.from(bytes).join(".");
  if (bytes.length !== 16) throw new CidrError(`an address has 4 or 16 bytes, not ${bytes.length}`);
  const groups: number[] = [];
  for (let i = 0; i < 16; i += 2) groups.push((bytes[i]! << 8) | bytes[i + 1]!);
  if (groups.slice(0, 5).every((g) => g === 0) && groups[5] === 0xffff) {
    return `::ffff:${Array.from(bytes.slice(12)).join(".")}`;
  }
  // RFC 5952: compress the longest run (leftmost on a tie) of two or more zero groups.
  let bestStart = -1;
  let bestLength = 0;
  for (let i = 0; i < 8; ) {
    if (groups[i] !== 0) { i++; continue; }
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLength && j - i >= 2) { bestStart = i; bestLength = j - i; }
    i = j;
  }
  const hex = groups.map((g) => g.toString(16));
  if (bestStart < 0) return hex.join(":");
  return `${hex.slice(0, bestStart).join(":")}::${hex.slice(bestStart + bestLength).join(":")}`;
}

function parseIPv6(text: string): Uint8Array {
  let head = text;
  let tailV4: number[] = [];
  const lastColon = text.lastIndexOf(":");
  if (text.slice(lastColon + 1).includes(".")) {
    tailV4 = text.slice(lastColon + 1).split(".").map(Number);
    head = text.slice(0, lastColon + 1) + "0:0";
  }
  const [left, right] = head.includes("::") ? head.split("::") : [head, undefined];
  const leftGroups = left ? left.split(":") : [];
  const rightGroups = right === undefined ? [] : right ? right.split(":") : [];
  const missing = 8 - leftGroups.length - rightGroups.length;
  const groups = [...leftGroups, ...Array(right === undefined ? 0 : missing).fill("0"), ...rightGroups];
  const bytes = new Uint8Array(16);
  groups.forEach((g, i) => {
    const value = parseInt(g, 16);
    bytes[2 * i] = value >> 8;
    bytes[2 * i + 1] = value & 0xff;
  });
  if (tailV4.length === 4) bytes.set(tailV4, 12);
  return bytes;
}

function clearHostBits(bytes: Uint8Array, prefixLength: number): Uint8Array {
  const out = Uint8Array.from(bytes);
  for (let bit = prefixLength; bit < out.length * 8; bit++) {
    out[bit >> 3]! &= ~(0x80 >> (bit & 7));
  }
  return out;
}

/** Orders prefixes IPv4 first, then by address bytes, then by prefix length, so canonical lists are stable. */
export function comparePrefixes(a: Prefix, b: Prefix): number {
  if (a.family !== b.family) return a.family - b.family;
  for (let i = 0; i < a.bytes.length; i++) {
    if (a.bytes[i] !== b.bytes[i]) return a.bytes[i]! - b.bytes[i]!;
  }
  return a.prefixLength - b.prefixLength;
}

/** True when `address` (exact) lies inside `prefix`. */
export function prefixContains(prefix: Prefix, address: Prefix): boolean {
  if (prefix.family !== address.family) return false;
  const masked = clearHostBits(address.bytes, prefix.prefixLength);
  return masked.every((byte, i) => byte === prefix.bytes[i]);
}
