import * as pulumi from "@pulumi/pulumi";
import { kindProvider } from "./kindProvider";
import { splitHost, type HostArgs } from "./host";

/**
 * Which packets to mirror. Every field given must match (AND); a packet is
 * mirrored when any filter matches (OR). A filter with no fields matches every
 * packet, IP or not.
 */
export interface TrafficMirrorFilterArgs {
  /** "tcp", "udp", "sctp", "icmp", "icmpv6", or an IP protocol number 0-255. Default: any. */
  protocol?: pulumi.Input<"tcp" | "udp" | "sctp" | "icmp" | "icmpv6" | number>;
  /** Source IPv4/IPv6 address or CIDR prefix. Default: any. */
  source?: pulumi.Input<string>;
  /** Destination IPv4/IPv6 address or CIDR prefix, of the same family as source. Default: any. */
  destination?: pulumi.Input<string>;
  /**
   * Source port (80) or inclusive range ("1024-65535"). Ports imply tcp, udp or
   * sctp when protocol is not given; IPv4/IPv6 fragments after the first carry
   * no ports and never match a port filter.
   */
  sourcePort?: pulumi.Input<number | string>;
  /** Destination port or range; same rules as sourcePort. */
  destinationPort?: pulumi.Input<number | string>;
}

/** A filter as check() canonicalises it: ports as numbers, ranges as "from-to", prefixes in network form. */
export interface TrafficMirrorFilter {
  protocol?: "tcp" | "udp" | "sctp" | "icmp" | "icmpv6" | number;
  source?: string;
  destination?: string;
  sourcePort?: number | string;
  destinationPort?: number | string;
}

/** A VXLAN tunnel (RFC 7348) to a collector, created and owned by the mirror. */
export interface VxlanTunnelArgs {
  type: pulumi.Input<"vxlan">;
  /** The collector's IPv4 or IPv6 address (an address, not a host name). */
  remote: pulumi.Input<string>;
  /** VXLAN network identifier, 0-16777215. */
  vni: pulumi.Input<number>;
  /** UDP destination port. Default 4789. */
  port?: pulumi.Input<number>;
  /** Source address of the encapsulated packets. Default: chosen by the host's routing. */
  local?: pulumi.Input<string>;
  /** TTL (hop limit) of the encapsulated packets. Default: the kernel's. */
  ttl?: pulumi.Input<number>;
}

/** A GRE tunnel carrying Ethernet frames (gretap; ip6gretap for an IPv6 remote), created and owned by the mirror. */
export interface GretapTunnelArgs {
  type: pulumi.Input<"gretap">;
  /** The collector's IPv4 or IPv6 address. */
  remote: pulumi.Input<string>;
  /** GRE key (RFC 2890), 0-4294967295. Default: none. */
  key?: pulumi.Input<number>;
  /** Source address; required for an IPv6 remote. */
  local?: pulumi.Input<string>;
  /** TTL (hop limit) of the encapsulated packets. */
  ttl?: pulumi.Input<number>;
}

/** Exactly one of `interface` and `tunnel`. */
export interface TrafficMirrorTargetArgs {
  /**
   * A local interface the copies are sent out of (a dummy, or a veth feeding a
   * capture tool). It must exist, be up, and differ from the mirrored interface
   * (and not be "lo"); bpfleet does not create or remove it. Egress copies of
   * the host's own packets still carry a partial L4 checksum (it is completed
   * after TC, on the way out); turn TX checksum offload off on the target
   * (`ethtool -K <target> tx off`) and the kernel completes the copies' too.
   */
  interface?: pulumi.Input<string>;
  /**
   * A tunnel to a remote collector. The mirror creates it (named "bfm" + a hash,
   * see the `targetInterface` output) before pointing at it, replaces it when a
   * parameter changes, and removes it on delete. Its own encapsulated packets are
   * never mirrored, even when it leaves through the mirrored interface.
   */
  tunnel?: pulumi.Input<VxlanTunnelArgs | GretapTunnelArgs>;
}

