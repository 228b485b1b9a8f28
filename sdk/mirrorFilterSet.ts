import type * as pulumi from "@pulumi/pulumi";
import { canonicalFilterSet } from "../provider/mirrorFilterSet/schema";
import { SharedList } from "./sharedList";
import type { TrafficMirrorFilter, TrafficMirrorFilterArgs } from "./trafficMirror";

export interface MirrorFilterSetArgs {
  /**
   * TrafficMirror filters, as objects or as their text ("tcp and dst port 80"), any
   * order, duplicates allowed, at most 64 distinct. Held once in the stack's state,
   * canonical and sorted, one filter per line: `pulumi preview --diff` shows each added
   * or removed filter once, and the mirrors that bind the set show only its digest and
   * count changing.
   */
  filters: pulumi.Input<pulumi.Input<string | TrafficMirrorFilterArgs>[]>;
}

/**
 * TrafficMirror filters shared by many mirrors, held once (issue 10): bind it to each
 * TrafficMirror as `filterSet` instead of `filters`. It touches no host; each mirror's
 * state carries the set's digest and count, and each host records the filters it
 * applied, against which `refresh` reports drift.
 */
export class MirrorFilterSet extends SharedList<Record<string, TrafficMirrorFilter>> {
  /** The canonical filters keyed by their text, computed in the program; not stored again in state. */
  public readonly filters: pulumi.Output<Record<string, TrafficMirrorFilter>>;

  constructor(name: string, args: MirrorFilterSetArgs, opts?: pulumi.CustomResourceOptions) {
    super("mirrorFilterSet", "MirrorFilterSet", "filters", name, args.filters, canonicalFilterSet, opts);
    this.filters = this.canonicalItems.apply((filters) => filters ?? {});
  }
}
