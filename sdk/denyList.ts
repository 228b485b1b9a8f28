import type * as pulumi from "@pulumi/pulumi";
import { canonicalDenyList } from "../provider/denyList/entries";
import { SharedList, type SharedListRef } from "./sharedList";

export { INVALID_DIGEST } from "./sharedList";

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
export type DenyListRef = SharedListRef;

/**
 * Deny entries shared by many firewalls, held once (issue 10): give it to each
 * XdpFirewall as `denyList`. It touches no host; each firewall's state carries the
 * list's digest and count, and each host records the list it applied.
 */
export class DenyList extends SharedList<Record<string, "deny">> {
  /**
   * The canonical entries (canonical CIDR → "deny"), computed in the program from
   * `entries`; not stored again in state. Export it only if you want the whole list
   * in the stack's outputs.
   */
  public readonly entries: pulumi.Output<Record<string, "deny">>;

  constructor(name: string, args: DenyListArgs, opts?: pulumi.CustomResourceOptions) {
    super("denyList", "DenyList", "entries", name, args.entries, (list) => {
      const c = canonicalDenyList(list as string[]);
      return c && { items: c.entries, text: c.text, digest: c.digest, count: c.count };
    }, opts);
    this.entries = this.canonicalItems.apply((entries) => entries ?? {});
  }
}
