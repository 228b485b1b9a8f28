import * as pulumi from "@pulumi/pulumi";
import { KindResource } from "./kindResource";
import type { z } from "zod";
import type { xdpFirewallSchema } from "../provider/xdpFirewall/schema";
import { splitHost, type HostInput } from "./host";
import type { SdkInputs } from "./inputs";
import type { ExpectationObject } from "../provider/expect/grammar";
import type { ExpectationResult } from "./expect";
import { DenyList, type DenyListRef } from "./denyList";

/**
 * Inputs of XdpFirewall: the schema's (provider/xdpFirewall/schema.ts, where each is
 * documented), with `host` carrying its credentials and `deny` given as a list.
 */
export type XdpFirewallArgs = SdkInputs<Omit<z.input<typeof xdpFirewallSchema>, "credentials" | "name" | "denyList" | "denyDrift">, { host: HostInput; deny: string[]; expect: (string | ExpectationObject)[] }> & {
  /**
   * A DenyList to apply instead of `deny`, for a list many firewalls share: its entries
   * are held once in the stack's state (a preview shows a changed entry once, under the
   * list), and this firewall's state carries the list's name, digest and count. Then
   * `deny` must be left out.
   */
  denyList?: DenyList;
  /** Pin directory name under /sys/fs/bpf/bpfleet/xdp-firewall/ (letters, digits, `_`, `-`: bpffs refuses `.`). Default: the resource name. */
  pinName?: pulumi.Input<string>;
};

/** An XDP program that drops packets from denied source addresses on one interface of one host. */
export class XdpFirewall extends KindResource {
  /** The deny entries really present in the host's maps (canonical CIDR → "deny"). */
  declare public readonly deny: pulumi.Output<Record<string, "deny">>;
  /** Set by refresh: entries the host's maps hold beyond its applied list ("stray") or lack ("missing"). */
  declare public readonly denyDrift: pulumi.Output<Record<string, "stray" | "missing"> | undefined>;
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

  /** The canonical expectation texts (keys of `expect`, "<text>": "<outcome>"). */
  declare public readonly expect: pulumi.Output<Record<string, string>>;
  /** Each expectation's last result on the host, by canonical text: what it wanted, what it got, whether it was met. */
  declare public readonly expectResults: pulumi.Output<Record<string, ExpectationResult>>;
  /** The list this firewall applied, as of the last create/update/refresh: its name, digest and count. */
  declare public readonly denyList: pulumi.Output<DenyListRef | undefined>;
  /** The DenyList resource this firewall applies (its `denyList` input). */
  public readonly sharedDenyList: DenyList | undefined;

  constructor(name: string, args: XdpFirewallArgs, opts?: pulumi.CustomResourceOptions) {
    const { host, credentials } = splitHost(args.host);
    const list = args.denyList;
    super(
      "xdpFirewall",
      "XdpFirewall",
      name,
      {
        host,
        credentials,
        interface: args.interface,
        name: args.pinName ?? name,
        deny: list ? [] : (args.deny ?? []),
        denyList: list?.ref,
        mode: args.mode,
        attached: args.attached,
        chainPriority: args.chainPriority,
        lockoutGuard: args.lockoutGuard,
        lockoutRevertSeconds: args.lockoutRevertSeconds,
        allowManagementDeny: args.allowManagementDeny,
        bootRestore: args.bootRestore,
        expect: args.expect,
        programId: undefined,
        programTag: undefined,
        objectSha256: undefined,
        attachMode: undefined,
        counters: undefined,
        expectResults: undefined,
        denyDrift: undefined,
      },
      { ...opts, additionalSecretOutputs: [...(opts?.additionalSecretOutputs ?? []), "credentials"] },
    );
    this.sharedDenyList = list;
    // The list's entries, computed in the program (the firewall's state no longer holds
    // them), resolved only once this firewall's own step succeeded: a failed update
    // leaves a stack output built from it as it was, as before. Built when first read:
    // every Output holding the entries walks them all (the SDK's unknown and resource
    // checks), 0.15 s per firewall at 100k entries, and a fleet of 100 firewalls that
    // never reads `deny` must not pay it 100 times.
    if (list) {
      let deny: pulumi.Output<Record<string, "deny">> | undefined;
      Object.defineProperty(this, "deny", {
        get: () => (deny ??= pulumi.all([list.entries, this.denyList]).apply(([entries]) => entries)),
        enumerable: true,
        configurable: true,
      });
    }
  }
}
