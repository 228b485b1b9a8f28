import * as pulumi from "@pulumi/pulumi";
import { canonicalDenyList, INVALID_DIGEST } from "../provider/denyList/entries";
import { KindResource } from "./kindResource";

export interface DenyListArgs {
  /**
   * Source IPv4/IPv6 addresses and CIDR prefixes to drop (the rules of XdpFirewall's
   * `deny`). Held once in the stack's state, canonical and sorted, one entry per line:
   * `pulumi preview --diff` shows each added or removed entry once, and the firewalls
   * that apply the list show only its digest and count changing.
   */
  entries: pulumi.Input<pulumi.Input<string>[]>;
}

/** What an XdpFirewall carries of its DenyList: the list's name, digest and count. */
export interface DenyListRef {
  name: string;
  digest: string;
  count: number;
}

/**
 * Deny entries shared by many firewalls, held once (issue 10): give it to each
 * XdpFirewall as `denyList`. It touches no host; each firewall's state carries the
 * list's digest and count, and each host records the list it applied.
 */
export class DenyList extends KindResource {
  /** sha256 of the sorted canonical entries (one per line). */
  declare public readonly digest: pulumi.Output<string>;
  declare public readonly count: pulumi.Output<number>;
  /**
   * The canonical entries (canonical CIDR → "deny"), computed in the program from
   * `entries`; not stored again in state. Export it only if you want the whole list
   * in the stack's outputs.
   */
  public readonly entries: pulumi.Output<Record<string, "deny">>;
  /** What a firewall carries: known at preview time whenever the entries are. */
  public readonly ref: pulumi.Output<DenyListRef>;

  constructor(name: string, args: DenyListArgs, opts?: pulumi.CustomResourceOptions) {
    const written = pulumi.output(args.entries);
    const canonical = written.apply((list) => canonicalDenyList(list as string[]));
    // The list goes to the engine as its canonical text (one string: cheap for the
    // engine at any size), or as written when an entry is bad, so that the list's
    // `check` names that entry by its index.
    const held = pulumi.all([written, canonical]).apply(([list, c]) => c?.text ?? list);
    super("denyList", "DenyList", name, { entries: held, digest: undefined, count: undefined }, opts);
    this.entries = canonical.apply((c) => c?.entries ?? {});
    // Through the list's URN, so a firewall given `ref` depends on the list: the list's
    // step (whose check hands its entries to the firewalls) always runs first.
    this.ref = pulumi.all([canonical, this.urn]).apply(([c]) => ({ name, digest: c?.digest ?? INVALID_DIGEST, count: c?.count ?? 0 }));
  }
}
