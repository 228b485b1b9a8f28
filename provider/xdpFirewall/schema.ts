/** Inputs of XdpFirewall, as the user writes them and as check() canonicalises them. */
import type * as pulumi from "@pulumi/pulumi";
import { z } from "zod";
import { checkInputs } from "../dynamicAdapter";
import { credentialsSchema, hostSchema } from "../remote/hostSchema";
import { lockoutInputs } from "../remote/lockout";
import { chainPriority, cidrSet, interfaceName, pinName } from "../validation";

/** Capacity of the exact and prefix maps together (see bpf/include/xdp_firewall.h). */
export const MAX_DENY_ENTRIES = 1_048_576;

export const xdpFirewallSchema = z.object({
  host: hostSchema,
  credentials: credentialsSchema.default({}),
  /** Interface whose ingress the firewall guards. Changing it replaces the firewall. */
  interface: interfaceName,
  /** Pin directory name: /sys/fs/bpf/bpfleet/xdp-firewall/<name>/. Defaults to the resource name. */
  name: pinName,
  /** Source addresses and prefixes to drop, IPv4 and IPv6 mixed. */
  deny: cidrSet("deny", MAX_DENY_ENTRIES).default({}),
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
}
