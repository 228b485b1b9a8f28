/**
 * Byte layouts of the firewall's maps, mirroring bpf/include/xdp_firewall.h:
 * exact addresses are keyed by their wire bytes, prefixes by a little-endian u32
 * prefix length followed by the network address (struct fw_v4/v6_prefix_key).
 */
import { formatAddress, formatPrefix, isExact, parsePrefix } from "../cidr";

export const DENY_MAPS = ["deny_v4_exact", "deny_v6_exact", "deny_v4_prefix", "deny_v6_prefix"] as const;
export type DenyMap = (typeof DENY_MAPS)[number];
export const STATS_MAP = "fw_stats";
export const DENY_VALUE = Uint8Array.of(1);

export interface DenyKey {
  map: DenyMap;
  key: Uint8Array;
}

export function encodeDenyEntry(canonical: string): DenyKey {
  const prefix = parsePrefix(canonical);
  if (isExact(prefix)) return { map: prefix.family === 4 ? "deny_v4_exact" : "deny_v6_exact", key: prefix.bytes };
  const key = new Uint8Array(4 + prefix.bytes.length);
  new DataView(key.buffer).setUint32(0, prefix.prefixLength, true);
  key.set(prefix.bytes, 4);
  return { map: prefix.family === 4 ? "deny_v4_prefix" : "deny_v6_prefix", key };
}

export function decodeDenyEntry(map: DenyMap, key: Uint8Array): string {
  switch (map) {
    case "deny_v4_exact":
    case "deny_v6_exact":
      return `${formatAddress(key)}/${key.length * 8}`;
    case "deny_v4_prefix":
    case "deny_v6_prefix": {
      const prefixLength = new DataView(key.buffer, key.byteOffset, key.byteLength).getUint32(0, true);
      const address = key.slice(4);
      // Normalise in case someone wrote a key with host bits set by hand.
      return formatPrefix(parsePrefix(`${formatAddress(address)}/${prefixLength}`));
    }
  }
}

