// provider/maglev/codec.ts against the structs of bpf/include/maglev.h, byte
// by byte. The expected bytes are written out by hand from the C declarations
// (offsets in the comments); test/kernel/maglev.test.ts checks the same
// offsets against the compiled object's BTF.
import { describe, expect, it } from "vitest";
import { batchText } from "../../provider/remote/mapOperations";
import {
  backendIdentity, CodecError, decodeBackend, decodeConfig, decodeFlowKey, decodeIndex, decodeNatOrigin, decodeVip, decodeVipKey,
  encodeBackend, encodeConfig, encodeFlowKey, encodeIndex, encodeVip, encodeVipKey, LB_STATS, NO_BACKEND_INDEX, SIZES,
  tableOperations,
} from "../../provider/maglev/codec";
import { buildTable, diffTable } from "../../provider/maglev/table";

const hex = (b: Uint8Array) => Buffer.from(b).toString("hex");
const zeros = (n: number) => "00".repeat(n);

describe("struct lb_vip_key { u8 addr[16]; be16 port; u8 proto; u8 family; } (20 bytes)", () => {
  it("puts an IPv4 address in the first 4 bytes, the port big-endian, then protocol and family", () => {
    const key = encodeVipKey({ address: "198.51.100.10", port: 80, protocol: "tcp" });
    expect(key).toHaveLength(SIZES.vipKey);
    //                   addr[0..3]  addr[4..15]  port  proto family
    expect(hex(key)).toBe("c633640a" + zeros(12) + "0050" + "06" + "04");
  });

  it("encodes IPv6 and UDP", () => {
    expect(hex(encodeVipKey({ address: "2001:db8:100::10", port: 443, protocol: "udp" }))).toBe(
      "20010db8010000000000000000000010" + "01bb" + "11" + "06",
    );
  });

  it.each([
    { address: "198.51.100.10", port: 80, protocol: "tcp" as const },
    { address: "2001:db8::1", port: 65535, protocol: "udp" as const },
  ])("round-trips %j", (vip) => {
    expect(decodeVipKey(encodeVipKey(vip))).toEqual(vip);
  });

  it("canonicalises the address text", () => {
    expect(decodeVipKey(encodeVipKey({ address: "2001:DB8:0::1", port: 1, protocol: "tcp" })).address).toBe("2001:db8::1");
  });

  it("refuses prefixes, bad ports and other protocols", () => {
    expect(() => encodeVipKey({ address: "10.0.0.0/8", port: 80, protocol: "tcp" })).toThrow(CodecError);
    expect(() => encodeVipKey({ address: "10.0.0.1", port: 65536, protocol: "tcp" })).toThrow(/port number/);
    expect(() => encodeVipKey({ address: "10.0.0.1", port: 80, protocol: "sctp" as never })).toThrow(/tcp or udp/);
    expect(() => encodeVipKey({ address: "example.com", port: 80, protocol: "tcp" })).toThrow(/not an IPv4 or IPv6 address/);
  });
});

describe("struct lb_vip { u32 vip_index; u32 table_offset; u32 table_size; u8 mode; u8 flags; u16 reserved; } (16 bytes)", () => {
  it("writes little-endian indexes, the mode code and the flow-table flag", () => {
    const value = encodeVip({ vipIndex: 3, tableOffset: 65537, tableSize: 65537, mode: "nat", flowTable: true });
    expect(value).toHaveLength(SIZES.vip);
    //                    vip_index  table_offset table_size mode flags reserved
    expect(hex(value)).toBe("03000000" + "01000100" + "01000100" + "02" + "01" + "0000");
    expect(hex(encodeVip({ vipIndex: 0, tableOffset: 0, tableSize: 13, mode: "dsr", flowTable: false }))).toBe(zeros(8) + "0d000000" + "01" + "00" + "0000");
    expect(encodeVip({ vipIndex: 0, tableOffset: 0, tableSize: 13, mode: "ipip", flowTable: false })[12]).toBe(3);
  });

  it("round-trips", () => {
    const vip = { vipIndex: 255, tableOffset: 983_055, tableSize: 65537, mode: "ipip" as const, flowTable: false };
    expect(decodeVip(encodeVip(vip))).toEqual(vip);
  });

  it("refuses a VIP index past the counters and a table past the table map", () => {
    expect(() => encodeVip({ vipIndex: 256, tableOffset: 0, tableSize: 13, mode: "dsr", flowTable: false })).toThrow(/vipIndex/);
    expect(() => encodeVip({ vipIndex: 0, tableOffset: 1_000_000, tableSize: 65537, mode: "dsr", flowTable: false })).toThrow(/ends past the 1048592 slots/);
  });
});

