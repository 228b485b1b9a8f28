/** Inputs of XdpFirewall, as the user writes them and as check() canonicalises them. */
import type * as pulumi from "@pulumi/pulumi";
import { z } from "zod";
import { checkInputs } from "../dynamicAdapter";
import { credentialsSchema, hostSchema } from "../remote/hostSchema";
import { lockoutInputs } from "../remote/lockout";
import { encodeDenyEntry } from "./codec";
import { chainPriority, cidrSet, interfaceName, pinName } from "../validation";

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
function checkMapCapacity(deny: Record<string, unknown>, ctx: z.RefinementCtx): void {
  const counts = { deny_v4_exact: 0, deny_v6_exact: 0, deny_v4_prefix: 0, deny_v6_prefix: 0 };
  for (const entry of Object.keys(deny)) counts[encodeDenyEntry(entry).map]++;
  for (const [map, count] of Object.entries(counts) as [keyof typeof MAP_CAPACITY, number][]) {
    if (count > MAP_CAPACITY[map]) {
      ctx.addIssue({ code: "custom", message: `has ${count} ${MAP_ENTRY_KIND[map]}; their map ${map} holds at most ${MAP_CAPACITY[map]}` });
    }
  }
}

export const xdpFirewallSchema = z.object({
  host: hostSchema,
  credentials: credentialsSchema.default({}),
  /** Interface whose ingress the firewall guards. Changing it replaces the firewall. */
  interface: interfaceName,
  /** Pin directory name: /sys/fs/bpf/bpfleet/xdp-firewall/<name>/. Defaults to the resource name. */
  name: pinName,
  /** Source addresses and prefixes to drop, IPv4 and IPv6 mixed. */
  deny: cidrSet("deny", MAX_DENY_ENTRIES).superRefine(checkMapCapacity).default({}),
  /** native (driver), generic (skb), or auto (native where the driver supports it). Changing it replaces the firewall. */
  mode: z.enum(["native", "generic", "auto"]).default("auto"),
  /** false loads the program and fills its maps without attaching it (staging). */
  attached: z.boolean().default(true),
  /**
   * Share the interface with other bpfleet XDP programs (a load balancer behind this
   * firewall): run as a member of the interface's chain at this priority, 0 first.
   * Unset: attach alone. See provider/remote/xdpHook.ts.
   */
  chainPriority: chainPriority.optional(),
  /** The lockout guard: lockoutGuard (default true) and lockoutRevertSeconds (default 30). */
  ...lockoutInputs,
  /** Permit deny entries that cover the address this provider's SSH session comes from (refused by default). */
  allowManagementDeny: z.boolean().default(false),
  /**
   * Persist on the host what brings the firewall back after a reboot without Pulumi:
   * a restore script and a bpftool batch of the deny entries under
   * /var/lib/bpfleet/boot/, run by the shared bpfleet-restore.service before
   * network-pre.target. false (default) removes them.
   */
  bootRestore: z.boolean().default(false),
});

export type XdpFirewallInputs = z.infer<typeof xdpFirewallSchema>;

/** The schema; every rule is in it (bootRestore works with and without chainPriority). */
export function checkXdpFirewall(news: Record<string, unknown>): pulumi.dynamic.CheckResult {
  return checkInputs(xdpFirewallSchema, news);
}

export interface XdpFirewallCounters {
  passPackets: number;
  passBytes: number;
  dropPackets: number;
  dropBytes: number;
}

export interface XdpFirewallOutputs extends XdpFirewallInputs {
  /** sha256 of the BPF object that is loaded. */
  objectSha256: string;
  programId: number;
  programTag: string;
  /** How the kernel reports the attachment ("driver", "generic"), or "detached". */
  attachMode: string;
  counters: XdpFirewallCounters;
  /**
   * Memory of the firewall's maps as the kernel accounts it (bytes_memlock summed
   * over its pinned maps): the two 4 MiB index arrays always, the hash maps and
   * tries as they fill.
   */
  mapMemoryBytes: number;
}
