// provider/expect/evaluate.ts: expectations judged at preview against planned
// entries. test/kernel/expect.test.ts checks the same evaluator against the
// loaded programs on random policies; here, the rules case by case.
import { describe, expect, it } from "vitest";
import { expectationText, parseExpectationText } from "../../provider/expect/grammar";
import { evaluateFirewall, evaluateMaglev, evaluateTcPolicy, type PolicyLike } from "../../provider/expect/evaluate";
import { maglevServiceSchema } from "../../provider/maglev/schema";
import { buildTable } from "../../provider/maglev/table";
import { lbFlowHash, type Flow } from "../support/lbFlowHash";
import { seededRandom } from "../support/seededRandom";
import { rulesOf, tcPolicySchema } from "../../provider/tcPolicy/schema";
import { xdpFirewallSchema } from "../../provider/xdpFirewall/schema";

describe("evaluateFirewall", () => {
  const deny = xdpFirewallSchema.shape.deny.parse(["192.0.2.9", "198.51.100.0/24", "2001:db8:ff00::/40", "::ffff:203.0.113.7"]);
  const cases: [string, "pass" | "drop", boolean][] = [
    ["tcp 192.0.2.9:1234 > 10.0.0.1:22 syn: drop", "drop", true],
    ["tcp 192.0.2.9:1234 > 10.0.0.1:22 syn: pass", "drop", false],
    ["udp 198.51.100.255:53 > 10.0.0.1:40000: pass", "drop", false],
    ["udp 198.51.101.0:53 > 10.0.0.1:40000: pass", "pass", true],
    ["icmp 10.0.0.2 > 192.0.2.9: pass", "pass", true], // a denied destination is not the firewall's business
    ["icmp 2001:db8:ffff::1 > 2001:db8:1::1: drop", "drop", true],
    ["icmp 2001:db8:feff::1 > 2001:db8:1::1: drop", "pass", false],
    ["udp 203.0.113.7:1 > 10.0.0.1:2: drop", "drop", true], // the mapped entry is the IPv4 address
  ];
  it.each(cases)("%s → %s", (text, got, met) => {
    const r = evaluateFirewall(deny, parseExpectationText("xdpFirewall", text));
    expect([r.got, r.met]).toEqual([got, met]);
  });

  it("names the entry that drops", () => {
    expect(evaluateFirewall(deny, parseExpectationText("xdpFirewall", "udp 198.51.100.7:1 > 10.0.0.1:2: pass")).reason).toBe("deny entry 198.51.100.0/24 covers the source");
  });
});

