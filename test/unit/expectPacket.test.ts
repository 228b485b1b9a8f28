// provider/expect/packet.ts: the frame of an expectation, compared byte for
// byte with the same packet built by test/kernel/packets.ts (an independent
// implementation, cross-checked with tcpdump by test/kernel/packets.test.ts),
// and its checksums recomputed there.
import { describe, expect, it } from "vitest";
import { expectationText, parseExpectationText, type ExpectKind } from "../../provider/expect/grammar";
import { probeRounds, type Probe } from "../../provider/expect/probe";
import { buildFrame, flowOpener } from "../../provider/expect/packet";
import { checksumsValid, ethernet, ETH_P, icmpv4, icmpv6, ipFrame, ipv4, tcp, udp, type Segment } from "../kernel/packets";

const hex = (b: Buffer) => b.toString("hex");
const frameOf = (kind: ExpectKind, text: string, o = {}) => buildFrame(parseExpectationText(kind, text), o);

describe("buildFrame", () => {
  const cases: [string, ExpectKind, string, () => Buffer][] = [
    ["IPv4 TCP SYN", "xdpFirewall", "tcp 10.0.0.5:33000 > 10.0.0.7:22 syn: pass", () => ipFrame({ src: "10.0.0.5", dst: "10.0.0.7", payload: tcp({ srcPort: 33000, dstPort: 22, flags: { syn: true } }) })],
    ["IPv4 TCP FIN+ACK", "xdpFirewall", "tcp 10.0.0.5:33000 > 10.0.0.7:22 fin ack: pass", () => ipFrame({ src: "10.0.0.5", dst: "10.0.0.7", payload: tcp({ srcPort: 33000, dstPort: 22, flags: { fin: true, ack: true } }) })],
    ["IPv4 TCP every flag", "xdpFirewall", "tcp 10.0.0.5:1 > 10.0.0.7:2 urg ack psh rst syn fin: pass", () => ipFrame({ src: "10.0.0.5", dst: "10.0.0.7", payload: tcp({ srcPort: 1, dstPort: 2, flags: { fin: true, syn: true, rst: true, psh: true, ack: true, urg: true } }) })],
    ["IPv4 UDP", "xdpFirewall", "udp 192.0.2.9:40000 > 10.0.0.1:53: drop", () => ipFrame({ src: "192.0.2.9", dst: "10.0.0.1", payload: udp({ srcPort: 40000, dstPort: 53, payload: Buffer.from("probe") }) })],
    ["IPv4 ICMP echo", "xdpFirewall", "icmp 192.0.2.9 > 10.0.0.1: drop", () => ipFrame({ src: "192.0.2.9", dst: "10.0.0.1", payload: icmpv4({ type: 8, id: 1, sequence: 1 }) })],
    ["IPv4 ICMP echo reply", "tcPolicy", "ingress reply icmp 192.0.2.1 > 10.0.0.1: pass", () => ipFrame({ src: "192.0.2.1", dst: "10.0.0.1", payload: icmpv4({ type: 0, id: 1, sequence: 1 }) })],
    ["IPv6 UDP", "xdpFirewall", "udp [2001:db8::1]:53 > [2001:db8::7]:40000: drop", () => ipFrame({ src: "2001:db8::1", dst: "2001:db8::7", payload: udp({ srcPort: 53, dstPort: 40000, payload: Buffer.from("probe") }) })],
    ["IPv6 TCP SYN+ACK", "tcPolicy", "ingress reply tcp [2001:db8:77::10]:443 > [2001:db8:1::1]:41000: pass", () => ipFrame({ src: "2001:db8:77::10", dst: "2001:db8:1::1", payload: tcp({ srcPort: 443, dstPort: 41000, flags: { syn: true, ack: true } }) })],
    ["ICMPv6 echo", "xdpFirewall", "icmp 2001:db8::9 > 2001:db8:1::1: drop", () => ipFrame({ src: "2001:db8::9", dst: "2001:db8:1::1", payload: icmpv6({ type: 128, id: 1, sequence: 1 }) })],
    ["ICMPv6 echo reply", "tcPolicy", "ingress reply icmp 2001:db8::1 > 2001:db8:1::1: pass", () => ipFrame({ src: "2001:db8::1", dst: "2001:db8:1::1", payload: icmpv6({ type: 129, id: 1, sequence: 1 }) })],
    ["IPv4-mapped source becomes an IPv4 packet", "xdpFirewall", "udp [::ffff:192.0.2.9]:40000 > 10.0.0.1:53: drop", () => ipFrame({ src: "192.0.2.9", dst: "10.0.0.1", payload: udp({ srcPort: 40000, dstPort: 53, payload: Buffer.from("probe") }) })],
  ];

  it.each(cases)("%s: the bytes of packets.ts, with valid checksums", (_name, kind, text, handBuilt) => {
    const got = frameOf(kind, text);
    expect(got.toString("hex")).toBe(handBuilt().toString("hex"));
    const sums = checksumsValid(got);
    expect(sums.l4).toBe(true);
    if (!text.includes("[")) expect(sums.ipv4Header ?? true).toBe(true);
  });

  it("takes MACs, TTL, IP id, TOS, TCP numbers and payload from the options", () => {
    const seg: Segment = tcp({ srcPort: 40000, dstPort: 80, seq: 1000, ack: 1, window: 512, flags: { ack: true, psh: true }, payload: Buffer.from("payload 40000") });
    const want = ethernet({ dst: "02:00:00:00:aa:01", src: "02:00:00:00:00:fe", etherType: ETH_P.IP, payload: ipv4({ src: "192.0.2.7", dst: "198.51.100.10", payload: seg, ttl: 61, id: 0x4242, tos: 0x10 }) });
    const got = frameOf("maglevService", "tcp 192.0.2.7:40000 > 198.51.100.10:80 psh ack: backend 10.0.0.11", {
      destinationMac: "02:00:00:00:aa:01", sourceMac: "02:00:00:00:00:fe", ttl: 61, ipId: 0x4242, tos: 0x10, tcpSeq: 1000, tcpAck: 1, tcpWindow: 512, payload: Buffer.from("payload 40000"),
    });
    expect(got.toString("hex")).toBe(want.toString("hex"));
  });

  it("sends a UDP checksum that computes to zero as all ones (RFC 768)", () => {
    // Search for a source port whose checksum folds to zero: the builder must write 0xffff.
    for (let port = 1; port < 65536; port++) {
      const f = frameOf("xdpFirewall", `udp 10.0.0.5:${port} > 10.0.0.7:53: pass`);
      if (f.readUInt16BE(14 + 20 + 6) === 0xffff) {
        expect(checksumsValid(f).l4).toBe(true);
        return;
      }
      expect(f.readUInt16BE(14 + 20 + 6)).not.toBe(0);
    }
    throw new Error("no port gave a zero checksum");
  });
});

