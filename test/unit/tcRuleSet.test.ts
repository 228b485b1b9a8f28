// TcRuleSet (issue 10): TcPolicy rules held once per fleet. The set's canonical text and
// digest, its check (bad rules named by index before anything touches a host, both
// versions registered), and a TcPolicy hook bound to it: judged with the set's rules,
// its state carrying only the set's ref, and refresh's drift.
import { createHash } from "node:crypto";
import { beforeEach, describe, expect, it } from "vitest";
import { diffInputs } from "../../provider/dynamicAdapter";
import { packagedObject } from "../../provider/objects";
import { clearRegisteredContent, contentDigest, registeredContent } from "../../provider/sharedContent";
import { tcPolicyKind } from "../../provider/tcPolicy/lifecycle";
import { appliedLines, appliedRulesOf, boundAsRead, withRuleSets } from "../../provider/tcPolicy/ruleSets";
import { checkTcPolicy, MAX_RULES, type TcPolicyInputs } from "../../provider/tcPolicy/schema";
import { provider as ruleSetProvider } from "../../provider/tcRuleSet/dynamic";
import { canonicalRuleSet, checkTcRuleSet } from "../../provider/tcRuleSet/schema";
import { failureAt } from "../support/checkFailure";

const written = ["allow tcp 22", { action: "allow", protocol: "tcp", port: 443 }, "  DENY udp 5000-6000 from 10.1.2.3/8 ", "allow tcp 22", "allow icmp"];
const canonicalText = "allow icmp\nallow tcp 22\nallow tcp 443\ndeny udp 5000-6000 from 10.0.0.0/8\n";

const host = { address: "10.200.1.2", hostKey: "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB" };
const policy = (ingress: Record<string, unknown>, egress: Record<string, unknown> = {}) => ({
  host,
  credentials: { privateKey: "-----BEGIN OPENSSH PRIVATE KEY-----" },
  interface: "eth0",
  name: "edge",
  stateful: true,
  ingress,
  egress,
});

/** The set's check as the engine runs it first; returns the ref a policy carries. */
function ruleSet(rules: unknown[], olds?: string) {
  const result = checkTcRuleSet(olds === undefined ? undefined : { rules: olds }, { rules });
  if (!result.inputs) throw new Error(JSON.stringify(result.failures));
  const c = canonicalRuleSet(rules)!;
  return { name: "edge-rules", digest: c.digest, count: c.count };
}

beforeEach(() => clearRegisteredContent());

describe("TcRuleSet's canonical form", () => {
  it("is the canonical rules sorted, one a line, whatever the order, form and duplicates; the digest is the text's sha256", () => {
    const c = canonicalRuleSet(written)!;
    expect(c.text).toBe(canonicalText);
    expect(c.count).toBe(4);
    expect(c.digest).toBe(createHash("sha256").update(canonicalText).digest("hex"));
    expect(c.rules).toEqual({ "allow icmp": "allow", "allow tcp 22": "allow", "allow tcp 443": "allow", "deny udp 5000-6000 from 10.0.0.0/8": "deny" });
    expect(canonicalRuleSet([...written].reverse())!.digest).toBe(c.digest);
    expect(canonicalRuleSet(["allow tcp 22", "allow tcp 99999"])).toBeUndefined();
  });

  it("the set's check holds the text in state and accepts it back, and the record an earlier form kept", () => {
    const news = { rules: written };
    expect(checkTcRuleSet(undefined, news).inputs).toEqual({ rules: canonicalText });
    expect(checkTcRuleSet(undefined, { rules: canonicalText }).inputs).toEqual({ rules: canonicalText });
    expect(checkTcRuleSet(undefined, { rules: canonicalRuleSet(written)!.rules }).inputs).toEqual({ rules: canonicalText });
  });
});

describe("TcRuleSet's check", () => {
  it("names a bad rule by its index, with the reason, before anything touches a host", () => {
    const news = { rules: ["allow tcp 22", "allow tcp 99999", "deny icmp 22", "allow tcp 22 from 10.0.0.0/8 to 2001:db8::/32"] };
    const result = checkTcRuleSet(undefined, news);
    expect(result.inputs).toBeUndefined();
    expect(failureAt(result, "rules[1]", news).reason).toBe("rules[1]: port 99999 is out of range (1-65535)");
    expect(failureAt(result, "rules[2]", news).reason).toContain("icmp has no ports");
    expect(failureAt(result, "rules[3]", news).reason).toContain("different address families");
    expect(registeredContent(canonicalRuleSet(["allow tcp 22"])!.digest)).toBeUndefined();
  });

  it(`refuses more than ${MAX_RULES} rules`, () => {
    const rules = Array.from({ length: MAX_RULES + 1 }, (_, i) => `allow tcp ${i + 1}`);
    const result = checkTcRuleSet(undefined, { rules });
    expect(result.failures?.[0]?.reason).toContain(`has ${MAX_RULES + 1} rules`);
  });

  it("registers the new version and the old one by digest, for the policies of the deployment", () => {
    const old = canonicalRuleSet(["allow tcp 22"])!;
    const ref = ruleSet(written, old.text);
    expect(registeredContent(ref.digest)).toEqual(canonicalText.trimEnd().split("\n"));
    expect(registeredContent(old.digest)).toEqual(["allow tcp 22"]);
  });

  it("its provider ids the set by digest and reports a change only when the digest changes", async () => {
    const text = canonicalRuleSet(written)!.text;
    const created = await ruleSetProvider.create({ rules: text });
    expect(created.id).toBe(`tc-rule-set/${contentDigest(text.trimEnd().split("\n")).slice(0, 16)}`);
    // The rules are held once, in the inputs: outputs only identify them, and a read gives
    // no inputs back, so the engine keeps the ones it has.
    expect(created.outs).toEqual({ digest: canonicalRuleSet(written)!.digest, count: 4 });
    expect((await ruleSetProvider.diff(created.id, created.outs, { rules: text })).changes).toBe(false);
    expect((await ruleSetProvider.diff(created.id, created.outs, { rules: "allow tcp 22\n" })).changes).toBe(true);
    expect(await ruleSetProvider.read(created.id, created.outs)).toEqual({ id: created.id, props: created.outs });
  });
});

