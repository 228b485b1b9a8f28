import { describe, expect, it } from "vitest";
import { batchText } from "../../provider/remote/bpfHost";
import { decodeDenyEntry, encodeDenyEntry } from "../../provider/xdpFirewall/codec";
import { denyOperations, planDeny } from "../../provider/xdpFirewall/plan";

const hex = (b: Uint8Array) => Buffer.from(b).toString("hex");

describe("deny entry codec", () => {
  it("puts exact addresses in the hash maps, keyed by wire bytes", () => {
    expect(encodeDenyEntry("192.0.2.9/32")).toEqual({ map: "deny_v4_exact", key: Uint8Array.of(192, 0, 2, 9) });
    const v6 = encodeDenyEntry("2001:db8::1/128");
    expect(v6.map).toBe("deny_v6_exact");
    expect(hex(v6.key)).toBe("20010db8000000000000000000000001");
  });

  it("puts prefixes in the LPM tries: little-endian u32 length, then the address", () => {
    const v4 = encodeDenyEntry("203.0.113.0/24");
    expect(v4.map).toBe("deny_v4_prefix");
    expect(hex(v4.key)).toBe("18000000cb007100");
    const v6 = encodeDenyEntry("2001:db8::/32");
    expect(v6.map).toBe("deny_v6_prefix");
    expect(hex(v6.key)).toBe("2000000020010db8000000000000000000000000");
  });

  it.each(["192.0.2.9/32", "203.0.113.0/24", "0.0.0.0/0", "2001:db8::1/128", "2001:db8::/32", "::/0"])("round-trips %s", (entry) => {
    const { map, key } = encodeDenyEntry(entry);
    expect(decodeDenyEntry(map, key)).toBe(entry);
  });

  it("normalises a hand-written prefix key with host bits set", () => {
    expect(decodeDenyEntry("deny_v4_prefix", Uint8Array.of(8, 0, 0, 0, 10, 1, 2, 3))).toBe("10.0.0.0/8");
  });

});

describe("planning", () => {
  it("adds what is missing and removes what is extra", () => {
    expect(planDeny(["a", "b", "c"], ["b", "c", "d"])).toEqual({ add: ["a"], remove: ["d"] });
    expect(planDeny(["a"], ["a"])).toEqual({ add: [], remove: [] });
  });

  it("writes additions before deletions, one bpftool batch line each", () => {
    const ops = denyOperations({ add: ["10.0.0.1/32"], remove: ["10.0.0.0/8"] }, (m) => `/sys/fs/bpf/bpfleet/xdp-firewall/fw/maps/${m}`);
    expect(batchText(ops)).toBe(
      "map update pinned /sys/fs/bpf/bpfleet/xdp-firewall/fw/maps/deny_v4_exact key hex 0a 00 00 01 value hex 01\n" +
        "map delete pinned /sys/fs/bpf/bpfleet/xdp-firewall/fw/maps/deny_v4_prefix key hex 08 00 00 00 0a 00 00 00\n",
    );
  });
});
