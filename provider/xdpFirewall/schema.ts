/** Inputs of XdpFirewall, as the user writes them and as check() canonicalises them. */
import { z } from "zod";
import { credentialsSchema, hostSchema } from "../remote/hostSchema";
import { cidrSet, interfaceName, pinName } from "../validation";

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
   * Before a change on the interface that carries the management SSH session, arm a
   * revert timer on the host; after the change, prove that a fresh SSH login works,
   * then disarm. If the login fails, the host undoes the change by itself.
   */
  lockoutGuard: z.boolean().default(true),
  /** Seconds after which an undisarmed revert timer undoes the change. */
  lockoutRevertSeconds: z.number().int().min(5).max(3600).default(30),
  /** Permit deny entries that cover the address this provider's SSH session comes from (refused by default). */
  allowManagementDeny: z.boolean().default(false),
});

export type XdpFirewallInputs = z.infer<typeof xdpFirewallSchema>;

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
