/**
 * TcRuleSet: TcPolicy rules shared by many policies, held once (issue 10). Its state
 * holds the canonical rules as one text, sorted, one rule a line ("allow tcp 22",
 * "deny udp 5000-6000 from 10.0.0.0/8"), so `pulumi preview --diff` shows each added
 * or removed rule once; each TcPolicy that binds it to a hook carries only its digest
 * and count. A list kind (provider/sharedList.ts), like DenyList.
 */
import type * as pulumi from "@pulumi/pulumi";
import { z } from "zod";
import { canonicalList, checkSharedList, sharedTextProperty, type SharedListKind } from "../sharedList";
import { ruleRecord, type Action } from "../tcPolicy/schema";

/**
 * A rule set's rules. A rule's canonical text has no direction (the policy that binds
 * the set to a hook gives it one), so they are read as ingress rules: the checks on a
 * rule's fields are the same for both hooks.
 */
const rules = ruleRecord("ingress");

export const tcRuleSetSchema = z.object({
  /**
   * TcPolicy rules ("allow tcp 22", "deny udp 5000-6000 from 10.0.0.0/8", or objects), any
   * order, duplicates allowed, at most 1,024. Held in state as one text, the canonical
   * rules sorted, one per line (a host's applied copy holds the same lines); accepted as
   * that text (what the SDK sends), as a list as written (a bad rule is named by its
   * index, `rules[3]: …`), or keyed by canonical text.
   */
  rules: sharedTextProperty(rules),
});

export const tcRuleSetKind: SharedListKind = { property: "rules", idPrefix: "tc-rule-set", schema: tcRuleSetSchema };

export function checkTcRuleSet(olds: unknown, news: Record<string, unknown>): pulumi.dynamic.CheckResult {
  return checkSharedList(tcRuleSetKind, olds, news);
}

export interface CanonicalRuleSet {
  rules: Record<string, Action>;
  text: string;
  digest: string;
  count: number;
}

/** The canonical form of rules as written (in the program, for the digest a policy carries), or undefined when a rule is invalid. */
export function canonicalRuleSet(written: readonly unknown[]): CanonicalRuleSet | undefined {
  const c = canonicalList(rules, written);
  return c && { rules: c.items, text: c.text, digest: c.digest, count: c.count };
}
