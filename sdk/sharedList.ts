import * as pulumi from "@pulumi/pulumi";
import { KindResource } from "./kindResource";

/** What a host resource carries of a list held once (a DenyList, a TcRuleSet): its name, digest and count. */
export interface SharedListRef {
  name: string;
  digest: string;
  count: number;
}

/** A list's canonical form, computed in the program; undefined when an item is invalid. */
export interface CanonicalList<Items> {
  items: Items;
  /** The canonical keys sorted, one per line: what the list's state holds (sharedContent.contentText). */
  text: string;
  digest: string;
  count: number;
}

/** A placeholder digest for a list that does not parse: never a real sha256 hex string. */
export const INVALID_DIGEST = "invalid";

/**
 * Content many host resources share, held once in the stack's state (issue 10): the
 * base of DenyList and TcRuleSet (provider/sharedList.ts is their provider). It touches
 * no host. The list is canonicalised here, in the program, so the digest each host
 * resource carries is known at preview time and a preview names exactly the hosts whose
 * content changes.
 */
export abstract class SharedList<Items> extends KindResource {
  /** sha256 of the sorted canonical keys (one per line). */
  declare public readonly digest: pulumi.Output<string>;
  declare public readonly count: pulumi.Output<number>;
  /** What a host resource carries: known at preview time whenever the list is. */
  public readonly ref: pulumi.Output<SharedListRef>;
  /** The canonical items, computed in the program, not read back from state. */
  protected readonly canonicalItems: pulumi.Output<Items | undefined>;

  protected constructor(
    kind: string,
    type: string,
    property: string,
    name: string,
    written: pulumi.Input<unknown[]>,
    canonicalise: (written: unknown[]) => CanonicalList<Items> | undefined,
    opts?: pulumi.CustomResourceOptions,
  ) {
    const list = pulumi.output(written) as pulumi.Output<unknown[]>;
    const canonical = list.apply((l) => canonicalise(l));
    // The list goes to the engine as its canonical text (one string: cheap for the
    // engine at any size), or as written when an item is bad, so that the list's
    // `check` names that item by its index.
    const held = pulumi.all([list, canonical]).apply(([l, c]) => c?.text ?? l);
    super(kind, type, name, { [property]: held, digest: undefined, count: undefined }, opts);
    this.canonicalItems = canonical.apply((c) => c?.items);
    // Through the list's URN, so a host resource given `ref` depends on the list: the
    // list's step (whose check hands its content to the host resources) always runs first.
    this.ref = pulumi.all([canonical, this.urn]).apply(([c]) => ({ name, digest: c?.digest ?? INVALID_DIGEST, count: c?.count ?? 0 }));
  }
}
