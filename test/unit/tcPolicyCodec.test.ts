// The codec against the C structs of bpf/include/tc_policy.h, byte for byte.
// Expected bytes are written out by hand from the header (offsets in the
// comments); test/kernel/tcPolicy.test.ts checks LAYOUTS against the BTF of
// the compiled object and runs these encodings through the programs.
import { describe, expect, it } from "vitest";
import {
  SKIP_HOST_TRIE, decodeConfig, decodeFlowKey, decodeFlowValue, decodeL4Key, decodePrefixKey, decodeRule, decodeRuleSet, EMPTY_RULE, encodeConfig,
  encodeFlowKey, encodeFlowValue, encodeL4Key, encodePrefixKey, encodeRule, encodeRuleSet, FLOW_FLAG, LAYOUTS, secondsToNs,
  sumU64, type PolicyConfig,
} from "../../provider/tcPolicy/codec";
import { parsePrefix } from "../../provider/cidr";
import { parseRuleText } from "../../provider/tcPolicy/schema";

const hex = (b: Uint8Array) => Buffer.from(b).toString("hex");
const le64 = (n: bigint) => { const b = Buffer.alloc(8); b.writeBigUInt64LE(n); return b.toString("hex"); };

describe("struct tcpol_config (176 bytes)", () => {
  const config: PolicyConfig = {
    tcpEstablishedNs: secondsToNs(21600),
    tcpTransitoryNs: secondsToNs(120),
    otherNs: secondsToNs(0.05),
    ingressDefault: "deny",
    egressDefault: "allow",
    stateful: true,
    failsafePort: 22,
    failsafePeer: "192.0.2.10",
    denyRules: new Set([0, 63, 64, 1023]),
    skipTries: SKIP_HOST_TRIE.ingress | SKIP_HOST_TRIE.egress,
  };

  it("lays out timeouts (u64 LE), defaults, failsafe (port big-endian) and the deny mask", () => {
    const bytes = encodeConfig(config);
    expect(bytes.length).toBe(LAYOUTS.tcpol_config.size);
    const h = hex(bytes);
    expect(h.slice(0, 16)).toBe(le64(21_600_000_000_000n)); // tcp_established_ns @0
    expect(h.slice(16, 32)).toBe(le64(120_000_000_000n)); // tcp_transitory_ns @8
    expect(h.slice(32, 48)).toBe(le64(50_000_000n)); // other_ns @16
    expect(h.slice(48, 64)).toBe("01" + "00" + "01" + "04" + "0016" + "03" + "00"); // ingress_default, egress_default, stateful, failsafe_family, failsafe_port (BE), skip_tries (both directions), pad
    expect(h.slice(64, 96)).toBe("c000020a" + "00".repeat(12)); // failsafe_addr @32
    const mask = h.slice(96); // deny_mask @48, 16 u64 LE words
    expect(mask.length).toBe(256);
    expect(mask.slice(0, 16)).toBe("0100000000000080"); // bits 0 and 63
    expect(mask.slice(16, 32)).toBe("0100000000000000"); // bit 64
    expect(mask.slice(240, 256)).toBe("0000000000000080"); // bit 1023
  });

  it("round-trips, IPv6 failsafe peer included", () => {
    expect(decodeConfig(encodeConfig(config))).toEqual(config);
    const v6 = { ...config, failsafePeer: "2001:db8::10", failsafePort: 2222 };
    const bytes = encodeConfig(v6);
    expect(bytes[27]).toBe(6);
    expect(hex(bytes.subarray(32, 48))).toBe("20010db8000000000000000000000010");
    expect(decodeConfig(bytes)).toEqual(v6);
    const none = { ...config, failsafePort: 0, failsafePeer: undefined };
    delete none.failsafePeer;
    expect(decodeConfig(encodeConfig(none))).toEqual(none);
  });

  it("decodes an all-zero map value as allow-everything and stateless", () => {
    expect(decodeConfig(new Uint8Array(176))).toEqual({
      tcpEstablishedNs: 0n, tcpTransitoryNs: 0n, otherNs: 0n, ingressDefault: "allow", egressDefault: "allow", stateful: false, failsafePort: 0, denyRules: new Set(), skipTries: 0,
    });
  });
});

describe("struct tcpol_rule (44 bytes)", () => {
  it("encodes action, direction, protocol, family, ports (LE), prefix lengths, flags and addresses", () => {
    const bytes = encodeRule(parseRuleText("egress", "deny tcp 1000-2000 from 192.0.2.0/24 to 10.0.0.0/8"));
    expect(bytes.length).toBe(44);
    expect(hex(bytes)).toBe(
      "02" + "01" + "06" + "04" + // action deny, egress, tcp, IPv4
        "e803" + "d007" + // port_lo 1000, port_hi 2000
        "18" + "08" + "03" + "00" + // src_len 24, dst_len 8, flags src|dst, pad
        "c0000200" + "00".repeat(12) + // src @12
        "0a000000" + "00".repeat(12), // dst @28
    );
  });

  it("encodes a rule for both families without ports or prefixes", () => {
    expect(hex(encodeRule(parseRuleText("ingress", "allow icmp")))).toBe("01000100" + "00".repeat(40));
    expect(hex(encodeRule(parseRuleText("ingress", "allow udp 53 to 2001:db8::/32")))).toBe(
      "01001106" + "3500" + "3500" + "00" + "20" + "02" + "00" + "00".repeat(16) + "20010db8" + "00".repeat(12),
    );
  });

  it.each(["allow tcp 22", "deny udp 5000-6000 from 10.0.0.0/8", "deny icmp from 2001:db8::/32", "allow any to 192.0.2.0/24", "deny tcp 443 from 2001:db8::/48 to 2001:db8:1::/64"])(
    "round-trips %s in both directions",
    (text) => {
      for (const direction of ["ingress", "egress"] as const) {
        const rule = parseRuleText(direction, text);
        expect(decodeRule(encodeRule(rule))).toEqual(rule);
      }
    },
  );

  it("reads an all-zero slot as free and refuses bytes no encoder writes", () => {
    expect(decodeRule(EMPTY_RULE)).toBeUndefined();
    const bad = encodeRule(parseRuleText("ingress", "allow tcp 22"));
    bad[2] = 99;
    expect(() => decodeRule(bad)).toThrow(/no version of bpfleet wrote/);
  });
});

