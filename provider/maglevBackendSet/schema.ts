/**
 * MaglevBackendSet: MaglevService backends shared by many balancers, held once (issue
 * 10). Its state holds the canonical backends as one text, sorted, one backend a line
 * ("10.0.0.2", "10.0.0.3 weight 2", "[2001:db8::2]:8080 mac 02:00:00:00:00:0a";
 * maglev/backendLines.ts), so `pulumi preview --diff` shows each added, removed or
 * changed backend once; each MaglevService that binds it carries only its name, digest
 * and count. A list kind (provider/sharedList.ts), like TcRuleSet.
 */
import type * as pulumi from "@pulumi/pulumi";
import { z } from "zod";
import { backendLines, backendsOfLines } from "../maglev/backendLines";
import type { Backend } from "../maglev/schema";
import { canonicalList, checkSharedList, sharedTextProperty, type CanonicalList, type SharedListKind } from "../sharedList";

export const maglevBackendSetSchema = z.object({
  /**
   * Backends as objects ({ address, port?, weight?, mac? }, the fields of MaglevService's
   * `backends`), addresses, or lines ("10.0.0.3 weight 2"), any order, at most 4095; the
   * same address and port twice is an error. What a mode allows of them (a port only in
   * nat, families meeting the VIPs', the table size) is judged by each service that binds
   * the set. Held in state as one text, the canonical lines sorted (a host's applied copy
   * holds the same lines); accepted as that text (what the SDK sends), as a list as
   * written (a bad backend is named by its index, `backends[3].weight: …`), or keyed by line.
   */
  backends: sharedTextProperty(backendLines),
});

export const maglevBackendSetKind: SharedListKind = { property: "backends", idPrefix: "maglev-backend-set", schema: maglevBackendSetSchema };

export function checkMaglevBackendSet(olds: unknown, news: Record<string, unknown>): pulumi.dynamic.CheckResult {
  return checkSharedList(maglevBackendSetKind, olds, news);
}

/** The canonical form of backends as written (in the program, for the digest a service carries; `items` keyed as a service keys its backends), or undefined when one is invalid. */
export function canonicalBackendSet(written: readonly unknown[]): CanonicalList<Backend> | undefined {
  const c = canonicalList(backendLines, written);
  return c && { ...c, items: backendsOfLines(Object.keys(c.items)) };
}