describe("flowOpener", () => {
  it("is the packet the other way through the other hook: SYN for TCP, the same UDP tuple swapped, an echo request", () => {
    const cases: [string, string][] = [
      ["ingress reply tcp 192.0.2.9:443 > 10.0.0.7:51000: pass", "egress tcp 10.0.0.7:51000 > 192.0.2.9:443 syn: pass"],
      ["egress reply tcp 10.0.0.7:22 > 192.0.2.9:50000 ack: drop", "ingress tcp 192.0.2.9:50000 > 10.0.0.7:22 syn: pass"],
      ["ingress reply udp [2001:db8::53]:53 > [2001:db8:1::1]:33000: pass", "egress udp [2001:db8:1::1]:33000 > [2001:db8::53]:53: pass"],
      ["ingress reply icmp 192.0.2.1 > 10.0.0.1: pass", "egress icmp 10.0.0.1 > 192.0.2.1: pass"],
    ];
    for (const [reply, opener] of cases) {
      const o = flowOpener(parseExpectationText("tcPolicy", reply));
      expect(o.expectation).toEqual(parseExpectationText("tcPolicy", opener));
      expect(o.hook).toBe(o.expectation.hook);
    }
    // The echo request and its reply carry one identifier: the flow key of an ICMP flow.
    const req = buildFrame(flowOpener(parseExpectationText("tcPolicy", "ingress reply icmp 192.0.2.1 > 10.0.0.1: pass")).expectation);
    const rep = buildFrame(parseExpectationText("tcPolicy", "ingress reply icmp 192.0.2.1 > 10.0.0.1: pass"));
    expect([req[34], rep[34]]).toEqual([8, 0]);
    expect(req.readUInt16BE(38)).toBe(rep.readUInt16BE(38));
  });

  it("is only for replies", () => {
    expect(() => flowOpener(parseExpectationText("tcPolicy", "ingress tcp 192.0.2.9:443 > 10.0.0.7:51000: pass"))).toThrow(/only a reply/);
  });
});

describe("probeRounds", () => {
  const tc = (texts: string[]) => texts.map((t) => parseExpectationText("tcPolicy", t));

  it("sends a reply's opener first, through the other hook", () => {
    const [[probe]] = probeRounds(tc(["ingress reply udp 192.0.2.53:53 > 10.0.0.1:33000: pass"])) as [[Probe]];
    expect(probe.steps.map((s) => s.hook)).toEqual(["egress", "ingress"]);
    expect(hex(probe.steps[0]!.frame)).toBe(hex(buildFrame(parseExpectationText("tcPolicy", "egress udp 10.0.0.1:33000 > 192.0.2.53:53: pass"))));
  });

  it("puts expectations that share a flow (either direction) in separate rounds, keeping their order", () => {
    const rounds = probeRounds(tc([
      "ingress tcp 192.0.2.9:443 > 10.0.0.1:41000 syn ack: drop",
      "ingress reply tcp 192.0.2.9:443 > 10.0.0.1:41000: pass",
      "egress tcp 10.0.0.1:41000 > 192.0.2.9:443: pass",
      "ingress tcp 192.0.2.9:443 > 10.0.0.1:41001: drop",
      "ingress icmp 192.0.2.9 > 10.0.0.1: drop",
      "egress icmp 10.0.0.1 > 192.0.2.9: pass",
    ]));
    expect(rounds.map((r) => r.map((p) => expectationText(p.expectation)))).toEqual([
      ["ingress tcp 192.0.2.9:443 > 10.0.0.1:41000 syn ack: drop", "ingress tcp 192.0.2.9:443 > 10.0.0.1:41001 syn: drop", "ingress icmp 192.0.2.9 > 10.0.0.1: drop"],
      ["ingress reply tcp 192.0.2.9:443 > 10.0.0.1:41000 syn ack: pass", "egress icmp 10.0.0.1 > 192.0.2.9: pass"],
      ["egress tcp 10.0.0.1:41000 > 192.0.2.9:443 syn: pass"],
    ]);
  });

  it("needs one round for kinds without flows", () => {
    const texts = ["udp 192.0.2.9:53 > 10.0.0.1:40000: drop", "udp 192.0.2.9:53 > 10.0.0.1:40000: pass"];
    expect(probeRounds(texts.map((t) => parseExpectationText("xdpFirewall", t))).map((r) => r.length)).toEqual([2]);
  });
});
