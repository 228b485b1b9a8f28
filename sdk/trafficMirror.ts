import * as pulumi from "@pulumi/pulumi";
import { KindResource } from "./kindResource";
import type { z } from "zod";
import type { filterSchema, gretapTunnelSchema, targetSchema, trafficMirrorSchema, vxlanTunnelSchema } from "../provider/trafficMirror/schema";
import { splitHost, type HostInput } from "./host";
import type { DeepInput, SdkInputs } from "./inputs";
import type { MirrorFilterSet } from "./mirrorFilterSet";
import type { SharedListRef } from "./sharedList";

/** Which packets to mirror (documented in provider/trafficMirror/schema.ts). */
export type TrafficMirrorFilterArgs = DeepInput<z.input<typeof filterSchema>>;

/** A filter as check() canonicalises it: ports as numbers, ranges as "from-to", prefixes in network form. */
export type TrafficMirrorFilter = z.output<typeof filterSchema>;

/** A VXLAN tunnel (RFC 7348) to a collector, created and owned by the mirror. */
export type VxlanTunnelArgs = DeepInput<z.input<typeof vxlanTunnelSchema>>;

/** A GRE tunnel carrying Ethernet frames (gretap; ip6gretap for an IPv6 remote), created and owned by the mirror. */
export type GretapTunnelArgs = DeepInput<z.input<typeof gretapTunnelSchema>>;

/** Exactly one of `interface` and `tunnel`. */
export type TrafficMirrorTargetArgs = DeepInput<z.input<typeof targetSchema>>;

/**
 * Inputs of TrafficMirror: the schema's (provider/trafficMirror/schema.ts, where
 * each is documented), with `host` carrying its credentials and `filters` a list.
 */
export type TrafficMirrorArgs = SdkInputs<Omit<z.input<typeof trafficMirrorSchema>, "credentials" | "name" | "filterSet" | "filterDrift">, { host: HostInput; filters: z.input<typeof filterSchema>[] }> & {
  /** Pin directory name under /sys/fs/bpf/bpfleet/traffic-mirror/ (letters, digits, `_`, `-`). Default: the resource name. */
  pinName?: pulumi.Input<string>;
  /**
   * A MirrorFilterSet whose filters this mirror applies instead of `filters`: held once
   * in the stack's state however many mirrors bind it; this mirror's state carries its
   * name, digest and count. Give `filters` or `filterSet`, not both.
   */
  filterSet?: MirrorFilterSet;
};

/**
 * A TC program that sends copies of selected packets of one interface to a
 * local interface or, through a tunnel it owns, to a remote collector. The
 * original packets are never changed, and other TC filters on the interface
 * keep running. No snap length: copies are whole frames (bpf_clone_redirect
 * cannot truncate only the copy); cut them at the collector.
 */
export class TrafficMirror extends KindResource {
  declare public readonly interface: pulumi.Output<string>;
  /** As attached on the host; "none" when no hook runs the program. */
  declare public readonly direction: pulumi.Output<"ingress" | "egress" | "both" | "none">;
  /** The filters really in the program's live set, keyed by their tcpdump-like expression (none for a mirror bound to a MirrorFilterSet). */
  declare public readonly filters: pulumi.Output<Record<string, TrafficMirrorFilter>>;
  /** The MirrorFilterSet the mirror applies (its name, digest and count), as the host recorded it. */
  declare public readonly filterSet: pulumi.Output<SharedListRef | undefined>;
  /** After a refresh that found any: filters of the live set beyond the applied MirrorFilterSet ("stray") or missing from it. */
  declare public readonly filterDrift: pulumi.Output<Record<string, "stray" | "missing"> | undefined>;
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
      "trafficMirror",
      "TrafficMirror",
      name,
      {
        host,
        credentials,
        interface: args.interface,
        name: args.pinName ?? name,
        direction: args.direction,
        filters: args.filters ?? [],
        // Through the set's ref, which depends on its URN: the set's check runs first.
        filterSet: args.filterSet?.ref,
        sampleRate: args.sampleRate,
        target: args.target,
        priority: args.priority,
        lockoutGuard: args.lockoutGuard,
        lockoutRevertSeconds: args.lockoutRevertSeconds,
        filterDrift: undefined,
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
    );
  }
}
