/** Inputs of DenyList: the deny entries a fleet's firewalls share, held once in state. */
import type * as pulumi from "@pulumi/pulumi";
import { z } from "zod";
import { checkInputs } from "../dynamicAdapter";
import { registerContent } from "../sharedContent";
import { denyEntries } from "./entries";

export const denyListSchema = z.object({
  /**
   * Source IPv4/IPv6 addresses and CIDR prefixes to drop, the same rules as
   * XdpFirewall's `deny`: canonical form, keyed by entry, so `pulumi preview --diff`
   * shows each added or removed entry once for the whole fleet. Every XdpFirewall given
   * this list (`denyList`) applies it; their states carry only its digest and count.
   */
  entries: denyEntries.default({}),
});

export type DenyListInputs = z.infer<typeof denyListSchema>;

export interface DenyListOutputs {
  /** sha256 of the sorted canonical entries, one per line (sharedContent.contentDigest). */
  digest: string;
  count: number;
}

/**
 * The schema, then both versions of the list registered by digest (sharedContent.ts):
 * the new one for the firewalls to apply, the old one as what they applied before.
 */
export function checkDenyList(olds: unknown, news: Record<string, unknown>): pulumi.dynamic.CheckResult {
  const result = checkInputs(denyListSchema, news);
  const entries = (result.inputs as Partial<DenyListInputs> | undefined)?.entries;
  if (entries && typeof entries === "object") registerContent(Object.keys(entries));
  const old = (olds as Partial<DenyListInputs> | undefined)?.entries;
  if (old && typeof old === "object" && !Array.isArray(old)) registerContent(Object.keys(old));
  return result;
}