describe("evaluateTcPolicy", () => {
  const policyOf = (args: Record<string, unknown>, failsafe?: PolicyLike["failsafe"]): PolicyLike => {
    const inputs = tcPolicySchema.parse({ host: { address: "192.0.2.1" }, interface: "eth0", name: "p", ...args });
    return { rules: rulesOf(inputs), ingressDefault: inputs.ingress.default, egressDefault: inputs.egress.default, stateful: inputs.stateful, failsafe };
  };
  const judge = (p: PolicyLike, text: string) => evaluateTcPolicy(p, parseExpectationText("tcPolicy", text));

  it("stateless: deny beats allow, ports and prefixes match, no match takes the hook's default", () => {
    const p = policyOf({
      ingress: { default: "deny", rules: ["allow tcp 22", "allow tcp 8000-8080 from 192.0.2.0/24", "deny tcp 22 from 10.0.0.0/8", "allow udp 53", "allow icmp from 2001:db8::/32"] },
      egress: { default: "allow", rules: ["deny tcp 25"] },
    });
    const cases: [string, string][] = [
      ["ingress tcp 198.51.100.1:40000 > 10.0.0.1:22: pass", "pass"],
      ["ingress tcp 10.1.2.3:40000 > 10.0.0.1:22: pass", "drop"],
      ["ingress tcp 192.0.2.1:40000 > 10.0.0.1:8080: pass", "pass"],
      ["ingress tcp 192.0.2.1:40000 > 10.0.0.1:8081: pass", "drop"],
      ["ingress tcp 192.0.3.1:40000 > 10.0.0.1:8080: pass", "drop"],
      ["ingress udp 198.51.100.1:40000 > 10.0.0.1:53: pass", "pass"],
      ["ingress tcp 198.51.100.1:40000 > 10.0.0.1:53: pass", "drop"],
      ["ingress icmp 2001:db8:9::9 > 2001:db8:1::1: pass", "pass"],
      ["ingress icmp 198.51.100.1 > 10.0.0.1: pass", "drop"],
      ["egress tcp 10.0.0.1:40000 > 192.0.2.25:25: pass", "drop"],
      ["egress tcp 10.0.0.1:40000 > 192.0.2.25:587: pass", "pass"],
      // stateless: a reply is just a packet
      ["ingress reply tcp 192.0.2.9:443 > 10.0.0.1:51000: pass", "drop"],
    ];
    for (const [text, got] of cases) {
      const r = judge(p, text);
      expect(r.got, text).toBe(got);
      expect(r.met, text).toBe(got === "pass");
    }
  });

  it("stateful: a reply passes when the packet that opens its flow passes the other hook's rules", () => {
    const p = policyOf({ stateful: true, ingress: { default: "deny", rules: ["allow tcp 22"] }, egress: { default: "allow", rules: ["deny udp 53 to 192.0.2.66"] } });
    expect(judge(p, "ingress reply tcp 192.0.2.9:443 > 10.0.0.7:51000: pass")).toMatchObject({ got: "pass", met: true, reason: expect.stringMatching(/its flow is live: the egress packet that opens it passes/) });
    expect(judge(p, "ingress reply udp 192.0.2.53:53 > 10.0.0.7:33000: pass").got).toBe("pass");
    expect(judge(p, "ingress reply icmp 192.0.2.1 > 10.0.0.7: pass").got).toBe("pass");
    // The opener is dropped by an egress rule: no flow, and ingress default deny.
    expect(judge(p, "ingress reply udp 192.0.2.66:53 > 10.0.0.7:33000: pass")).toMatchObject({ got: "drop", met: false, reason: expect.stringMatching(/^no flow: the egress packet that would open it is dropped \(rule "egress deny udp 53 to 192.0.2.66\/32"\)/) });
    // A new inbound packet is judged by the rules (no live flow knows it).
    expect(judge(p, "ingress tcp 192.0.2.9:443 > 10.0.0.7:51000 syn ack: drop").got).toBe("drop");
    expect(judge(p, "ingress tcp 192.0.2.9:51000 > 10.0.0.7:22: pass").got).toBe("pass");
    // The replies of an admitted inbound connection leave through the egress hook.
    expect(judge(p, "egress reply tcp 10.0.0.7:22 > 192.0.2.9:51000: pass").got).toBe("pass");
    expect(judge(p, "egress reply tcp 10.0.0.7:23 > 192.0.2.9:51000: pass").got).toBe("pass"); // egress default allow anyway
    // A bare SYN as a reply depends on the flow's state: preview does not guess.
    expect(judge(p, "ingress reply tcp 192.0.2.9:443 > 10.0.0.7:51000 syn: pass")).toMatchObject({ got: "unknown", met: undefined });
  });

  it("passes the management path whatever the rules say (the failsafe the lifecycle writes)", () => {
    const p = policyOf({ ingress: { default: "deny", rules: ["deny tcp 22"] }, egress: { default: "deny" } }, { port: 22, peer: "192.0.2.50" });
    expect(judge(p, "ingress tcp 192.0.2.50:40000 > 10.0.0.7:22: pass").got).toBe("pass");
    expect(judge(p, "egress tcp 10.0.0.7:22 > 192.0.2.50:40000 ack: pass").got).toBe("pass");
    expect(judge(p, "ingress tcp 192.0.2.51:40000 > 10.0.0.7:22: pass").got).toBe("drop");
    expect(judge(p, "ingress udp 192.0.2.50:40000 > 10.0.0.7:22: pass").got).toBe("drop");
  });
});

