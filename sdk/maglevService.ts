import * as pulumi from "@pulumi/pulumi";
import { kindProvider } from "./kindProvider";
import { splitHost, type HostArgs } from "./host";

/** A service address as an object; the string form "198.51.100.10:80/tcp" ("[2001:db8::10]:80/tcp" for IPv6) is the same. */
export interface MaglevVipArgs {
  /** The IPv4 or IPv6 address clients send to. The network must route it to the load balancer host. */
  address: pulumi.Input<string>;
  /** Destination port, 1-65535. */
  port: pulumi.Input<number>;
  /** "tcp" or "udp". */
  protocol: pulumi.Input<"tcp" | "udp">;
}

export interface MaglevBackendArgs {
  /**
   * The backend's own IPv4/IPv6 address. In dsr and nat a backend serves the
   * VIPs of its address family; in ipip every VIP.
   */
  address: pulumi.Input<string>;
  /**
   * nat only: the port the backend listens on (the VIP's port is rewritten to
   * it). Default: the VIP's port. dsr and ipip keep the VIP's port and refuse one.
   */
  port?: pulumi.Input<number>;
  /** Share of new flows relative to the other backends (weighted Maglev), 1-65535. Default 1. */
  weight?: pulumi.Input<number>;
  /**
   * The next hop's MAC, to skip resolving it. Default: resolved on the load
   * balancer host from its neighbour table (`ip route get`, `ip neigh`, after a
   * ping when needed); an unresolvable backend fails the update with the reason.
   */
  mac?: pulumi.Input<string>;
}

export interface MaglevServiceArgs {
  /** The load balancer host. Changing it replaces the service. */
  host: pulumi.Input<HostArgs>;
  /**
   * The interface VIP traffic arrives on, e.g. "eth0"; an XDP program is
   * attached there, and bpfleet refuses an interface that already carries
   * another XDP program. Changing it replaces the service.
   */
  interface: pulumi.Input<string>;
  /**
   * The services, "address:port/protocol" strings or objects, IPv4 and IPv6, at
   * most 256. Order and duplicates do not matter. Only TCP/UDP packets to a VIP
   * are balanced; everything else passes untouched.
   */
  vips: pulumi.Input<pulumi.Input<string | MaglevVipArgs>[]>;
  /**
   * The backends, at most 4095 (an address string is a backend with defaults).
   * The same address and port twice is an error. Adding or removing one
   * rewrites only the table slots that change (about M/N), in one batch whose
   * every step balances: a new backend's record is written before any slot
   * names it, a removed one's cleared only after no slot does.
   */
  backends: pulumi.Input<pulumi.Input<string | MaglevBackendArgs>[]>;
  /**
   * "dsr" (default): only the destination MAC is rewritten; backends hold the
   * VIP on a loopback with arp_ignore=1/arp_announce=2 (IPv6: on lo, where it
   * is not announced) and answer clients directly. Backends must be on the
   * interface's network segment.
   *
   * "nat": destination address and port are rewritten (checksums updated);
   * backends must route replies back through the load balancer (e.g. default
   * route via it), where they are translated back to the VIP. Needs IP
   * forwarding on the interface; as the load balancer sends replies out of
   * the interface they came in on, turn its ICMP redirects off
   * (net.ipv4.conf.<if>.send_redirects=0) or have backends ignore them, or a
   * backend may learn to answer clients directly, untranslated.
   *
   * "ipip": packets are encapsulated (IPv4/IPv6-in-IPv4/IPv6) to backends
   * anywhere, which decapsulate and answer directly. Needs IP forwarding.
   *
   * Changes in place (every VIP and table is rewritten in one batch).
   */
  mode?: pulumi.Input<"dsr" | "nat" | "ipip">;
  /**
   * M, the slots per Maglev table: a prime of at least 100 × the backends of a
   * table, at most 1,048,589 (524,287 when dsr/nat has IPv6 VIPs, which get a
   * table of their own). Default 65537. Changing it moves most flows.
   */
  tableSize?: pulumi.Input<number>;
  /**
   * Pin each flow to its backend in an LRU connection table (262,144 flows,
   * ~30 MiB preallocated, as Katran does), so established flows keep their
   * backend through backend additions and removals; only flows of a removed
   * backend move. New connections (TCP SYN) always follow the table.
   * false: every packet follows the table. Default true.
   */
  connectionTable?: pulumi.Input<boolean>;
  /** XDP attach mode: "native" (driver), "generic" (skb) or "auto". Default "auto". Changing it replaces the service. */
  xdpMode?: pulumi.Input<"native" | "generic" | "auto">;
  /**
   * Share the interface with other bpfleet XDP programs, e.g. an XdpFirewall
   * (chainPriority 0) in front of this service (chainPriority 1): each gets a slot of
   * the interface's XDP chain, 0-7, and lower runs first. bpfleet's dispatcher sits on
   * the hook and runs the members in order; a packet one member passes goes on to the
   * next, any other verdict ends the chain. The first member to arrive attaches the
   * dispatcher, the last to leave removes it. Unset (default): attach alone, and refuse
   * an interface another program uses. Setting it on a program attached alone moves it
   * into the chain in place (no moment without it); two members may not share a slot.
   */
  chainPriority?: pulumi.Input<number>;
  /**
   * Before attaching or swapping the program on the interface that carries the
   * management SSH session, arm a revert timer on the host, prove a fresh SSH
   * login works afterwards, then disarm; otherwise the host undoes the change by
   * itself and the update fails. Default true.
   */
  lockoutGuard?: pulumi.Input<boolean>;
  /** Seconds after which an undisarmed revert timer undoes the change, 5-3600. Default 30. */
  lockoutRevertSeconds?: pulumi.Input<number>;
  /** Pin directory name under /sys/fs/bpf/bpfleet/maglev/. Default: the resource name. */
  pinName?: pulumi.Input<string>;
}

