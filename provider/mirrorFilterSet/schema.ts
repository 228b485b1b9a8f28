/**
 * MirrorFilterSet: TrafficMirror filters shared by many mirrors, held once (issue 10).
 * Its state holds the canonical filters as one text, sorted, one filter a line, each as
 * the tcpdump-like expression a mirror keys it by ("tcp and dst port 80"), so
 * `pulumi preview --diff` shows each added or removed filter once; each TrafficMirror
 * that binds it carries only its digest and count. A list kind (provider/sharedList.ts),
 * like DenyList and TcRuleSet.
 */
import type * as pulumi from "@pulumi/pulumi";
import { z } from "zod";
import { canonicalList, checkSharedList, sharedTextProperty, type CanonicalList, type SharedListKind } from "../sharedList";
import { filterSetFilters, type MirrorFilter } from "../trafficMirror/schema";

export const mirrorFilterSetSchema = z.object({
  /**
   * TrafficMirror filters, as objects (`{ protocol: "tcp", destinationPort: 80 }`) or as
   * their text ("tcp and dst port 80"), any order, duplicates allowed, at most 64
   * distinct. Held in state as one text, the filters' canonical texts sorted, one per
   * line (a host's applied copy holds the same lines); accepted as that text (what the
   * SDK sends), as a list as written (a bad filter is named by its index,
   * `filters[3].destinationPort: …`), or keyed by text as a mirror's state keeps them.
   */
  filters: sharedTextProperty(filterSetFilters),
});

export const mirrorFilterSetKind: SharedListKind = { property: "filters", idPrefix: "mirror-filter-set", schema: mirrorFilterSetSchema };

export function checkMirrorFilterSet(olds: unknown, news: Record<string, unknown>): pulumi.dynamic.CheckResult {
  return checkSharedList(mirrorFilterSetKind, olds, news);
}

/** The canonical form of filters as written (in the program, for the digest a mirror carries), or undefined when a filter is invalid. */
export function canonicalFilterSet(written: readonly unknown[]): CanonicalList<MirrorFilter> | undefined {
  return canonicalList(filterSetFilters, written);
}
