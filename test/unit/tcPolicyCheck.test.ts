import { describe, expect, it } from "vitest";
import { failureAt } from "../support/checkFailure";
import { checkInputs, diffInputs, UNKNOWN } from "../../provider/dynamicAdapter";
import { tcPolicyKind } from "../../provider/tcPolicy/lifecycle";
import { checkTcPolicy, lockoutIssues, MAX_RULES, parseRuleText, policyIssues, ruleText, tcPolicySchema, type TcPolicyInputs } from "../../provider/tcPolicy/schema";

const base = {
  host: { address: "10.200.1.2", hostKey: "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB" },
  credentials: { privateKey: "-----BEGIN OPENSSH PRIVATE KEY-----" },
  interface: "eth0",
  name: "web-policy",
};

const stateful = (rules: string[], over: Record<string, unknown> = {}) => ({ ...base, stateful: true, ingress: { default: "deny", rules }, ...over });

describe("rule text", () => {
  it.each([
    ["allow tcp 22", "allow tcp 22"],
    ["  ALLOW   TCP   22  ", "allow tcp 22"],
    ["allow tcp 22-22", "allow tcp 22"],
    ["deny udp 5000-6000", "deny udp 5000-6000"],
    ["deny tcp 22 from 10.1.2.3/8", "deny tcp 22 from 10.0.0.0/8"],
    ["deny tcp 22 to 10.0.0.5 from 10.0.0.0/8", "deny tcp 22 from 10.0.0.0/8 to 10.0.0.5/32"],
    ["deny icmp from 2001:DB8::/32", "deny icmp from 2001:db8::/32"],
    ["allow any from ::/0", "allow any from ::/0"],
    ["allow udp 1-65535", "allow udp 1-65535"],
  ])("%j is canonically %j", (input, canonical) => {
    expect(ruleText(parseRuleText("ingress", input))).toBe(canonical);
  });

  it("parses the fields", () => {
    expect(parseRuleText("egress", "deny tcp 1000-2000 from 192.0.2.0/24 to 10.0.0.0/8")).toEqual({
      direction: "egress", action: "deny", protocol: "tcp", ports: [1000, 2000], from: "192.0.2.0/24", to: "10.0.0.0/8",
    });
  });
});