describe("struct lb_backend { u8 addr[16]; be16 port; u8 family; u8 flags; u8 mac[6]; u16 mtu; } (28 bytes)", () => {
  it("writes address, port, family, the static-MAC flag and the MAC", () => {
    const value = encodeBackend({ address: "10.0.0.11", port: 8080, mac: "02:00:00:00:00:AB" });
    expect(value).toHaveLength(SIZES.backend);
    //                    addr                      port   family flags  mac             mtu
    expect(hex(value)).toBe("0a00000b" + zeros(12) + "1f90" + "04" + "01" + "0200000000ab" + "0000");
  });

  it("leaves the flag and MAC zero without a static MAC, and keeps port 0 (the VIP's port)", () => {
    expect(hex(encodeBackend({ address: "fd00::11", port: 0 }))).toBe("fd000000000000000000000000000011" + "0000" + "06" + "00" + zeros(6) + "0000");
  });

  it("writes the next-hop cache: flag 0x02 and the MTU (little-endian) after the MAC", () => {
    const value = encodeBackend({ address: "10.0.0.11", port: 0, mac: "02:00:00:00:00:ab", mtu: 1500 });
    expect(hex(value)).toBe("0a00000b" + zeros(12) + "0000" + "04" + "03" + "0200000000ab" + "dc05");
  });

  it("refuses a next-hop MTU without a MAC or outside 68..65535", () => {
    expect(() => encodeBackend({ address: "10.0.0.1", port: 1, mtu: 1500 })).toThrow(/needs the next hop's MAC/);
    expect(() => encodeBackend({ address: "10.0.0.1", port: 1, mac: "02:00:00:00:00:01", mtu: 67 })).toThrow(/MTU 67 is not an integer from 68 to 65535/);
    expect(() => encodeBackend({ address: "10.0.0.1", port: 1, mac: "02:00:00:00:00:01", mtu: 65536 })).toThrow(/MTU 65536/);
  });

  it("encodes a cleared record as all zeros, which decodes as no backend", () => {
    expect(hex(encodeBackend(undefined))).toBe(zeros(28));
    expect(decodeBackend(new Uint8Array(28))).toBeUndefined();
  });

  it.each([
    { address: "10.0.0.11", port: 8080, mac: "02:00:00:00:00:ab" },
    { address: "fd00::11", port: 0 },
    { address: "fd00::11", port: 0, mac: "02:00:00:00:00:ab", mtu: 9000 },
  ])("round-trips %j", (record) => {
    expect(decodeBackend(encodeBackend(record))).toEqual(record);
  });

  it("refuses a malformed MAC", () => {
    expect(() => encodeBackend({ address: "10.0.0.1", port: 1, mac: "02:00:00:00:00" })).toThrow(/not a MAC address/);
  });
});

describe("maglev_table and array keys: u32 little-endian", () => {
  it("encodes indexes", () => {
    expect(hex(encodeIndex(1))).toBe("01000000");
    expect(hex(encodeIndex(65537))).toBe("01000100");
    expect(decodeIndex(encodeIndex(0xfffffffe))).toBe(0xfffffffe);
    expect(NO_BACKEND_INDEX).toBe(0);
  });

  it("writes the changed slots of a table at its offset, naming backends by index and 'none' as 0", () => {
    const before = buildTable([{ id: "a" }, { id: "b" }], 13);
    const after = buildTable([{ id: "a" }], 13);
    const changes = diffTable(before, after);
    const ops = tableOperations(changes, 26, (id) => ({ a: 1, b: 2 })[id]!, "/sys/fs/bpf/bpfleet/maglev/web/maps/maglev_table");
    expect(ops).toHaveLength(changes.length);
    expect(ops.every((o) => o.op === "update" && hex(o.value) === "01000000")).toBe(true);
    expect(ops.map((o) => decodeIndex(o.key))).toEqual(changes.map((c) => 26 + c.slot));
    const cleared = tableOperations(diffTable(after, buildTable([], 13)), 0, () => 1, "/sys/fs/bpf/x/maglev_table");
    expect(batchText(cleared.slice(0, 1))).toBe("map update pinned /sys/fs/bpf/x/maglev_table key hex 00 00 00 00 value hex 00 00 00 00\n");
  });
});

describe("struct lb_flow_key { u8 src[16]; u8 dst[16]; be16 sport; be16 dport; u8 proto; u8 family; u16 reserved; } (40 bytes)", () => {
  it("encodes a flow", () => {
    const key = encodeFlowKey({ src: "192.0.2.7", dst: "198.51.100.10", srcPort: 40000, dstPort: 80, protocol: "udp" });
    expect(key).toHaveLength(SIZES.flowKey);
    expect(hex(key)).toBe("c0000207" + zeros(12) + "c633640a" + zeros(12) + "9c40" + "0050" + "11" + "04" + "0000");
  });

  it("round-trips, and refuses a flow that mixes families", () => {
    const flow = { src: "2001:db8:c::7", dst: "2001:db8:100::10", srcPort: 1, dstPort: 2, protocol: "tcp" as const };
    expect(decodeFlowKey(encodeFlowKey(flow))).toEqual(flow);
    expect(() => encodeFlowKey({ ...flow, src: "10.0.0.1" })).toThrow(/mixes address families/);
  });
});

describe("struct lb_nat_origin { u8 vip_addr[16]; be16 vip_port; u16 reserved; u32 vip_index; } (24 bytes)", () => {
  it("decodes the VIP a reply must come from", () => {
    const value = Buffer.from("c633640a" + zeros(12) + "0050" + "0000" + "05000000", "hex");
    expect(value).toHaveLength(SIZES.natOrigin);
    expect(decodeNatOrigin(value, 4)).toEqual({ vipAddress: "198.51.100.10", vipPort: 80, vipIndex: 5 });
  });
});

describe("struct lb_config { u32 flags; u8 tunnel_src_v4[4]; u8 tunnel_src_v6[16]; } (24 bytes)", () => {
  it("encodes the reverse-NAT flag and the tunnel sources", () => {
    expect(hex(encodeConfig({ reverseNat: true }))).toBe("01000000" + zeros(20));
    const full = encodeConfig({ reverseNat: false, tunnelSourceV4: "10.9.9.9", tunnelSourceV6: "fd00::9" });
    expect(hex(full)).toBe("00000000" + "0a090909" + "fd000000000000000000000000000009");
    expect(decodeConfig(full)).toEqual({ reverseNat: false, tunnelSourceV4: "10.9.9.9", tunnelSourceV6: "fd00::9" });
  });

  it("refuses a tunnel source of the wrong family", () => {
    expect(() => encodeConfig({ reverseNat: false, tunnelSourceV4: "fd00::9" })).toThrow(/not an IPv4 address/);
    expect(() => encodeConfig({ reverseNat: false, tunnelSourceV6: "10.0.0.1" })).toThrow(/not an IPv6 address/);
  });
});

describe("counters", () => {

  it("lists enum lb_stat in index order", () => {
    expect(LB_STATS).toEqual(["notVip", "noBackend", "tx", "redirect", "stack", "fibDrop", "staticMac", "reverseNat", "flowHit", "encapFail"]);
  });
});

describe("backend identity (the Maglev hash input)", () => {
  it("is the canonical address and port, IPv6 in brackets", () => {
    expect(backendIdentity("10.0.0.2", 8080)).toBe("10.0.0.2:8080");
    expect(backendIdentity("2001:DB8:0:0::2", 80)).toBe("[2001:db8::2]:80");
    expect(() => backendIdentity("10.0.0.0/24", 80)).toThrow(CodecError);
  });
});