describe("a TcPolicy hook bound to a TcRuleSet", () => {
  it("keeps the set's ref in its inputs, not the rules", () => {
    const ref = ruleSet(written);
    const result = checkTcPolicy(policy({ default: "deny", ruleSet: ref }));
    expect(result.failures).toBeUndefined();
    expect((result.inputs as TcPolicyInputs).ingress).toEqual({ default: "deny", rules: {}, ruleSet: ref });
  });

  it("refuses rules and a rule set on the same hook", () => {
    const ref = ruleSet(written);
    const result = checkTcPolicy(policy({ default: "deny", rules: ["allow tcp 80"], ruleSet: ref }));
    expect(result.failures).toEqual([{ property: "ingress", reason: "ingress: give the rules either as `rules` or as a `ruleSet`, not both" }]);
  });

  it("is judged with the set's rules: a set that cuts the management path is refused at check", () => {
    const ref = ruleSet(["allow tcp 443"]);
    const result = checkTcPolicy(policy({ default: "deny", ruleSet: ref }));
    expect(result.failures?.[0]?.reason).toContain("ingress: the policy does not allow inbound TCP to port 22");
  });

  it("with a set this deployment does not hold, check lets it through for the host to judge", () => {
    const ref = { name: "elsewhere", digest: "a".repeat(64), count: 3 };
    expect(checkTcPolicy(policy({ default: "deny", ruleSet: ref })).failures).toBeUndefined();
  });

  it("a changed set version changes the policy; the same one does not; drift found by refresh does", () => {
    const a = ruleSet(written);
    const b = ruleSet([...written, "allow udp 53"]);
    const inputsOf = (ref: typeof a) => checkTcPolicy(policy({ default: "deny", ruleSet: ref })).inputs as TcPolicyInputs;
    const olds = { ...inputsOf(a), objectSha256: packagedObject("tc_policy").sha256 } as never;
    expect(diffInputs(tcPolicyKind, olds, inputsOf(a)).changes).toBe(false);
    expect(diffInputs(tcPolicyKind, olds, inputsOf(b))).toEqual({ changes: true, replaces: [], deleteBeforeReplace: false });
    const drifted = { ...inputsOf(a), ingress: { ...inputsOf(a).ingress, drift: { "allow tcp 23": "stray" } }, objectSha256: packagedObject("tc_policy").sha256 } as never;
    expect(diffInputs(tcPolicyKind, drifted, inputsOf(a)).changes).toBe(true);
  });

  it("gets its rules filled in from the registered version, and the host records them by direction", () => {
    const ref = ruleSet(written);
    const inputs = checkTcPolicy(policy({ default: "deny", ruleSet: ref }, { rules: ["allow udp 53"] })).inputs as TcPolicyInputs;
    const resolved = withRuleSets(inputs)!;
    expect(resolved.ingress.rules).toEqual(canonicalRuleSet(written)!.rules);
    expect(resolved.egress).toEqual(inputs.egress);
    // Only the bound hook is recorded; the inline one is in the policy's own state.
    const lines = appliedLines(resolved);
    expect(lines).toEqual(canonicalText.trimEnd().split("\n").map((r) => `ingress ${r}`));
    expect(appliedRulesOf(lines, "ingress")).toEqual(canonicalText.trimEnd().split("\n"));
    expect(appliedRulesOf(lines, "egress")).toEqual([]);
    clearRegisteredContent();
    expect(withRuleSets(inputs)).toBeUndefined();
  });

  it("reads back as the recorded version with only the stray and missing rules as drift", () => {
    const ref = ruleSet(written);
    const recorded = canonicalText.trimEnd().split("\n");
    const onHost = { default: "deny" as const, rules: { ...canonicalRuleSet(written)!.rules, "allow tcp 23": "allow" as const } };
    delete (onHost.rules as Record<string, string>)["allow icmp"];
    expect(boundAsRead(onHost, ref, recorded)).toEqual({ default: "deny", rules: {}, ruleSet: ref, drift: { "allow icmp": "missing", "allow tcp 23": "stray" } });
    // No drift: no drift key at all (the engine refuses undefined values).
    expect(boundAsRead({ default: "deny", rules: canonicalRuleSet(written)!.rules }, ref, recorded)).toEqual({ default: "deny", rules: {}, ruleSet: ref });
    // A host that holds another version (a failed wave) reports that version's digest and count.
    const older = ["allow tcp 22"];
    expect(boundAsRead({ default: "deny", rules: { "allow tcp 22": "allow" } }, ref, older)).toEqual({ default: "deny", rules: {}, ruleSet: { name: ref.name, digest: contentDigest(older), count: 1 } });
    // Without a record, the maps' own rules stand in for it.
    expect(boundAsRead(onHost, ref, undefined).ruleSet!.digest).toBe(contentDigest(Object.keys(onHost.rules)));
  });
});
