/** Inputs of DenyList: the deny entries a fleet's firewalls share, held once in state. */
import type * as pulumi from "@pulumi/pulumi";
import { z } from "zod";
import { checkSharedList, heldKeys, sharedTextProperty, type SharedListKind, type SharedListOutputs } from "../sharedList";
import { denyEntries } from "./entries";

export const denyListSchema = z.object({
  /**
   * Source IPv4/IPv6 addresses and CIDR prefixes to drop, the same rules as
   * XdpFirewall's `deny`. Every XdpFirewall given this list (`denyList`) applies it;
   * their states carry only its digest and count.
   *
   * Held in state as ONE text, the canonical entries sorted, one per line (the bytes of
   * a host's applied copy), not keyed by entry: the engine marshals, diffs and
   * checkpoints every key of a property at every step, which cost it about 20 s of CPU
   * per `up` for a 100k-entry keyed list and nothing measurable for one string. The
   * CLI shows a changed multi-line string as a line diff, so `pulumi preview --diff`
   * still prints each added or removed entry once (`+ 192.0.2.9/32`), sorted lines
   * leaving no index cascade. Accepted as that text (what the SDK sends), as a list as
   * written (where a bad entry is named by its index), or keyed by entry (how an
   * earlier release kept it in state).
   */
  entries: sharedTextProperty(denyEntries),
});

export type DenyListInputs = z.infer<typeof denyListSchema>;

export type DenyListOutputs = SharedListOutputs;

/** DenyList as a list kind (provider/sharedList.ts). */
export const denyListKind: SharedListKind = { property: "entries", idPrefix: "deny-list", schema: denyListSchema };

/**
 * The schema, then both versions of the list registered by digest (sharedContent.ts):
 * the new one for the firewalls to apply, the old one as what they applied before.
 */
export function checkDenyList(olds: unknown, news: Record<string, unknown>): pulumi.dynamic.CheckResult {
  return checkSharedList(denyListKind, olds, news);
}

/**
 * The entries a list's state holds (old inputs or outputs): its text, or the keyed
 * record an earlier release kept; undefined when there are none.
 */
export function heldEntries(state: unknown): string[] | undefined {
  return heldKeys(state, "entries");
}
