/** The per-map capacities a deny list is checked against (XdpFirewall's `deny`, DenyList's `entries`). */
import type { z } from "zod";
import { encodeDenyEntry } from "./codec";

/**
 * The real capacity of each map an entry takes a place in (bpf/include/xdp_firewall.h).
 * The index's detail maps need no check of their own: fw_v4_hosts holds one entry
 * per /24 with an IPv4 prefix /25–/31 in it, fw_v6_long one per IPv6 prefix
 * /25–/127, both at most the prefix trie's count and of the same capacity.
 */
export const MAP_CAPACITY = {
  deny_v4_exact: 1_048_576,
  deny_v6_exact: 1_048_576,
  deny_v4_prefix: 262_144,
  deny_v6_prefix: 262_144,
} as const;

/** All maps together: the bound the list is parsed under before the per-map counts. */
export const MAX_DENY_ENTRIES = Object.values(MAP_CAPACITY).reduce((a, b) => a + b, 0);

const MAP_ENTRY_KIND: Record<keyof typeof MAP_CAPACITY, string> = {
  deny_v4_exact: "IPv4 addresses (/32)",
  deny_v6_exact: "IPv6 addresses (/128)",
  deny_v4_prefix: "IPv4 prefixes (/0–/31)",
  deny_v6_prefix: "IPv6 prefixes (/0–/127)",
};

/** Counts each map's entries and names every map the list would overflow. */
export function checkMapCapacity(deny: Record<string, unknown>, ctx: z.RefinementCtx): void {
  const counts = { deny_v4_exact: 0, deny_v6_exact: 0, deny_v4_prefix: 0, deny_v6_prefix: 0 };
  for (const entry of Object.keys(deny)) counts[encodeDenyEntry(entry).map]++;
  for (const [map, count] of Object.entries(counts) as [keyof typeof MAP_CAPACITY, number][]) {
    if (count > MAP_CAPACITY[map]) {
      ctx.addIssue({ code: "custom", message: `has ${count} ${MAP_ENTRY_KIND[map]}; their map ${map} holds at most ${MAP_CAPACITY[map]}` });
    }
  }
}

