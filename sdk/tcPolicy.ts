import * as pulumi from "@pulumi/pulumi";
import { kindProvider } from "./kindProvider";
import { splitHost, type HostArgs } from "./host";

/** A rule as an object; the same as the text "<action> <protocol> [port] [from <cidr>] [to <cidr>]". */
export interface TcPolicyRuleArgs {
  action: pulumi.Input<"allow" | "deny">;
  /** "icmp" means ICMP for IPv4 and ICMPv6 for IPv6; "any" every IP protocol. */
  protocol: pulumi.Input<"tcp" | "udp" | "icmp" | "any">;
  /** Destination port (22) or inclusive range ("5000-6000"), 1-65535; tcp and udp only. Default: every port. */
  port?: pulumi.Input<number | string>;
  /** Source address or CIDR prefix, IPv4 or IPv6. Default: any. A rule with an address applies to its family only. */
  from?: pulumi.Input<string>;
  /** Destination address or CIDR prefix, of the same family as `from`. Default: any. */
  to?: pulumi.Input<string>;
}

/** The policy of one hook. */
export interface TcPolicyDirectionArgs {
  /**
   * What happens to a packet that no rule (and, when stateful, no live flow)
   * matches. Default "allow". A default-deny ingress also drops DHCP replies
   * (broadcast or unicast to a lease the host does not hold yet), multicast
   * (mDNS, VRRP, routing protocols) and anything else not allowed explicitly:
   * add e.g. "allow udp 68" on a DHCP client. ARP, IPv6 neighbour discovery
   * and MLD always pass.
   */
  default?: pulumi.Input<"allow" | "deny">;
  /**
   * Rules as texts ("allow tcp 8080", "deny udp 5000-6000 from 10.0.0.0/8",
   * "allow icmp") or objects, any order, duplicates allowed; at most 1,024 in
   * ingress and egress together. A deny rule beats any allow rule matching the
   * same packet. Kept keyed by the canonical text, so a preview shows each rule
   * added or removed. The port is the packet's destination port (on egress the
   * remote one). Changing rules rewrites only the map entries that change.
   */
  rules?: pulumi.Input<pulumi.Input<string | TcPolicyRuleArgs>[]>;
}

export interface TcPolicyTimeoutsArgs {
  /** Idle timeout in seconds of a TCP flow seen in both directions. Default 21600 (6 hours). */
  tcpEstablished?: pulumi.Input<number>;
  /** A TCP flow before its first reply, and after a FIN. Default 120. */
  tcpTransitory?: pulumi.Input<number>;
  /** UDP, ICMP and every other protocol. Default 60. */
  other?: pulumi.Input<number>;
}

export interface TcPolicyArgs {
  /** The host. Changing it replaces the policy. */
  host: pulumi.Input<HostArgs>;
  /** An Ethernet interface, e.g. "eth0". Changing it replaces the policy. */
  interface: pulumi.Input<string>;
  /** Packets the interface receives. Default: allow, no rules. */
  ingress?: pulumi.Input<TcPolicyDirectionArgs>;
  /** Packets the interface sends. Default: allow, no rules. */
  egress?: pulumi.Input<TcPolicyDirectionArgs>;
  /**
   * Track flows (5-tuple, IPv4 and IPv6): a packet of a live flow passes both
   * ways before any rule is consulted, and a packet the rules let through
   * records its flow. With ingress default "deny", the host's own outbound
   * connections get their replies (the egress hook recorded them) and only the
   * allowed services can be reached. Flows survive rule updates and program
   * upgrades. Default false.
   */
  stateful?: pulumi.Input<boolean>;
  /** Idle timeouts of tracked flows; an idle flow's entry is deleted by a timer in the kernel. */
  timeouts?: pulumi.Input<TcPolicyTimeoutsArgs>;
  /** false loads the programs and writes the maps without attaching them. Default true. */
  attached?: pulumi.Input<boolean>;
  /**
   * A policy must let in TCP to `host.port` (and, stateless, let the replies
   * out), checked before anything changes and again with the address the
   * provider really connects from, and the programs never drop the provider's
   * own SSH session (failsafe). true drops both, for hosts managed over another
   * path; the revert timer (`lockoutGuard`) stays. Default false.
   */
  allowLockout?: pulumi.Input<boolean>;
  /**
   * Before a change on the interface that carries the management SSH session,
   * arm a revert timer on the host; after it, prove that a fresh SSH login
   * works, then disarm. If the login fails, the host undoes the change by
   * itself within `lockoutRevertSeconds` (rules, programs and filters as they
   * were; a new policy is removed whole) and the update fails saying what would
   * have locked it out. false applies changes without the timer. Default true.
   */
  lockoutGuard?: pulumi.Input<boolean>;
  /** Seconds until an undisarmed revert timer undoes the change (5–3600). Default 30. */
  lockoutRevertSeconds?: pulumi.Input<number>;
  /**
   * TC priority of both filters, 1–65535 (lower runs first; the kernel keeps one
   * filter kind and protocol per priority, so a priority holding a non-BPF
   * filter, or one for a single protocol, is refused). Default 2: after a
   * TrafficMirror at its default 1, before filters added without a priority (tc
   * numbers those from 49152 down). A filter at a lower priority that returns
   * TC_ACT_OK ends the hook before the policy sees the packet.
   *
   * Changes in place, not by replacement: the filters at the new priority are
   * added (running the same programs against the same maps, so rules and live
   * flows carry over) before those at the old one are removed, so no packet
   * passes unjudged. For that moment a packet may be judged twice with the same
   * verdict (its counters count it twice). Under the lockout guard, the host
   * puts the old filters back if the change cuts the management path.
   */
  priority?: pulumi.Input<number>;
  /** Pin directory name under /sys/fs/bpf/bpfleet/tc-policy/. Default: the resource name. */
  pinName?: pulumi.Input<string>;
}

