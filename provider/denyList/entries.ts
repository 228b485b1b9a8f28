/**
 * A deny list's canonical entries and digest, computed where the list is declared
 * (the SDK, in the user's program) as well as by the provider: the digest each
 * firewall carries is then known at preview time, so a preview names exactly the
 * firewalls whose list changes. Pure; no module here reaches a host.
 */
import { contentDigest, contentText } from "../sharedContent";
import { cidrSet } from "../validation";
import { checkMapCapacity, MAX_DENY_ENTRIES } from "../xdpFirewall/capacity";

export const denyEntries = cidrSet("deny", MAX_DENY_ENTRIES).superRefine(checkMapCapacity);

export interface CanonicalDenyList {
  entries: Record<string, "deny">;
  /** The entries sorted, one per line: what the list's state holds (sharedContent.contentText). */
  text: string;
  digest: string;
  count: number;
}

/**
 * The canonical form of a list as written, or undefined when an entry is invalid
 * (the DenyList's `check` then reports it, naming the entry).
 */
export function canonicalDenyList(list: readonly string[] | Record<string, string>): CanonicalDenyList | undefined {
  const parsed = denyEntries.safeParse(list);
  if (!parsed.success) return undefined;
  const keys = Object.keys(parsed.data);
  return { entries: parsed.data as Record<string, "deny">, text: contentText(keys), digest: contentDigest(keys), count: keys.length };
}