describe("evaluateMaglev", () => {
  const service = maglevServiceSchema.parse({
    host: { address: "192.0.2.1" }, interface: "eth0", name: "web", mode: "nat", tableSize: 1009,
    vips: ["198.51.100.10:80/tcp", "[2001:db8:100::10]:53/udp"],
    backends: [{ address: "10.0.0.11", port: 8080 }, { address: "10.0.0.12", port: 8080 }, { address: "10.0.0.13", port: 8080, weight: 3 }, { address: "fd00::11", port: 53 }, { address: "fd00::12", port: 53 }],
  });
  const tables = new Map();

  it("names the backend the independent flow hash (test/support/lbFlowHash.ts) picks in the planned table", () => {
    const rand = seededRandom(3);
    const counts = new Map<string, number>();
    for (let i = 0; i < 400; i++) {
      const v6 = i % 2 === 1;
      const f: Flow = v6
        ? { src: `2001:db8:c::${(1 + Math.floor(rand() * 0xffff)).toString(16)}`, dst: "2001:db8:100::10", sport: 1024 + Math.floor(rand() * 60000), dport: 53, proto: "udp" }
        : { src: `192.0.2.${1 + Math.floor(rand() * 250)}`, dst: "198.51.100.10", sport: 1024 + Math.floor(rand() * 60000), dport: 80, proto: "tcp" };
      const ids = Object.keys(service.backends).filter((id) => id.includes("[") === v6);
      const table = buildTable(ids.map((id) => ({ id, weight: service.backends[id]!.weight })), 1009);
      const want = service.backends[table.backends[table.slots[lbFlowHash(f) % table.size]!]!]!;
      const ep = (a: string, p: number) => (v6 ? `[${a}]:${p}` : `${a}:${p}`);
      const e = parseExpectationText("maglevService", `${f.proto} ${ep(f.src, f.sport)} > ${ep(f.dst, f.dport)}: backend ${ep(want.address, want.port!)}`);
      const r = evaluateMaglev(service, e, tables);
      expect(r, expectationText(e)).toMatchObject({ met: true, got: `backend ${ep(want.address, want.port!)}` });
      counts.set(r.got, (counts.get(r.got) ?? 0) + 1);
      // The address alone is met too; another backend is not.
      const other = Object.values(service.backends).find((b) => b.address !== want.address && b.address.includes(":") === v6)!;
      expect(evaluateMaglev(service, parseExpectationText("maglevService", `${f.proto} ${ep(f.src, f.sport)} > ${ep(f.dst, f.dport)}: backend ${want.address}`), tables).met).toBe(true);
      expect(evaluateMaglev(service, parseExpectationText("maglevService", `${f.proto} ${ep(f.src, f.sport)} > ${ep(f.dst, f.dport)}: backend ${other.address}`), tables).met).toBe(false);
    }
    // Every backend is reached, the weight-3 one most of its family.
    expect(counts.size).toBe(5);
    expect(counts.get("backend 10.0.0.13:8080")!).toBeGreaterThan(counts.get("backend 10.0.0.11:8080")!);
  });

  it("passes what is not for a VIP, says unknown for what may be a NAT reply, drops with no backend", () => {
    const judge = (text: string) => evaluateMaglev(service, parseExpectationText("maglevService", text), tables);
    expect(judge("tcp 192.0.2.7:40000 > 198.51.100.10:81: pass")).toMatchObject({ got: "pass", met: true });
    expect(judge("udp 192.0.2.7:40000 > 198.51.100.10:80: pass")).toMatchObject({ got: "pass", met: true });
    expect(judge("icmp 192.0.2.7 > 198.51.100.10: pass")).toMatchObject({ got: "pass", met: true });
    expect(judge("tcp 192.0.2.7:40000 > 198.51.100.10:80: drop").met).toBe(false);
    expect(judge("tcp 10.0.0.11:8080 > 192.0.2.7:40000: pass")).toMatchObject({ got: "unknown", met: undefined });
    const empty = maglevServiceSchema.parse({ host: { address: "192.0.2.1" }, interface: "eth0", name: "web", vips: ["198.51.100.10:80/tcp"], backends: [] });
    expect(evaluateMaglev(empty, parseExpectationText("maglevService", "tcp 192.0.2.7:40000 > 198.51.100.10:80: drop"))).toMatchObject({ got: "drop", met: true });
  });
});
