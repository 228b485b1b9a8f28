import type * as pulumi from "@pulumi/pulumi";
import { canonicalRuleSet } from "../provider/tcRuleSet/schema";
import { SharedList } from "./sharedList";
import type { TcPolicyRuleArgs } from "./tcPolicy";

export interface TcRuleSetArgs {
  /**
   * TcPolicy rules, as texts ("allow tcp 22", "deny udp 5000-6000 from 10.0.0.0/8") or
   * objects, any order, duplicates allowed, at most 1,024. Held once in the stack's
   * state, canonical and sorted, one rule per line: `pulumi preview --diff` shows each
   * added or removed rule once, and the policies that apply the set show only its digest
   * and count changing.
   */
  rules: pulumi.Input<pulumi.Input<string | TcPolicyRuleArgs>[]>;
}

/**
 * TcPolicy rules shared by many policies, held once (issue 10): bind it to a hook of each
 * TcPolicy as `ingress: { ruleSet }` or `egress: { ruleSet }`. It touches no host; each
 * policy's state carries the set's digest and count, and each host records the rules it
 * applied, against which `refresh` reports drift.
 */
export class TcRuleSet extends SharedList<Record<string, "allow" | "deny">> {
  /** The canonical rules (canonical text → action), computed in the program; not stored again in state. */
  public readonly rules: pulumi.Output<Record<string, "allow" | "deny">>;

  constructor(name: string, args: TcRuleSetArgs, opts?: pulumi.CustomResourceOptions) {
    super("tcRuleSet", "TcRuleSet", "rules", name, args.rules, (list) => {
      const c = canonicalRuleSet(list);
      return c && { items: c.rules, text: c.text, digest: c.digest, count: c.count };
    }, opts);
    this.rules = this.canonicalItems.apply((rules) => rules ?? {});
  }
}
