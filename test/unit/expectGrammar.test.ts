// provider/expect/grammar.ts and schema.ts: the text and object forms of a
// packet expectation, their canonical text, and the errors check() reports.
import { describe, expect, it } from "vitest";
import { expectationText, parseExpectation, parseExpectationText, type ExpectKind } from "../../provider/expect/grammar";
import { expectationSet, expectationsOf, maglevExpectationProblems, MAX_EXPECTATIONS } from "../../provider/expect/schema";
import { maglevServiceSchema } from "../../provider/maglev/schema";

const canon = (kind: ExpectKind, input: unknown) => expectationText(parseExpectation(kind, input));
const fails = (kind: ExpectKind, input: unknown) => {
  try {
    parseExpectation(kind, input);
  } catch (err) {
    return (err as Error).message;
  }
  throw new Error(`accepted: ${JSON.stringify(input)}`);
};

describe("the issue's examples", () => {
  it("parse into the fields they name and are already canonical", () => {
    const fw = parseExpectationText("xdpFirewall", "tcp 10.0.0.5:33000 > 10.0.0.7:22 syn: pass");
    expect(fw).toEqual({
      kind: "xdpFirewall", hook: "ingress", reply: false, protocol: "tcp", family: 4,
      source: "10.0.0.5", sourcePort: 33000, destination: "10.0.0.7", destinationPort: 22, flags: ["syn"], outcome: { verdict: "pass" },
    });
    expect(expectationText(fw)).toBe("tcp 10.0.0.5:33000 > 10.0.0.7:22 syn: pass");

    const v6 = parseExpectationText("xdpFirewall", "udp [2001:db8::1]:53 > [2001:db8::7]:40000: drop");
    expect(v6).toMatchObject({ protocol: "udp", family: 6, source: "2001:db8::1", sourcePort: 53, destination: "2001:db8::7", destinationPort: 40000, outcome: { verdict: "drop" } });
    expect(v6.flags).toBeUndefined();
    expect(expectationText(v6)).toBe("udp [2001:db8::1]:53 > [2001:db8::7]:40000: drop");

    const reply = parseExpectationText("tcPolicy", "ingress reply tcp 192.0.2.9:443 > 10.0.0.7:51000: pass");
    expect(reply).toMatchObject({ hook: "ingress", reply: true, flags: ["syn", "ack"] });
    expect(expectationText(reply)).toBe("ingress reply tcp 192.0.2.9:443 > 10.0.0.7:51000 syn ack: pass");

    const lb = parseExpectationText("maglevService", "tcp 198.51.100.7:40000 > 198.51.100.10:80: backend 10.0.1.3");
    expect(lb.outcome).toEqual({ backend: { address: "10.0.1.3" } });
    expect(expectationText(lb)).toBe("tcp 198.51.100.7:40000 > 198.51.100.10:80 syn: backend 10.0.1.3");
  });
});