describe("TcPolicy check", () => {
  it("canonicalises rules (texts and objects) into a sorted record keyed by the rule", () => {
    const result = checkInputs(tcPolicySchema, {
      ...base,
      ingress: {
        default: "deny",
        rules: ["allow tcp 8080", "allow tcp 22", { action: "allow", protocol: "udp", port: "53", from: "10.1.2.3/8" }, "allow tcp 22-22", { action: "deny", protocol: "tcp", port: 22, from: "203.0.113.9" }],
      },
    });
    expect(result.failures).toBeUndefined();
    expect(result.inputs?.ingress).toEqual({
      default: "deny",
      rules: { "allow tcp 22": "allow", "deny tcp 22 from 203.0.113.9/32": "deny", "allow tcp 8080": "allow", "allow udp 53 from 10.0.0.0/8": "allow" },
    });
    expect(Object.keys(result.inputs?.ingress.rules)).toEqual(["allow tcp 22", "deny tcp 22 from 203.0.113.9/32", "allow tcp 8080", "allow udp 53 from 10.0.0.0/8"]);
  });

  it("fills in defaults: allow both ways, stateless, conntrack-like timeouts, attached, no lockout override", () => {
    const result = checkInputs(tcPolicySchema, base);
    expect(result.failures).toBeUndefined();
    expect(result.inputs).toMatchObject({
      ingress: { default: "allow", rules: {} },
      egress: { default: "allow", rules: {} },
      stateful: false,
      timeouts: { tcpEstablished: 21600, tcpTransitory: 120, other: 60 },
      attached: true,
      allowLockout: false,
      lockoutGuard: true,
      lockoutRevertSeconds: 30,
      priority: 2,
    });
  });

  it("accepts the canonical form it produced", () => {
    const once = checkTcPolicy(stateful(["allow tcp 22", "deny udp 53 from 10.0.0.0/8", "allow udp 5000-6000"])).inputs!;
    expect(checkTcPolicy(once).inputs).toEqual(once);
  });

  it.each([
    [{ ingress: { rules: ["allow tcp 0"] } }, "ingress.rules[0]", /port 0/],
    [{ ingress: { rules: ["allow tcp 22", "allow tcp 65536"] } }, "ingress.rules[1]", /65536 is out of range/],
    [{ ingress: { rules: ["allow tcp 0-10"] } }, "ingress.rules[0]", /port 0/],
    [{ ingress: { rules: ["allow udp 6000-5000"] } }, "ingress.rules[0]", /reversed; write 5000-6000/],
    [{ ingress: { rules: ["allow tcp 22-"] } }, "ingress.rules[0]", /not a port number/],
    [{ ingress: { rules: ["allow icmp 8"] } }, "ingress.rules[0]", /icmp has no ports/],
    [{ ingress: { rules: ["deny any 53"] } }, "ingress.rules[0]", /needs protocol tcp or udp/],
    [{ ingress: { rules: [{ action: "allow", protocol: "icmp", port: 1 }] } }, "ingress.rules[0]", /icmp has no ports/],
    [{ ingress: { rules: [{ action: "allow", protocol: "tcp", port: 22.5 }] } }, "ingress.rules[0]", /whole number/],
    [{ ingress: { rules: [{ action: "allow", protocol: "tcp", port: 70000 }] } }, "ingress.rules[0]", /out of range/],
    [{ egress: { rules: ["deny tcp 25 to 10.0.0.0/33"] } }, "egress.rules[0]", /to: .*prefix length/],
    [{ egress: { rules: ["deny tcp 25 from 300.1.1.1"] } }, "egress.rules[0]", /from: .*not an IPv4 or IPv6/],
    [{ egress: { rules: ["deny tcp 25 from 10.0.0.0/8 to 2001:db8::/32"] } }, "egress.rules[0]", /different address families/],
    [{ ingress: { rules: ["permit tcp 22"] } }, "ingress.rules[0]", /not an action/],
    [{ ingress: { rules: ["allow sctp 22"] } }, "ingress.rules[0]", /not a protocol/],
    [{ ingress: { rules: ["allow tcp 22 via eth0"] } }, "ingress.rules[0]", /unexpected "via"/],
    [{ ingress: { rules: ["allow tcp 22 from"] } }, "ingress.rules[0]", /needs a CIDR/],
    [{ ingress: { rules: ["allow tcp 22 from 10.0.0.0/8 from 10.0.0.0/16"] } }, "ingress.rules[0]", /appears twice/],
    [{ ingress: { rules: ["allow"] } }, "ingress.rules[0]", /is not a rule/],
    [{ ingress: { rules: { "allow tcp 22": "deny" } } }, 'ingress.rules["allow tcp 22"]', /must be the rule's action/],
    [{ ingress: { default: "reject" } }, "ingress.default", /./],
    [{ ingress: { rules: [], extra: 1 } }, "ingress", /./],
    [{ timeouts: { other: 0 } }, "timeouts.other", /at least 0.001/],
    [{ timeouts: { tcpEstablished: -5 } }, "timeouts.tcpEstablished", /at least/],
    [{ timeouts: { tcpTransitory: 40 * 86_400 } }, "timeouts.tcpTransitory", /30 days/],
    [{ interface: "eth0; reboot" }, "interface", /only letters, digits/],
    [{ name: "web.policy" }, "pinName", /bpffs refuses/],
    // lockout guard and placement
    [{ lockoutRevertSeconds: 9 }, "lockoutRevertSeconds", /at least 10 seconds.*fresh SSH login/],
    [{ lockoutRevertSeconds: 3601 }, "lockoutRevertSeconds", /at most 3600/],
    [{ lockoutRevertSeconds: 7.5 }, "lockoutRevertSeconds", /whole number of seconds/],
    [{ lockoutRevertSeconds: "30" }, "lockoutRevertSeconds", /number/],
    [{ lockoutGuard: "yes" }, "lockoutGuard", /boolean/],
    [{ priority: 0 }, "priority", /at least 1 \(0 would let the kernel pick one\)/],
    [{ priority: 65536 }, "priority", /at most 65535/],
    [{ priority: 2.5 }, "priority", /whole number/],
    [{ priority: -3 }, "priority", /at least 1/],
  ])("rejects %j naming %s", (patch, property, reason) => {
    const result = checkTcPolicy({ ...base, ...patch });
    expect(result.inputs).toBeUndefined();
    const failure = failureAt(result, property, { ...base, ...patch });
    expect(failure.reason).toMatch(reason);
  });

  it("rejects more rules than the maps hold, per direction and in all", () => {
    const rules = (n: number, proto = "udp") => Array.from({ length: n }, (_, i) => `deny ${proto} ${i + 1}`);
    const one = checkTcPolicy({ ...base, ingress: { rules: rules(MAX_RULES + 1) } });
    expect(one.failures?.[0]?.reason).toMatch(/ingress.rules: has 1025 rules; the policy holds at most 1024/);
    expect(checkTcPolicy({ ...base, ingress: { rules: rules(MAX_RULES) } }).failures).toBeUndefined();
    const both = checkTcPolicy({ ...base, ingress: { rules: rules(600) }, egress: { rules: rules(600, "tcp") } });
    expect(both.failures?.[0]?.reason).toMatch(/1200 rules in all; the policy holds at most 1024 \(ingress and egress together\)/);
  });

  it("lets values that are unknown during preview through unchecked", () => {
    const result = checkTcPolicy({ ...base, host: { address: UNKNOWN }, ingress: { default: "deny", rules: [UNKNOWN] }, stateful: true });
    expect(result.failures).toBeUndefined();
    expect(result.inputs?.ingress).toEqual({ default: "deny", rules: [UNKNOWN] });
    const hostUnknown = checkTcPolicy({ ...base, host: UNKNOWN, ingress: { default: "deny" } });
    expect(hostUnknown.failures).toBeUndefined();
  });
});

describe("TcPolicy diff", () => {
  const olds = { ...(checkTcPolicy(base).inputs as TcPolicyInputs), objectSha256: "x" } as never;
  const diff = (patch: Record<string, unknown>) => diffInputs(tcPolicyKind, olds, checkTcPolicy({ ...base, ...patch }).inputs as never);

  it("changes priority, lockoutGuard and lockoutRevertSeconds in place", () => {
    for (const patch of [{ priority: 7 }, { lockoutGuard: false }, { lockoutRevertSeconds: 120 }]) {
      expect(diff(patch), JSON.stringify(patch)).toMatchObject({ changes: true, replaces: [] });
    }
  });

  it("accepts the bounds", () => {
    for (const patch of [{ priority: 1 }, { priority: 65535 }, { lockoutRevertSeconds: 10 }, { lockoutRevertSeconds: 3600 }]) {
      expect(checkTcPolicy({ ...base, ...patch }).failures, JSON.stringify(patch)).toBeUndefined();
    }
  });
});

describe("lockout guard", () => {
  const issues = (input: Record<string, unknown>) => checkTcPolicy({ ...base, ...input }).failures ?? [];

  it("rejects a stateful default-deny policy that does not allow inbound tcp/22", () => {
    const failures = issues(stateful(["allow tcp 8080"]));
    expect(failures).toHaveLength(1);
    // An object-valued input: the engine prints the reason alone (the path leads it), not a dump of the rules.
    expect(failures[0]).toMatchObject({ property: "" });
    expect(failures[0]!.reason.startsWith("ingress: ")).toBe(true);
    expect(failures[0]!.reason).toMatch(/does not allow inbound TCP to port 22, the management SSH path.*allowLockout: true/);
  });

  it.each([
    ["allow tcp 22"],
    ["allow tcp 1-1024"],
    ["allow any"],
    ["allow tcp 22 from 10.0.0.0/8"], // the lifecycle checks the real peer
    ["allow tcp 22 to 10.0.0.5"],
  ])("accepts a stateful policy with %j", (rule) => {
    expect(issues(stateful([rule, "allow tcp 8080"]))).toEqual([]);
  });

  it("rejects a deny rule that drops tcp/22 from everyone, naming it", () => {
    for (const rule of ["deny tcp 22", "deny any", "deny tcp 1-100", "deny tcp 22 from 0.0.0.0/0"]) {
      const failures = issues({ ingress: { default: "allow", rules: [rule] } });
      expect(failures, rule).toHaveLength(1);
      expect(failures[0]!.reason).toContain(`rule "${parseRuleText("ingress", rule) && ruleText(parseRuleText("ingress", rule))}" drops inbound TCP to port 22`);
    }
    expect(issues(stateful(["allow tcp 22", "deny tcp 22"]))[0]!.reason).toMatch(/rule "deny tcp 22"/);
  });

  it("accepts deny rules that name a source, or other ports and protocols", () => {
    expect(issues({ ingress: { rules: ["deny tcp 22 from 203.0.113.0/24", "deny tcp 23", "deny udp 22", "deny icmp"] } })).toEqual([]);
  });

  it("uses the host's sshd port", () => {
    expect(issues(stateful(["allow tcp 22"], { host: { ...base.host, port: 2222 } }))[0]?.reason).toMatch(/port 2222/);
    expect(issues(stateful(["allow tcp 2222"], { host: { ...base.host, port: 2222 } }))).toEqual([]);
  });

  it("rejects a stateless egress that drops the SSH replies, but not a stateful one", () => {
    const failures = issues({ egress: { default: "deny", rules: ["allow tcp 443"] } });
    expect(failures).toHaveLength(1);
    // An object-valued input: the engine prints the reason alone (the path leads it), not a dump of the rules.
    expect(failures[0]).toMatchObject({ property: "" });
    expect(failures[0]!.reason.startsWith("egress: ")).toBe(true);
    expect(failures[0]!.reason).toMatch(/drops outbound TCP to port 1024.*replies/);
    expect(issues({ egress: { default: "deny", rules: ["allow tcp 1024-65535"] } })).toEqual([]);
    expect(issues({ egress: { default: "allow", rules: ["deny tcp 30000-40000"] } })[0]?.reason).toMatch(/port 30000/);
    expect(issues({ egress: { default: "allow", rules: ["deny tcp 30000-40000 to 192.0.2.0/24"] } })).toEqual([]);
    expect(issues(stateful(["allow tcp 22"], { egress: { default: "deny" } }))).toEqual([]);
  });

  it("is switched off by allowLockout", () => {
    expect(issues(stateful(["allow tcp 8080"], { allowLockout: true, egress: { default: "deny" } }))).toEqual([]);
  });

  it("is a pure function of the canonical inputs", () => {
    const inputs = tcPolicySchema.parse(stateful(["allow tcp 8080"])) as TcPolicyInputs;
    expect(lockoutIssues(inputs, 22)).toHaveLength(1);
    expect(lockoutIssues(inputs, 8080)).toEqual([]);
    expect(policyIssues({ ...inputs, host: { port: 8080 } })).toEqual([]);
  });
});