const provider = kindProvider("maglev");

export interface MaglevCounter {
  packets: number;
  bytes: number;
}

/**
 * An XDP layer-4 load balancer with Maglev consistent hashing on one interface
 * of one host (DSR, NAT or IP-in-IP; IPv4 and IPv6; TCP and UDP). The Maglev
 * table is computed by the provider, so every host given the same backends
 * builds the same table. `pulumi refresh` reads VIPs, backends, the tables'
 * digest and counters back from the host. Adopting an existing load balancer
 * with `pulumi import` is not supported (dynamic providers cannot import).
 */
export class MaglevService extends pulumi.dynamic.Resource {
  /** The VIPs on the host, keyed "address:port/protocol". */
  declare public readonly vips: pulumi.Output<Record<string, { address: string; port: number; protocol: "tcp" | "udp" }>>;
  /** The backends on the host, keyed by address (nat: "address:port"). */
  declare public readonly backends: pulumi.Output<Record<string, { address: string; port?: number; weight: number; mac?: string }>>;
  declare public readonly mode: pulumi.Output<"dsr" | "nat" | "ipip">;
  declare public readonly tableSize: pulumi.Output<number>;
  /** Kernel program id and tag of the load balancer. */
  declare public readonly programId: pulumi.Output<number>;
  declare public readonly programTag: pulumi.Output<string>;
  /** sha256 of the BPF object that is loaded. */
  declare public readonly objectSha256: pulumi.Output<string>;
  /** "driver", "generic", or "detached". */
  declare public readonly attachMode: pulumi.Output<string>;
  /** Each backend's index in lb_backends. */
  declare public readonly backendIndexes: pulumi.Output<Record<string, number>>;
  /** The next-hop MAC each backend record carries ("" where the program uses the FIB alone). */
  declare public readonly backendMacs: pulumi.Output<Record<string, string>>;
  /** sha256 of every Maglev table as on the host: equal digests, equal tables. */
  declare public readonly tableDigest: pulumi.Output<string>;
  /** Packets and bytes per VIP, per backend, and the program's totals by outcome, as of the last create/update/refresh. */
  declare public readonly counters: pulumi.Output<{
    vips: Record<string, MaglevCounter>;
    backends: Record<string, MaglevCounter>;
    totals: Record<string, MaglevCounter>;
  }>;

  constructor(name: string, args: MaglevServiceArgs, opts?: pulumi.CustomResourceOptions) {
    const { host, credentials } = splitHost(args.host);
    super(
      provider,
      name,
      {
        host,
        credentials,
        interface: args.interface,
        name: args.pinName ?? name,
        vips: args.vips,
        backends: args.backends,
        mode: args.mode,
        tableSize: args.tableSize,
        connectionTable: args.connectionTable,
        xdpMode: args.xdpMode,
        chainPriority: args.chainPriority,
        lockoutGuard: args.lockoutGuard,
        lockoutRevertSeconds: args.lockoutRevertSeconds,
        programId: undefined,
        programTag: undefined,
        objectSha256: undefined,
        attachMode: undefined,
        backendIndexes: undefined,
        nextBackendIndex: undefined,
        vipIndexes: undefined,
        backendMacs: undefined,
        tableDigest: undefined,
        reverseNat: undefined,
        counters: undefined,
      },
      { ...opts, additionalSecretOutputs: [...(opts?.additionalSecretOutputs ?? []), "credentials"] },
      "bpfleet",
      "MaglevService",
    );
  }
}
