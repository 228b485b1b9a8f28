import * as pulumi from "@pulumi/pulumi";
import { kindProvider } from "./kindProvider";
import { splitHost, type HostArgs } from "./host";

export interface XdpFirewallArgs {
  /** The host to install the firewall on. Changing it replaces the firewall. */
  host: pulumi.Input<HostArgs>;
  /** Interface whose ingress traffic is filtered, e.g. "eth0". Changing it replaces the firewall. */
  interface: pulumi.Input<string>;
  /**
   * Source IPv4/IPv6 addresses and CIDR prefixes to drop. Order and duplicates do
   * not matter; entries are kept in canonical form ("10.0.0.0/8", "2001:db8::/32",
   * "192.0.2.9/32"). Changing the list rewrites only the entries that changed.
   */
  deny?: pulumi.Input<pulumi.Input<string>[]>;
  /** "native" (driver), "generic" (skb) or "auto". Default "auto". Changing it replaces the firewall. */
  mode?: pulumi.Input<"native" | "generic" | "auto">;
  /** false loads the program and fills its maps without attaching it. Default true. */
  attached?: pulumi.Input<boolean>;
  /**
   * Share the interface with other bpfleet XDP programs, e.g. a firewall (chainPriority
   * 0) in front of a MaglevService (chainPriority 1): each gets a slot of the
   * interface's XDP chain, 0-7, and lower runs first. bpfleet's dispatcher sits on the
   * hook and runs the members in order; a packet one member passes goes on to the next,
   * any other verdict ends the chain. The first member to arrive attaches the
   * dispatcher, the last to leave removes it. Unset (default): attach alone, and refuse
   * an interface another program uses. Setting it on a program attached alone moves it
   * into the chain in place (no moment without it); two members may not share a slot.
   */
  chainPriority?: pulumi.Input<number>;
  /**
   * Lockout guard. Before a change on the interface that carries the management SSH
   * session, arm a revert timer on the host; after the change, prove a fresh SSH
   * login works, then disarm. If it does not, the host undoes the change by itself
   * and the update fails with what would have locked it out. Default true.
   */
  lockoutGuard?: pulumi.Input<boolean>;
  /** Seconds until an undisarmed revert timer undoes the change (5–3600). Default 30. */
  lockoutRevertSeconds?: pulumi.Input<number>;
  /**
   * Permit deny entries that cover the address this provider's SSH session comes
   * from, as the host sees it. Default false: such entries are refused before
   * anything changes.
   */
  allowManagementDeny?: pulumi.Input<boolean>;
  /**
   * Make the firewall come back by itself after a reboot, before the network is up and
   * before anyone runs Pulumi: every create/update persists a restore script and a
   * bpftool batch of the deny entries under /var/lib/bpfleet/boot/ and installs and
   * enables one shared systemd unit, bpfleet-restore.service. false removes them (and
   * the unit with the host's last such resource). Default false.
   *
   * With chainPriority, the restore also loads, pins and attaches the interface's XDP
   * dispatcher (unless it is there already) and puts the firewall back into its slot,
   * under the same host lock as the provider's chain changes; it never replaces a
   * program bpfleet did not attach. Only the firewall comes back: a MaglevService
   * sharing the interface is not restored at boot, so until its next Pulumi run its
   * slot is empty and what the firewall passes reaches the host's stack unbalanced. `pulumi refresh` (or `up --refresh`) then reports the balancer deleted
   * and the firewall attached in place, and the following `up` recreates the balancer,
   * which joins the chain behind the restored firewall without reloading it.
   */
  bootRestore?: pulumi.Input<boolean>;
  /** Pin directory name under /sys/fs/bpf/bpfleet/xdp-firewall/. Default: the resource name. */
  pinName?: pulumi.Input<string>;
}

const provider = kindProvider("xdpFirewall");

/** An XDP program that drops packets from denied source addresses on one interface of one host. */
export class XdpFirewall extends pulumi.dynamic.Resource {
  /** The deny entries really present in the host's maps (canonical CIDR → "deny"). */
  declare public readonly deny: pulumi.Output<Record<string, "deny">>;
  declare public readonly interface: pulumi.Output<string>;
  /** The pin directory name under /sys/fs/bpf/bpfleet/xdp-firewall/. */
  declare public readonly name: pulumi.Output<string>;
  declare public readonly attached: pulumi.Output<boolean>;
  /** Kernel program id and tag of the loaded firewall. */
  declare public readonly programId: pulumi.Output<number>;
  declare public readonly programTag: pulumi.Output<string>;
  /** sha256 of the BPF object that is loaded. */
  declare public readonly objectSha256: pulumi.Output<string>;
  /** "driver", "generic", or "detached". */
  declare public readonly attachMode: pulumi.Output<string>;
  /** Packets and bytes passed and dropped, summed over CPUs, as of the last create/update/refresh. */
  declare public readonly counters: pulumi.Output<{ passPackets: number; passBytes: number; dropPackets: number; dropBytes: number }>;

  constructor(name: string, args: XdpFirewallArgs, opts?: pulumi.CustomResourceOptions) {
    const { host, credentials } = splitHost(args.host);
    super(
      provider,
      name,
      {
        host,
        credentials,
        interface: args.interface,
        name: args.pinName ?? name,
        deny: args.deny ?? [],
        mode: args.mode,
        attached: args.attached,
        chainPriority: args.chainPriority,
        lockoutGuard: args.lockoutGuard,
        lockoutRevertSeconds: args.lockoutRevertSeconds,
        allowManagementDeny: args.allowManagementDeny,
        bootRestore: args.bootRestore,
        programId: undefined,
        programTag: undefined,
        objectSha256: undefined,
        attachMode: undefined,
        counters: undefined,
      },
      { ...opts, additionalSecretOutputs: [...(opts?.additionalSecretOutputs ?? []), "credentials"] },
      "bpfleet",
      "XdpFirewall",
    );
  }
}
