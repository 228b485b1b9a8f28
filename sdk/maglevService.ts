import * as pulumi from "@pulumi/pulumi";
import { KindResource } from "./kindResource";
import type { z } from "zod";
import type { backendObject, maglevServiceSchema, vipObject } from "../provider/maglev/schema";
import { splitHost, type HostInput } from "./host";
import type { DeepInput, SdkInputs } from "./inputs";
import type { ExpectationObject } from "../provider/expect/grammar";
import type { ExpectationResult } from "./expect";
import type { MaglevBackendSet } from "./maglevBackendSet";
import type { SharedListRef } from "./sharedList";

/** A service address as an object; the string form "198.51.100.10:80/tcp" ("[2001:db8::10]:80/tcp" for IPv6) is the same. */
export type MaglevVipArgs = DeepInput<z.input<typeof vipObject>>;

/** A backend as an object; an address string is a backend with the defaults. */
export type MaglevBackendArgs = DeepInput<z.input<typeof backendObject>>;

/**
 * Inputs of MaglevService: the schema's (provider/maglev/schema.ts, where each is
 * documented), with `host` carrying its credentials and VIPs and backends as lists.
 */
export type MaglevServiceArgs = SdkInputs<
  Omit<z.input<typeof maglevServiceSchema>, "credentials" | "name" | "backends" | "backendSet" | "backendDrift">,
  { host: HostInput; vips: (string | z.input<typeof vipObject>)[]; expect: (string | ExpectationObject)[] }
> & {
  /**
   * The backends every VIP of their family balances over (all VIPs in ipip), at most 4095
   * (an address string is a backend with defaults). The same address and port twice is an
   * error. Adding or removing one rewrites only the table slots that change (about M/N),
   * in one batch whose every step balances: a new backend's record is written before any
   * slot names it, a removed one's cleared only after no slot does. Give `backends` or
   * `backendSet`, not both.
   */
  backends?: pulumi.Input<pulumi.Input<string | MaglevBackendArgs>[]>;
  /**
   * A MaglevBackendSet whose backends this service balances over instead of `backends`:
   * held once in the stack's state however many services bind it; this service's state
   * carries its name, digest and count. Give `backends` or `backendSet`, not both.
   */
  backendSet?: MaglevBackendSet;
  /** Pin directory name under /sys/fs/bpf/bpfleet/maglev/ (letters, digits, `_`, `-`). Default: the resource name. */
  pinName?: pulumi.Input<string>;
};

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
export class MaglevService extends KindResource {
  /** The VIPs on the host, keyed "address:port/protocol". */
  declare public readonly vips: pulumi.Output<Record<string, { address: string; port: number; protocol: "tcp" | "udp" }>>;
  /** The backends on the host, keyed by address (nat: "address:port"); empty for a service bound to a MaglevBackendSet. */
  declare public readonly backends: pulumi.Output<Record<string, { address: string; port?: number; weight: number; mac?: string }>>;
  /** The MaglevBackendSet this service applies (name, digest, count), as the host recorded it at the last refresh. */
  declare public readonly backendSet: pulumi.Output<SharedListRef | undefined>;
  /** Set by `pulumi refresh` for a service bound to a MaglevBackendSet: backends the host holds beyond the set it recorded as applied ("stray") or lacks ("missing"). */
  declare public readonly backendDrift: pulumi.Output<Record<string, "stray" | "missing"> | undefined>;
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
  /** The next-hop MAC each backend record carries ("" where the program uses the FIB alone); empty for a service bound to a MaglevBackendSet (refresh reports a changed next hop in nextHopDrift). */
  declare public readonly backendMacs: pulumi.Output<Record<string, string>>;
  /** sha256 of every Maglev table as on the host: equal digests, equal tables. */
  declare public readonly tableDigest: pulumi.Output<string>;
  /** Packets and bytes per VIP, per backend (bound to a MaglevBackendSet: only backends that got any), and the program's totals by outcome, as of the last create/update/refresh. */
  declare public readonly counters: pulumi.Output<{
    vips: Record<string, MaglevCounter>;
    backends: Record<string, MaglevCounter>;
    totals: Record<string, MaglevCounter>;
  }>;

  /** The canonical expectation texts (keys of `expect`, "<text>": "<outcome>"). */
  declare public readonly expect: pulumi.Output<Record<string, string>>;
  /** Each expectation's last result on the host, by canonical text: what it wanted, what it got, whether it was met. */
  declare public readonly expectResults: pulumi.Output<Record<string, ExpectationResult>>;

  constructor(name: string, args: MaglevServiceArgs, opts?: pulumi.CustomResourceOptions) {
    const { host, credentials } = splitHost(args.host);
    super(
      "maglev",
      "MaglevService",
      name,
      {
        host,
        credentials,
        interface: args.interface,
        name: args.pinName ?? name,
        vips: args.vips,
        backends: args.backends,
        backendSet: args.backendSet?.ref,
        backendDrift: undefined,
        mode: args.mode,
        tableSize: args.tableSize,
        connectionTable: args.connectionTable,
        xdpMode: args.xdpMode,
        chainPriority: args.chainPriority,
        lockoutGuard: args.lockoutGuard,
        lockoutRevertSeconds: args.lockoutRevertSeconds,
        expect: args.expect,
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
        expectResults: undefined,
      },
      { ...opts, additionalSecretOutputs: [...(opts?.additionalSecretOutputs ?? []), "credentials"] },
    );
  }
}
