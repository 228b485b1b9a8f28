/** Inputs of XdpFirewall, as the user writes them and as check() canonicalises them. */
import type * as pulumi from "@pulumi/pulumi";
import { z } from "zod";
import { checkInputs, containsUnknown } from "../dynamicAdapter";
import { credentialsSchema, hostSchema } from "../remote/hostSchema";
import { lockoutInputs } from "../remote/lockout";
import { expectationSet } from "../expect/schema";
import { withPreviewNote } from "../expect/preview";
import type { ExpectationResult } from "../expect/hostRun";
import type { ManagementSession } from "./managementSession";
import { checkMapCapacity, MAX_DENY_ENTRIES } from "./capacity";
import { previousLists, revertWindowProblem } from "./revertWindow";

export { MAP_CAPACITY, MAX_DENY_ENTRIES } from "./capacity";
import { chainPriority, cidrSet, interfaceName, pinName } from "../validation";

export const xdpFirewallSchema = z.object({
  /** The host to install the firewall on. Changing it replaces the firewall. */
  host: hostSchema,
  credentials: credentialsSchema.default({}),
  /** Interface whose ingress traffic is filtered, e.g. "eth0". Changing it replaces the firewall. */
  interface: interfaceName,
  /** The pin directory name, /sys/fs/bpf/bpfleet/xdp-firewall/<name>/: the SDK's `pinName`, documented there. */
  name: pinName,
  /**
   * Source IPv4/IPv6 addresses and CIDR prefixes to drop. Order and duplicates do
   * not matter; entries are kept in canonical form ("10.0.0.0/8", "2001:db8::/32",
   * "192.0.2.9/32") and keyed by entry, so a preview shows exactly `+`/`-` per
   * entry. Changing the list rewrites only the entries that changed, additions
   * first, with no detach. Each map has its own capacity: 1,048,576 IPv4 addresses
   * (/32), 1,048,576 IPv6 addresses (/128), 262,144 IPv4 prefixes and 262,144 IPv6
   * prefixes.
   */
  deny: cidrSet("deny", MAX_DENY_ENTRIES).superRefine(checkMapCapacity).default({}),
  /**
   * The fleet-wide list to apply instead of `deny` (a DenyList, held once in the stack's
   * state): its name, digest and count, which is all this firewall's state carries of
   * it. The SDK fills it from `denyList` (or from a `deny` list it turns into a DenyList).
   */
  denyList: z
    .object({
      name: z.string().min(1),
      digest: z.string().regex(/^[0-9a-f]{64}$/, "must be the list's sha256 digest (64 hex digits)"),
      count: z.number().int().nonnegative(),
    })
    .optional(),
  /**
   * Set by `pulumi refresh`, never by you: entries the host's maps hold beyond the
   * list it recorded as applied ("stray") or lack ("missing"). The next `up` removes
   * the strays and restores the missing entries.
   */
  denyDrift: z.record(z.string(), z.enum(["stray", "missing"])).optional(),
  /** "native" (driver), "generic" (skb) or "auto" (native where the driver supports it). Default "auto". Changing it replaces the firewall. */
  mode: z.enum(["native", "generic", "auto"]).default("auto"),
  /** false loads the program and fills its maps without attaching it (staging). Default true. */
  attached: z.boolean().default(true),
  /**
   * Share the interface with other bpfleet XDP programs, e.g. a firewall (chainPriority
   * 0) in front of a MaglevService (chainPriority 1): each gets a slot of the
   * interface's XDP chain, 0-7, and lower runs first. bpfleet's dispatcher sits on the
   * hook and runs the members in order; a packet one member passes goes on to the next,
   * any other verdict ends the chain. The first member to arrive attaches the
   * dispatcher, the last to leave removes it. Unset (default): attach alone, and refuse
   * an interface another program uses. Setting it on a program attached alone moves it
   * into the chain in place (no moment without it); two members may not share a slot.
   * See provider/remote/xdpHook.ts.
   */
  chainPriority: chainPriority.optional(),
  /**
   * Lockout guard. Before a change on the interface that carries the management SSH
   * session, arm a revert timer on the host; after the change, prove a fresh SSH
   * login works, then disarm. If it does not, the host undoes the change by itself
   * within `lockoutRevertSeconds` and the update fails saying only what it saw: the
   * login that failed, whether a later login worked and whether the host reports its
   * revert as fired. Default true.
   */
  lockoutGuard: lockoutInputs.lockoutGuard,
  /** Seconds until an undisarmed revert timer undoes the change (10–3600). Default 30. */
  lockoutRevertSeconds: lockoutInputs.lockoutRevertSeconds,
  /**
   * Permit deny entries that cover the address this provider's SSH session comes
   * from, as the host sees it. Default false: such entries are refused before
   * anything changes.
   */
  allowManagementDeny: z.boolean().default(false),
  /**
   * Make the firewall come back by itself after a reboot, before the network is up and
   * before anyone runs Pulumi: every create/update persists a restore script and a
   * bpftool batch of the deny entries under /var/lib/bpfleet/boot/ and installs and
   * enables one shared systemd unit, bpfleet-restore.service (run before
   * network-pre.target). false removes them (and the unit with the host's last such
   * resource). Default false.
   *
   * With chainPriority, the restore also loads, pins and attaches the interface's XDP
   * dispatcher (unless it is there already) and puts the firewall back into its slot,
   * under the same host lock as the provider's chain changes; it never replaces a
   * program bpfleet did not attach. Only the firewall comes back: a MaglevService
   * sharing the interface is not restored at boot, so until its next Pulumi run its
   * slot is empty and what the firewall passes reaches the host's stack unbalanced.
   * `pulumi refresh` (or `up --refresh`) then reports the balancer deleted and the
   * firewall attached in place, and the following `up` recreates the balancer, which
   * joins the chain behind the restored firewall without reloading it.
   */
  bootRestore: z.boolean().default(false),
  /**
   * Packets that must pass or be dropped, proven on the host on every create and
   * update: texts `"[ingress] <tcp|udp|icmp> <source> > <destination> [tcp flags]: <pass|drop>"`
   * (e.g. `"tcp 10.0.0.5:33000 > 10.0.0.7:22 syn: pass"`, `"udp [2001:db8::1]:53 > [2001:db8::7]:40000: drop"`)
   * or objects. After the change is applied, while the revert timer is armed, each
   * packet runs through a probe copy of what is now attached (through the interface's
   * XDP chain when it has one, so every member's verdict counts); any miss reverts the
   * host at once and fails the update with a table (expectation, wanted, got, host).
   * Kept keyed by the canonical text, so a preview shows each one added or removed.
   * At most 1,000. Default: none.
   */
  expect: expectationSet("xdpFirewall").default({}),
});