export interface TcPolicyCounters {
  ingressAllowedPackets: number;
  ingressAllowedBytes: number;
  ingressDeniedPackets: number;
  ingressDeniedBytes: number;
  egressAllowedPackets: number;
  egressAllowedBytes: number;
  egressDeniedPackets: number;
  egressDeniedBytes: number;
  flowsCreated: number;
  /** Flows removed after their idle timeout. */
  flowsExpired: number;
  /** Flows removed by a TCP RST. */
  flowsReset: number;
}

const provider = kindProvider("tcPolicy");

/**
 * Stateless rules and stateful flow tracking on the TC ingress and egress hooks
 * of one interface (clsact), IPv4 and IPv6. Other TC filters on the interface are
 * left alone: the policy's filters have their own priority (`priority`, default 2)
 * and handle, and a packet it passes goes on to the next filter.
 */
export class TcPolicy extends pulumi.dynamic.Resource {
  declare public readonly interface: pulumi.Output<string>;
  /** The pin directory name under /sys/fs/bpf/bpfleet/tc-policy/. */
  declare public readonly name: pulumi.Output<string>;
  /** The policies as loaded on the host: rules keyed by canonical text. */
  declare public readonly ingress: pulumi.Output<{ default: "allow" | "deny"; rules: Record<string, "allow" | "deny"> }>;
  declare public readonly egress: pulumi.Output<{ default: "allow" | "deny"; rules: Record<string, "allow" | "deny"> }>;
  declare public readonly stateful: pulumi.Output<boolean>;
  declare public readonly timeouts: pulumi.Output<{ tcpEstablished: number; tcpTransitory: number; other: number }>;
  /** Whether both hooks run the policy's programs. */
  declare public readonly attached: pulumi.Output<boolean>;
  /** Kernel program ids and tags, by hook. */
  declare public readonly programs: pulumi.Output<Record<"ingress" | "egress", { id: number; tag: string }>>;
  /** sha256 of the BPF object that is loaded. */
  declare public readonly objectSha256: pulumi.Output<string>;
  /** Summed over CPUs, as of the last create/update/refresh. */
  declare public readonly counters: pulumi.Output<TcPolicyCounters>;
  /** Packets each rule decided, by hook and rule text. */
  declare public readonly ruleHits: pulumi.Output<Record<"ingress" | "egress", Record<string, number>>>;
  /** Entries in the flow table. */
  declare public readonly liveFlows: pulumi.Output<number>;
  /** Priority and handle of the policy's TC filters (what `tc filter show` lists). */
  declare public readonly tcPriority: pulumi.Output<number>;
  declare public readonly tcHandle: pulumi.Output<number>;
  /** Whether the policy added the interface's clsact qdisc (removed again on delete when no filter is left). */
  declare public readonly qdiscCreated: pulumi.Output<boolean>;

  constructor(name: string, args: TcPolicyArgs, opts?: pulumi.CustomResourceOptions) {
    const { host, credentials } = splitHost(args.host);
    super(
      provider,
      name,
      {
        host,
        credentials,
        interface: args.interface,
        name: args.pinName ?? name,
        ingress: args.ingress ?? {},
        egress: args.egress ?? {},
        stateful: args.stateful,
        timeouts: args.timeouts,
        attached: args.attached,
        allowLockout: args.allowLockout,
        lockoutGuard: args.lockoutGuard,
        lockoutRevertSeconds: args.lockoutRevertSeconds,
        priority: args.priority,
        programs: undefined,
        objectSha256: undefined,
        counters: undefined,
        ruleHits: undefined,
        liveFlows: undefined,
        tcPriority: undefined,
        tcHandle: undefined,
        qdiscCreated: undefined,
      },
      { ...opts, additionalSecretOutputs: [...(opts?.additionalSecretOutputs ?? []), "credentials"] },
      "bpfleet",
      "TcPolicy",
    );
  }
}