describe("canonical text", () => {
  const same: [ExpectKind, unknown, string][] = [
    ["xdpFirewall", "TCP 10.0.0.5:33000>10.0.0.7:22 SYN : PASS", "tcp 10.0.0.5:33000 > 10.0.0.7:22 syn: pass"],
    ["xdpFirewall", "ingress tcp 10.0.0.5:33000 > 10.0.0.7:22: pass", "tcp 10.0.0.5:33000 > 10.0.0.7:22 syn: pass"],
    ["xdpFirewall", "tcp 10.0.0.5:1 > 10.0.0.7:2 ack fin: drop", "tcp 10.0.0.5:1 > 10.0.0.7:2 fin ack: drop"],
    ["xdpFirewall", "tcp 10.0.0.5:1 > 10.0.0.7:2 ack ack psh:drop", "tcp 10.0.0.5:1 > 10.0.0.7:2 psh ack: drop"],
    // RFC 5952 and IPv4-mapped addresses, as provider/cidr.ts
    ["xdpFirewall", "udp [2001:DB8:0:0::0001]:53 > [2001:db8::7]:40000: drop", "udp [2001:db8::1]:53 > [2001:db8::7]:40000: drop"],
    ["xdpFirewall", "udp [::ffff:10.0.0.5]:53 > [::ffff:a00:7]:40000: drop", "udp 10.0.0.5:53 > 10.0.0.7:40000: drop"],
    ["xdpFirewall", "icmp ::ffff:192.0.2.1 > 10.0.0.7: drop", "icmp 192.0.2.1 > 10.0.0.7: drop"],
    // icmp: bare or bracketed IPv6, icmpv6 spelled for an IPv6 packet
    ["xdpFirewall", "icmp 2001:db8::1 > 2001:db8::7: pass", "icmp 2001:db8::1 > 2001:db8::7: pass"],
    ["xdpFirewall", "icmpv6 [2001:db8::1] > [2001:db8::]: pass", "icmp 2001:db8::1 > 2001:db8::: pass"],
    ["tcPolicy", "egress new udp 10.0.0.7:33000 > 192.0.2.53:53: pass", "egress udp 10.0.0.7:33000 > 192.0.2.53:53: pass"],
    ["tcPolicy", "ingress reply icmp 192.0.2.1 > 10.0.0.7: pass", "ingress reply icmp 192.0.2.1 > 10.0.0.7: pass"],
    ["tcPolicy", "egress reply tcp 10.0.0.7:22 > 192.0.2.9:50000 ack: pass", "egress reply tcp 10.0.0.7:22 > 192.0.2.9:50000 ack: pass"],
    ["maglevService", "udp [2001:db8:100::10]:53 > [2001:db8:100::10]:53: backend [2001:DB8::3]:8053", "udp [2001:db8:100::10]:53 > [2001:db8:100::10]:53: backend [2001:db8::3]:8053"],
    ["maglevService", "tcp 198.51.100.7:40000 > 198.51.100.10:80 ack psh: backend 10.0.1.3:8080", "tcp 198.51.100.7:40000 > 198.51.100.10:80 psh ack: backend 10.0.1.3:8080"],
    // the object form, with the mirror filter's field names
    ["xdpFirewall", { protocol: "tcp", source: "10.0.0.5", sourcePort: 33000, destination: "10.0.0.7", destinationPort: 22, flags: ["syn"], verdict: "pass" }, "tcp 10.0.0.5:33000 > 10.0.0.7:22 syn: pass"],
    ["xdpFirewall", { protocol: "udp", source: "2001:db8::1", sourcePort: "53", destination: "[2001:db8::7]:40000", verdict: "drop" }, "udp [2001:db8::1]:53 > [2001:db8::7]:40000: drop"],
    ["tcPolicy", { hook: "ingress", reply: true, protocol: "tcp", source: "192.0.2.9:443", destination: "10.0.0.7:51000", verdict: "pass" }, "ingress reply tcp 192.0.2.9:443 > 10.0.0.7:51000 syn ack: pass"],
    ["tcPolicy", { hook: "egress", protocol: "tcp", source: "10.0.0.7:1", destination: "10.0.0.8:2", flags: "rst, ack", verdict: "drop" }, "egress tcp 10.0.0.7:1 > 10.0.0.8:2 rst ack: drop"],
    ["maglevService", { protocol: "tcp", source: "198.51.100.7:40000", destination: "198.51.100.10:80", backend: "10.0.1.3" }, "tcp 198.51.100.7:40000 > 198.51.100.10:80 syn: backend 10.0.1.3"],
  ];
  it.each(same)("%s %j is %s", (kind, input, text) => {
    expect(canon(kind, input)).toBe(text);
    // The canonical text is a fixed point.
    expect(canon(kind, text)).toBe(text);
  });
});