export type XdpFirewallInputs = z.infer<typeof xdpFirewallSchema>;

/**
 * The schema (every rule is in it: bootRestore works with and without chainPriority),
 * and, on an update (`olds`: the inputs before), whether the lockout guard's revert
 * window can hold the entries the update writes (revertWindow.ts).
 */
export function checkXdpFirewall(news: Record<string, unknown>, olds?: Record<string, unknown>): pulumi.dynamic.CheckResult {
  const result = checkInputs(xdpFirewallSchema, news);
  const inputs = result.inputs as Partial<XdpFirewallInputs> | undefined;
  if (inputs?.denyList && inputs.deny && typeof inputs.deny === "object" && Object.keys(inputs.deny).length > 0) {
    return { failures: [{ property: "", reason: "deny: give the entries either as `deny` or as a `denyList`, not both" }] };
  }
  if (inputs && olds && !containsUnknown([inputs.deny, inputs.denyList, inputs.lockoutRevertSeconds, inputs.lockoutGuard, inputs.attached])) {
    // The old inputs are what check returned last time: canonical already (not parsed
    // again: that costs seconds at 1M entries).
    const problem = revertWindowProblem(inputs, previousLists(olds));
    // The engine prints `property` as a key of what the user wrote: named only when it is there.
    if (problem) return { failures: [{ property: "lockoutRevertSeconds" in news ? "lockoutRevertSeconds" : "", reason: problem }] };
  }
  // With a DenyList the entries are not among this firewall's inputs: preview cannot
  // evaluate the expectations against them, and the host run during `up` stays the proof.
  if (inputs?.denyList) return result;
  return withPreviewNote("xdpFirewall", result, ["deny", "expect"]);
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
   * over its pinned maps): the two 4 MiB index arrays, the way buckets (8 MiB IPv4,
   * 30 MiB IPv6) and the 2.5 MiB of IPv4 /24 host bitmap slots always, the hash maps
   * and tries as they fill.
   */
  mapMemoryBytes: number;
  /** Each packet expectation's result on the host at the last create/update, by canonical text (provider/expect/hostRun.ts). */
  expectResults: Record<string, ExpectationResult>;
  /**
   * The management SSH session as the host saw it at the last create/update: the
   * address it came from and the interface the host routes it over
   * (managementSession.ts). Kept by the provider, never an input; absent in a state
   * written before it existed, or when the host did not say.
   */
  managementSession?: ManagementSession;
}