export interface TrafficMirrorArgs {
  /** The host. Changing it replaces the mirror. */
  host: pulumi.Input<HostArgs>;
  /** The interface whose traffic is mirrored, e.g. "eth0". Changing it replaces the mirror. */
  interface: pulumi.Input<string>;
  /**
   * "ingress" (received), "egress" (sent), "both", or "none" (everything in
   * place, nothing attached). Default "both". Changes in place.
   */
  direction?: pulumi.Input<"ingress" | "egress" | "both" | "none">;
  /**
   * Up to 64 filters; none mirrors every packet. Order and duplicates do not
   * matter: state keeps them keyed by a tcpdump-like expression
   * ("tcp and dst port 80"), so a preview shows exactly the filters added and
   * removed. Changes in place; packets see either the old or the new list.
   */
  filters?: pulumi.Input<pulumi.Input<TrafficMirrorFilterArgs>[]>;
  /**
   * Mirror 1 in N matching packets: every Nth on each CPU, deterministic, not
   * random (periodic traffic can alias with it). Default 1 (all).
   */
  sampleRate?: pulumi.Input<number>;
  /** Where the copies go. Changing it changes in place: the new target is ready before the mirror points at it. */
  target: pulumi.Input<TrafficMirrorTargetArgs>;
  /**
   * TC filter priority on the interface's hooks, 1-65535 (lower runs first).
   * Default 1, so copies show packets before any other TC program acts on them;
   * the mirror always hands packets on to the next filter. Changing it replaces the mirror.
   */
  priority?: pulumi.Input<number>;
  /**
   * When the mirrored interface, or the interface the tunnel's packets leave
   * through (its underlay), carries the management SSH session: before a
   * change, arm a revert timer on the host; after it, prove that a fresh SSH
   * login works, then disarm. If the login fails, the host undoes the change by
   * itself within `lockoutRevertSeconds` (config, filters and previous program
   * back, a tunnel the change made removed; a new mirror removed whole) and the
   * update fails saying so. A mirror never drops packets, but a change loads a
   * BPF object into the interface's hooks and may add a device on the path.
   * false applies changes without the timer. Default true.
   */
  lockoutGuard?: pulumi.Input<boolean>;
  /** Seconds until an undisarmed revert timer undoes the change (5–3600). Default 30. */
  lockoutRevertSeconds?: pulumi.Input<number>;
  /** Pin directory name under /sys/fs/bpf/bpfleet/traffic-mirror/. Default: the resource name. */
  pinName?: pulumi.Input<string>;
}

const provider = kindProvider("trafficMirror");

/**
 * A TC program that sends copies of selected packets of one interface to a
 * local interface or, through a tunnel it owns, to a remote collector. The
 * original packets are never changed, and other TC filters on the interface
 * keep running. No snap length: copies are whole frames (bpf_clone_redirect
 * cannot truncate only the copy); cut them at the collector.
 */
export class TrafficMirror extends pulumi.dynamic.Resource {
  declare public readonly interface: pulumi.Output<string>;
  /** As attached on the host; "none" when no hook runs the program. */
  declare public readonly direction: pulumi.Output<"ingress" | "egress" | "both" | "none">;
  /** The filters really in the program's live set, keyed by their tcpdump-like expression. */
  declare public readonly filters: pulumi.Output<Record<string, TrafficMirrorFilter>>;
  declare public readonly sampleRate: pulumi.Output<number>;
  declare public readonly target: pulumi.Output<{ interface?: string; tunnel?: Record<string, unknown> }>;
  /** The device copies leave through: the local target or the tunnel device. */
  declare public readonly targetInterface: pulumi.Output<string>;
  declare public readonly targetIfindex: pulumi.Output<number>;
  /** The handle of the mirror's TC filters (with `priority`, what `tc filter show` lists). */
  declare public readonly tcHandle: pulumi.Output<number>;
  declare public readonly programId: pulumi.Output<number>;
  declare public readonly programTag: pulumi.Output<string>;
  /** sha256 of the BPF object that is loaded. */
  declare public readonly objectSha256: pulumi.Output<string>;
  /** Whether the mirror added the interface's clsact qdisc (removed again on delete when no filter is left). */
  declare public readonly qdiscCreated: pulumi.Output<boolean>;
  /** Summed over CPUs, as of the last create/update/refresh. */
  declare public readonly counters: pulumi.Output<{
    matchedPackets: number;
    matchedBytes: number;
    mirroredPackets: number;
    mirroredBytes: number;
    cloneFailures: number;
  }>;

  constructor(name: string, args: TrafficMirrorArgs, opts?: pulumi.CustomResourceOptions) {
    const { host, credentials } = splitHost(args.host);
    super(
      provider,
      name,
      {
        host,
        credentials,
        interface: args.interface,
        name: args.pinName ?? name,
        direction: args.direction,
        filters: args.filters ?? [],
        sampleRate: args.sampleRate,
        target: args.target,
        priority: args.priority,
        lockoutGuard: args.lockoutGuard,
        lockoutRevertSeconds: args.lockoutRevertSeconds,
        targetInterface: undefined,
        targetIfindex: undefined,
        tcHandle: undefined,
        programId: undefined,
        programTag: undefined,
        objectSha256: undefined,
        qdiscCreated: undefined,
        counters: undefined,
      },
      { ...opts, additionalSecretOutputs: [...(opts?.additionalSecretOutputs ?? []), "credentials"] },
      "bpfleet",
      "TrafficMirror",
    );
  }
}