describe("errors say what is wrong", () => {
  const bad: [ExpectKind, unknown, RegExp][] = [
    ["xdpFirewall", "sctp 10.0.0.5:1 > 10.0.0.7:2: pass", /"sctp" is not a protocol: use tcp, udp or icmp/],
    ["xdpFirewall", "icmp 10.0.0.5:7 > 10.0.0.7: pass", /source: icmp has no ports/],
    ["xdpFirewall", { protocol: "icmp", source: "10.0.0.5", destination: "10.0.0.7", destinationPort: 1, verdict: "pass" }, /icmp has no ports/],
    ["xdpFirewall", "tcp 10.0.0.5:1 > 10.0.0.7:22 syn", /has no outcome: end it with ": pass" or ": drop"/],
    ["xdpFirewall", { protocol: "tcp", source: "10.0.0.5:1", destination: "10.0.0.7:22" }, /the outcome is missing/],
    ["xdpFirewall", "tcp 10.0.0.5:1 > 10.0.0.7:22: accept", /"accept" is not an outcome: use pass or drop/],
    ["xdpFirewall", "tcp 10.0.0.5:1 > [2001:db8::7]:22: pass", /source 10.0.0.5 is IPv4 but destination 2001:db8::7 is IPv6: a packet has one address family/],
    ["xdpFirewall", "tcp 10.0.0.5 > 10.0.0.7:22: pass", /source: "10.0.0.5" has no port/],
    ["xdpFirewall", "udp 2001:db8::1:53 > [2001:db8::7]:53: pass", /in brackets with its port/],
    ["xdpFirewall", "tcp 10.0.0.0/24:1 > 10.0.0.7:22: pass", /is a prefix; an expectation is one packet/],
    ["xdpFirewall", "tcp 10.0.0.5:0 > 10.0.0.7:22: pass", /source: port 0 is out of range/],
    ["xdpFirewall", "tcp 10.0.0.5:70000 > 10.0.0.7:22: pass", /port 70000 is out of range/],
    ["xdpFirewall", "tcp host:1 > 10.0.0.7:22: pass", /source: "host" is not an IPv4 or IPv6 address/],
    ["xdpFirewall", "icmp ::10.0.0.5 > ::10.0.0.7: pass", /IPv4-compatible/],
    ["xdpFirewall", "tcp 10.0.0.5:1 > 10.0.0.7:22 syn fyn: pass", /"fyn" is not a TCP flag/],
    ["xdpFirewall", "udp 10.0.0.5:1 > 10.0.0.7:22 syn: pass", /udp has no flags/],
    ["xdpFirewall", "icmpv6 10.0.0.5 > 10.0.0.7: pass", /icmpv6 is IPv6's/],
    ["xdpFirewall", "egress tcp 10.0.0.5:1 > 10.0.0.7:22: pass", /XdpFirewall runs at XDP, on ingress only/],
    ["xdpFirewall", "reply tcp 10.0.0.5:1 > 10.0.0.7:22: pass", /XdpFirewall keeps no flows/],
    ["xdpFirewall", "tcp 10.0.0.5:1 > 10.0.0.7:22: backend 10.0.1.3", /XdpFirewall sends packets to no backend/],
    ["xdpFirewall", "tcp 10.0.0.5:1 10.0.0.7:22: pass", /is not an expectation: write/],
    ["xdpFirewall", "", /non-empty text/],
    ["xdpFirewall", 42, /a text or an object/],
    ["xdpFirewall", { protocol: "tcp", source: "10.0.0.5:1", destination: "10.0.0.7:2", verdict: "pass", port: 2 }, /unknown field "port"/],
    ["xdpFirewall", { protocol: "tcp", source: "10.0.0.5:1", sourcePort: 1, destination: "10.0.0.7:2", verdict: "pass" }, /source: the port is given twice/],
    ["tcPolicy", "tcp 10.0.0.5:1 > 10.0.0.7:22: pass", /a TcPolicy expectation names its hook: begin with "ingress" or "egress"/],
    ["tcPolicy", { hook: "sideways", protocol: "tcp", source: "10.0.0.5:1", destination: "10.0.0.7:2", verdict: "pass" }, /"sideways" is not a hook/],
    ["maglevService", "tcp 10.0.0.5:1 > 10.0.0.7:22: backend", /"backend" needs the backend's address/],
    ["maglevService", "icmp 10.0.0.5 > 10.0.0.7: backend 10.0.1.3", /an icmp expectation is pass or drop/],
    ["maglevService", "tcp 10.0.0.5:1 > 10.0.0.7:22: backend 10.0.1.0/24", /backend: "10.0.1.0\/24" is a prefix/],
    ["maglevService", { protocol: "tcp", source: "10.0.0.5:1", destination: "10.0.0.7:2", verdict: "pass", backend: "10.0.1.3" }, /either a verdict .* or a backend, not both/],
  ];
  it.each(bad)("%s %j", (kind, input, message) => {
    expect(fails(kind, input)).toMatch(message);
  });
});

describe("expectationSet (check)", () => {
  const set = expectationSet("tcPolicy");

  it("keys each expectation by its canonical text, deduplicated and sorted, the value its outcome", () => {
    const out = set.parse([
      "ingress udp 192.0.2.9:53 > 10.0.0.7:40000: pass",
      "ingress tcp 10.0.0.5:33000 > 10.0.0.7:22 syn: pass",
      "INGRESS tcp 10.0.0.5:33000>10.0.0.7:22: pass",
      { hook: "egress", protocol: "tcp", source: "10.0.0.7:50000", destination: "192.0.2.25:25", verdict: "drop" },
    ]);
    expect(out).toEqual({
      "egress tcp 10.0.0.7:50000 > 192.0.2.25:25 syn: drop": "drop",
      "ingress tcp 10.0.0.5:33000 > 10.0.0.7:22 syn: pass": "pass",
      "ingress udp 192.0.2.9:53 > 10.0.0.7:40000: pass": "pass",
    });
    // The record form (state) parses to itself, and back to the expectations.
    expect(set.parse(out)).toEqual(out);
    expect(expectationsOf("tcPolicy", out).map(expectationText)).toEqual(Object.keys(out));
  });

  it("names a bad one by its index, or by its key in the record form, with the reason", () => {
    const r = set.safeParse(["ingress tcp 10.0.0.5:1 > 10.0.0.7:22: pass", "ingress icmp 10.0.0.5:7 > 10.0.0.7: pass", "ingress tcp 10.0.0.5:1 > 10.0.0.7:22"]);
    expect(r.success).toBe(false);
    expect(r.error!.issues.map((i) => [i.path, i.message])).toEqual([
      [[1], "source: icmp has no ports: write the address alone (\"10.0.0.5\"), or use tcp or udp"],
      [[2], expect.stringMatching(/has no outcome/)],
    ]);
    const rec = set.safeParse({ "ingress tcp 10.0.0.5:1 > 10.0.0.7:22 syn: pass": "drop" });
    expect(rec.error!.issues.map((i) => [i.path, i.message])).toEqual([[["ingress tcp 10.0.0.5:1 > 10.0.0.7:22 syn: pass"], 'the value must be the expectation\'s outcome, "pass"']]);
  });

  it(`holds at most ${MAX_EXPECTATIONS}`, () => {
    const many = Array.from({ length: MAX_EXPECTATIONS + 1 }, (_, i) => `ingress udp 10.0.${i >> 8}.${i & 255}:53 > 10.0.0.7:53: pass`);
    expect(set.safeParse(many.slice(0, MAX_EXPECTATIONS)).success).toBe(true);
    expect(set.safeParse(many).error!.issues[0]!.message).toBe(`has ${MAX_EXPECTATIONS + 1} expectations; at most ${MAX_EXPECTATIONS} run in one update's lockout window`);
  });
});

describe("maglevExpectationProblems (rules across properties)", () => {
  const inputs = maglevServiceSchema.parse({
    host: { address: "192.0.2.1" }, interface: "eth0", name: "web",
    vips: ["198.51.100.10:80/tcp", "[2001:db8:100::10]:53/udp"],
    backends: ["10.0.1.3", "10.0.1.4", "2001:db8::3"],
    mode: "dsr",
  });
  const problems = (texts: string[]) =>
    maglevExpectationProblems(expectationSet("maglevService").parse(texts), inputs.vips, inputs.backends).map((p) => p.reason);

  it("accepts a packet to a VIP that names one of its backends, and pass/drop to anything", () => {
    expect(problems([
      "tcp 192.0.2.7:40000 > 198.51.100.10:80: backend 10.0.1.3",
      "udp [2001:db8:c::7]:40000 > [2001:db8:100::10]:53: backend 2001:db8::3",
      "tcp 192.0.2.7:40000 > 198.51.100.11:80: pass",
    ])).toEqual([]);
  });

  it("refuses a backend outcome for a packet that is not for a VIP, or a backend the service does not have", () => {
    expect(problems([
      "tcp 192.0.2.7:40000 > 198.51.100.10:81: backend 10.0.1.3",
      "udp 192.0.2.7:40000 > 198.51.100.10:80: backend 10.0.1.3",
      "tcp 192.0.2.7:40000 > 198.51.100.10:80: backend 10.0.1.9",
    ])).toEqual([
      'expect["tcp 192.0.2.7:40000 > 198.51.100.10:80 syn: backend 10.0.1.9"]: backend 10.0.1.9 is not one of this service\'s backends',
      'expect["udp 192.0.2.7:40000 > 198.51.100.10:80: backend 10.0.1.3"]: udp to 198.51.100.10:80 is not a VIP of this service (198.51.100.10 has 198.51.100.10:80/tcp), so the balancer passes it to the host instead of a backend',
      'expect["tcp 192.0.2.7:40000 > 198.51.100.10:81 syn: backend 10.0.1.3"]: tcp to 198.51.100.10:81 is not a VIP of this service (198.51.100.10 has 198.51.100.10:80/tcp), so the balancer passes it to the host instead of a backend',
    ]);
  });

  it("says when a packet's family has no VIP at all (a v4 packet to a v6-only service)", () => {
    const v6only = maglevServiceSchema.parse({ host: { address: "192.0.2.1" }, interface: "eth0", name: "dns", vips: ["[2001:db8:100::10]:53/udp"], backends: ["2001:db8::3"] });
    expect(maglevExpectationProblems(expectationSet("maglevService").parse(["udp 192.0.2.7:40000 > 198.51.100.10:53: backend 2001:db8::3"]), v6only.vips, v6only.backends).map((p) => p.reason)).toEqual([
      'expect["udp 192.0.2.7:40000 > 198.51.100.10:53: backend 2001:db8::3"]: an IPv4 packet cannot reach a VIP: every VIP of this service is IPv6',
    ]);
  });
});