describe("trie keys and values", () => {
  it("struct tcpol_l4_key: LE prefix length, direction, protocol, BE port; bits past the prefix are zero", () => {
    expect(hex(encodeL4Key({ direction: "ingress", protocol: 6, port: 8080, prefixLength: 32 }))).toBe("20000000" + "00" + "06" + "1f90");
    expect(hex(encodeL4Key({ direction: "egress", protocol: 17, port: 5000, prefixLength: 16 }))).toBe("10000000" + "01" + "11" + "0000");
    expect(hex(encodeL4Key({ direction: "egress", protocol: 17, port: 0x1388, prefixLength: 16 + 12 }))).toBe("1c000000" + "01" + "11" + "1380");
    expect(hex(encodeL4Key({ direction: "ingress", protocol: 6, port: 22, prefixLength: 8 }))).toBe("08000000" + "00" + "00" + "0000");
    const key = { direction: "egress" as const, protocol: 6, port: 1024, prefixLength: 22 };
    expect(decodeL4Key(encodeL4Key(key))).toEqual(key);
  });

  it("struct tcpol_v4_prefix / tcpol_v6_prefix: LE prefix length, then the network address", () => {
    expect(hex(encodePrefixKey(parsePrefix("203.0.113.0/24")))).toBe("18000000cb007100");
    expect(hex(encodePrefixKey(parsePrefix("0.0.0.0/0")))).toBe("0000000000000000");
    expect(hex(encodePrefixKey(parsePrefix("2001:db8::/32")))).toBe("2000000020010db8000000000000000000000000");
    expect(decodePrefixKey(Uint8Array.from(Buffer.from("080000000a010203", "hex")))).toBe("10.0.0.0/8");
  });

  it("struct tcpol_rule_set: rule i is bit i % 64 of little-endian word i / 64", () => {
    const bytes = encodeRuleSet([0, 9, 63, 64, 1023]);
    expect(bytes.length).toBe(128);
    expect(hex(bytes.subarray(0, 8))).toBe("0102000000000080");
    expect(hex(bytes.subarray(8, 16))).toBe("0100000000000000");
    expect(bytes[127]).toBe(0x80);
    const words = new BigUint64Array(bytes.buffer.slice(0));
    expect(words[0]).toBe((1n << 0n) | (1n << 9n) | (1n << 63n));
    expect(decodeRuleSet(bytes)).toEqual([0, 9, 63, 64, 1023]);
    expect(() => encodeRuleSet([1024])).toThrow(/outside 0..1023/);
  });
});

describe("flows", () => {
  it("struct tcpol_flow_key (40 bytes): local, remote, BE ports, protocol, family", () => {
    const key = { family: 4 as const, protocol: 6, local: "10.0.0.1", remote: "198.51.100.10", localPort: 41000, remotePort: 443 };
    const bytes = encodeFlowKey(key);
    expect(hex(bytes)).toBe("0a000001" + "00".repeat(12) + "c633640a" + "00".repeat(12) + "a028" + "01bb" + "06" + "04" + "0000");
    expect(decodeFlowKey(bytes)).toEqual(key);
    const v6 = { family: 6 as const, protocol: 58, local: "2001:db8:1::1", remote: "2001:db8::1", localPort: 9, remotePort: 9 };
    expect(decodeFlowKey(encodeFlowKey(v6))).toEqual(v6);
  });

  it("struct tcpol_flow (32 bytes): last seen (LE ns), state, flags; the reserved 16 bytes stay zero", () => {
    const value = { lastSeenNs: 123456789012345n, state: "established" as const, flags: FLOW_FLAG.originEgress | FLOW_FLAG.seenEgress | FLOW_FLAG.seenIngress };
    const bytes = encodeFlowValue(value);
    expect(hex(bytes)).toBe(le64(123456789012345n) + "01" + "0d" + "00".repeat(6) + "00".repeat(16));
    expect(decodeFlowValue(bytes)).toEqual(value);
  });
});

describe("counters", () => {
  it("sums per-CPU __u64 hits", () => {
    const u64 = (n: number) => { const b = new Uint8Array(8); new DataView(b.buffer).setBigUint64(0, BigInt(n), true); return b; };
    expect(sumU64([u64(5), u64(7)])).toBe(12);
  });
});
