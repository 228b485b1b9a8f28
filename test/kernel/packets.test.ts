// The packet builders are what every kernel test trusts, so they are checked
// against published checksum examples and against tcpdump's own verifier.
import { execFileSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import {
  arp, checksumsValid, dissect, ETH_P, ethernet, icmpv4, icmpv6, internetChecksum, ipv4, ipv4Bytes, ipv6,
  ipv6Bytes, tcp, udp, writePcap,
} from "./packets";

const hasTcpdump = (() => {
  try {
    execFileSync("tcpdump", ["--version"], { stdio: "ignore" });
    return true;
  } catch {
    return false;
  }
})();

describe("internetChecksum", () => {
  it("matches RFC 1071's worked example", () => {
    // RFC 1071 §3: the sum of 0001 f203 f4f5 f6f7 is ddf2, so the checksum is 220d.
    expect(internetChecksum(Buffer.from("0001f203f4f5f6f7", "hex"))).toBe(0x220d);
  });

  it("matches a textbook IPv4 header checksum", () => {
    const header = Buffer.from("450000730000400040110000c0a80001c0a800c7", "hex");
    expect(internetChecksum(header)).toBe(0xb861);
  });

  it("pads an odd trailing byte with zero", () => {
    expect(internetChecksum(Buffer.from([0x01]))).toBe(~0x0100 & 0xffff);
  });
});

describe("addresses", () => {
  it.each([
    ["::", "00000000000000000000000000000000"],
    ["2001:db8::9", "20010db8000000000000000000000009"],
    ["fe80::1:2", "fe800000000000000000000000010002"],
    ["1:2:3:4:5:6:7:8", "00010002000300040005000600070008"],
    ["::ffff:192.0.2.1", "00000000000000000000ffffc0000201"],
  ])("expands %s", (addr, hexBytes) => {
    expect(ipv6Bytes(addr).toString("hex")).toBe(hexBytes);
  });

  it("rejects what is not an address", () => {
    expect(() => ipv4Bytes("192.0.2")).toThrow(/not an IPv4/);
    expect(() => ipv6Bytes("2001:db8:::1")).toThrow(/not an IPv6/);
  });
});

describe("builders", () => {
  it("lays out IPv4 with options: IHL, total length, offsets", () => {
    const frame = ethernet({
      vlans: [{ vid: 100, tpid: ETH_P.QINQ }, { vid: 7 }],
      etherType: ETH_P.IP,
      payload: ipv4({ src: "192.0.2.1", dst: "198.51.100.2", options: Buffer.from([0x94, 0x04, 0, 0, 1]), payload: udp({ srcPort: 1, dstPort: 2 }) }),
    });
    const d = dissect(frame);
    expect(d.vlanIds).toEqual([100, 7]);
    expect(d.l3Offset).toBe(22);
    expect(frame[22]! & 0x0f).toBe(7); // 20 + 8 bytes of (padded) options
    expect(frame.readUInt16BE(24)).toBe(28 + 8);
    expect(d.l4Offset).toBe(22 + 28);
    expect(checksumsValid(frame)).toEqual({ ipv4Header: true, l4: true });
  });

  it("notices a corrupted byte", () => {
    const frame = ethernet({ etherType: ETH_P.IP, payload: ipv4({ src: "192.0.2.1", dst: "198.51.100.2", payload: tcp({ srcPort: 1, dstPort: 2, payload: Buffer.from("x") }) }) });
    const bad = Buffer.from(frame);
    bad.writeUInt8(bad.readUInt8(bad.length - 1) ^ 0xff, bad.length - 1);
    expect(checksumsValid(bad)).toEqual({ ipv4Header: true, l4: false });
    bad.writeUInt8(bad.readUInt8(14 + 8) ^ 0x01, 14 + 8); // TTL
    expect(checksumsValid(bad).ipv4Header).toBe(false);
  });
});

describe.skipIf(!hasTcpdump)("checksums agree with tcpdump" + (hasTcpdump ? "" : " (skipped: tcpdump not installed)"), () => {
  function tcpdump(frames: Buffer[]): string[] {
    const dir = mkdtempSync(join(tmpdir(), "bpfleet-pcap-"));
    try {
      const file = join(dir, "t.pcap");
      writePcap(file, frames);
      const out = execFileSync("tcpdump", ["-nn", "-vvv", "-r", file], { stdio: ["ignore", "pipe", "ignore"] }).toString();
      // One record per frame; continuation lines start with whitespace.
      return out.split(/\n(?=\d\d:)/).filter((r) => r.trim() !== "");
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }

  const v4 = (payload: Parameters<typeof ipv4>[0]["payload"], options?: Buffer) =>
    ethernet({ etherType: ETH_P.IP, payload: ipv4({ src: "192.0.2.1", dst: "198.51.100.2", payload, options }) });
  const v6 = (payload: Parameters<typeof ipv6>[0]["payload"]) =>
    ethernet({ etherType: ETH_P.IPV6, vlans: [{ vid: 5 }], payload: ipv6({ src: "2001:db8::1", dst: "2001:db8:1::2", payload }) });

  it("finds every checksum we compute correct", () => {
    const records = tcpdump([
      v4(udp({ srcPort: 5353, dstPort: 9, payload: Buffer.from("odd") })),
      v4(tcp({ srcPort: 40000, dstPort: 22, flags: { syn: true }, options: Buffer.from([2, 4, 0x05, 0xb4]) }), Buffer.from([0x94, 4, 0, 0])),
      v4(icmpv4({ type: 8, id: 7, sequence: 1, payload: Buffer.from("ping!") })),
      v6(udp({ srcPort: 5353, dstPort: 9, payload: Buffer.from("v6") })),
      v6(tcp({ srcPort: 40000, dstPort: 443, flags: { ack: true, psh: true }, payload: Buffer.from("hello") })),
      v6(icmpv6({ type: 128, id: 7, sequence: 1, payload: Buffer.from("ping") })),
    ]);
    expect(records).toHaveLength(6);
    for (const r of records) expect(r).not.toMatch(/bad|incorrect|wrong/i);
    expect(records[0]).toMatch(/udp sum ok/);
    expect(records[1]).toMatch(/cksum 0x[0-9a-f]+ \(correct\)/);
    expect(records[3]).toMatch(/udp sum ok/);
    expect(records[4]).toMatch(/cksum 0x[0-9a-f]+ \(correct\)/);
    expect(records[5]).toMatch(/icmp6 sum ok/);
  });

  it("flags checksums we deliberately break (so the check above can fail)", () => {
    const records = tcpdump([
      ethernet({ etherType: ETH_P.IP, payload: ipv4({ src: "192.0.2.1", dst: "198.51.100.2", checksum: 0x1234, payload: udp({ srcPort: 1, dstPort: 9, checksum: 0x4321 }) }) }),
    ]);
    expect(records[0]).toMatch(/bad cksum 1234/);
    expect(records[0]).toMatch(/bad udp cksum 0x4321/);
  });

  it("builds ARP that tcpdump decodes", () => {
    const [r] = tcpdump([
      ethernet({ dst: "ff:ff:ff:ff:ff:ff", etherType: ETH_P.ARP, payload: arp({ op: "request", senderMac: "02:00:00:00:00:01", senderIp: "192.0.2.1", targetIp: "192.0.2.254" }) }),
    ]);
    expect(r).toMatch(/Request who-has 192\.0\.2\.254 tell 192\.0\.2\.1/);
  });
});
