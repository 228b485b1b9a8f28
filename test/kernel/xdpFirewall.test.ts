// bpf/xdp_firewall.bpf.c in the running kernel: it loads, its maps are the
// layout the provider writes, and BPF_PROG_TEST_RUN gives the verdict we
// promise for each crafted packet.
import { execFileSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  arp, ETH_P, ethernet, icmpv4, icmpv6, ipBytes, ipFrame, ipv4, ipv6, tcp, udp, type Segment, type VlanTag,
} from "./packets";
import {
  decodeDenyEntry, DENY_MAPS, DENY_VALUE as CODEC_DENY_VALUE, encodeDenyEntry, STATS_MAP,
} from "../../provider/xdpFirewall/codec";
import {
  buildObjects, kernelTestsUnavailable, loadProgram, objectPath, sumCounters, withProgram, XDP,
  type LoadedProgram,
} from "./progRun";
import { sumCounters as codecSumCounters } from "../../provider/counters";

const unavailable = kernelTestsUnavailable();
if (unavailable) console.warn(`test/kernel/xdpFirewall: skipped: ${unavailable}`);

const OBJ = objectPath("xdp_firewall");
const DENY_VALUE = Buffer.from([1]);
const FW_STAT_PASS = 0;
const FW_STAT_DROP = 1;

/** Map keys as the provider writes them: addresses as on the wire; prefix
 * keys are a little-endian u32 prefix length followed by the address. */
function exactKey(addr: string): Buffer {
  return ipBytes(addr);
}
function prefixKey(cidr: string): Buffer {
  const [addr, len] = cidr.split("/");
  const key = Buffer.alloc(4);
  key.writeUInt32LE(Number(len), 0);
  return Buffer.concat([key, ipBytes(addr!)]);
}
const statKey = (i: number) => Buffer.from([i, 0, 0, 0]);

async function deny(fw: LoadedProgram, entries: { v4?: string[]; v6?: string[]; v4Prefix?: string[]; v6Prefix?: string[] }) {
  const e = (keys: Buffer[]) => keys.map((key) => ({ key, value: DENY_VALUE }));
  await fw.updateMap("deny_v4_exact", e((entries.v4 ?? []).map(exactKey)));
  await fw.updateMap("deny_v6_exact", e((entries.v6 ?? []).map(exactKey)));
  await fw.updateMap("deny_v4_prefix", e((entries.v4Prefix ?? []).map(prefixKey)));
  await fw.updateMap("deny_v6_prefix", e((entries.v6Prefix ?? []).map(prefixKey)));
}

const probe = (): Segment => udp({ srcPort: 40000, dstPort: 53, payload: Buffer.from("probe") });
const from = (src: string, o: { dst?: string; vlans?: VlanTag[]; seg?: Segment } = {}) =>
  ipFrame({ src, dst: o.dst ?? (src.includes(":") ? "2001:db8:1::1" : "10.0.0.1"), vlans: o.vlans, payload: o.seg ?? probe() });

describe.skipIf(unavailable !== undefined)("xdp_firewall", { timeout: 60_000 }, () => {
  beforeAll(buildObjects, 120_000);

  describe("object", () => {
    let fw: LoadedProgram;
    beforeAll(async () => {
      fw = await loadProgram(OBJ);
    });
    afterAll(() => fw?.close());

    it("passes the verifier and is JIT-compiled as an XDP program", async () => {
      const info = await fw.progInfo();
      expect(info.type).toBe("xdp");
      expect(info.name).toBe("xdp_firewall");
      expect(info.jited).toBe(true);
      expect(info.bytes_xlated).toBeGreaterThan(0);
      expect(info.map_ids).toHaveLength(7);
    });

    it("pins exactly its seven maps (five of its own, two of the XDP chain), with the types, sizes and flags the provider relies on", async () => {
      expect(fw.mapNames()).toEqual(["deny_v4_exact", "deny_v4_prefix", "deny_v6_exact", "deny_v6_prefix", "fw_stats", "xdp_chain", "xdp_chain_next"]);
      const NO_PREALLOC = 1;
      const expected = {
        deny_v4_exact: { type: "hash", flags: NO_PREALLOC, bytes_key: 4, bytes_value: 1, max_entries: 1048576 },
        deny_v6_exact: { type: "hash", flags: NO_PREALLOC, bytes_key: 16, bytes_value: 1, max_entries: 1048576 },
        deny_v4_prefix: { type: "lpm_trie", flags: NO_PREALLOC, bytes_key: 8, bytes_value: 1, max_entries: 262144 },
        deny_v6_prefix: { type: "lpm_trie", flags: NO_PREALLOC, bytes_key: 20, bytes_value: 1, max_entries: 262144 },
        fw_stats: { type: "percpu_array", flags: 0, bytes_key: 4, bytes_value: 16, max_entries: 2 },
        xdp_chain: { type: "prog_array", bytes_key: 4, bytes_value: 4, max_entries: 8 },
        xdp_chain_next: { type: "array", bytes_key: 4, bytes_value: 4, max_entries: 1 },
      };
      for (const [name, want] of Object.entries(expected)) {
        expect(await fw.mapInfo(name), name).toMatchObject({ name, ...want });
      }
    });

    it("has the struct layouts of bpf/include/xdp_firewall.h in its BTF", () => {
      const btf = JSON.parse(execFileSync("bpftool", ["-j", "btf", "dump", "file", OBJ]).toString()) as {
        types: { kind: string; name?: string; size?: number; members?: { name: string; bits_offset: number }[] }[];
      };
      const layout = (name: string) => {
        const t = btf.types.find((x) => x.kind === "STRUCT" && x.name === name);
        return { size: t?.size, members: t?.members?.map((m) => [m.name, m.bits_offset / 8]) };
      };
      expect(layout("fw_v4_prefix_key")).toEqual({ size: 8, members: [["prefixlen", 0], ["addr", 4]] });
      expect(layout("fw_v6_prefix_key")).toEqual({ size: 20, members: [["prefixlen", 0], ["addr", 4]] });
      expect(layout("fw_v6_addr")).toEqual({ size: 16, members: [["addr", 0]] });
      expect(layout("fw_counter")).toEqual({ size: 16, members: [["packets", 0], ["bytes", 8]] });
    });

    it("gets maps of its own on every load (no pinning by name)", async () => {
      await withProgram(OBJ, async (other) => {
        const mine = (await fw.progInfo()).map_ids;
        const theirs = (await other.progInfo()).map_ids;
        expect(theirs.filter((id) => mine.includes(id))).toEqual([]);
        await deny(other, { v4: ["192.0.2.77"] });
        expect((await other.run(from("192.0.2.77"))).retval).toBe(XDP.DROP);
        expect((await fw.run(from("192.0.2.77"))).retval).toBe(XDP.PASS);
      });
    });

    it("would reject a program that reads the packet without a bounds check (the load check can fail)", async () => {
      const dir = mkdtempSync(join(tmpdir(), "bpfleet-unsafe-"));
      try {
        const src = join(dir, "unsafe.bpf.c");
        writeFileSync(
          src,
          `#include <linux/bpf.h>\n#include <bpf/bpf_helpers.h>\n` +
            `SEC("xdp") int unsafe(struct xdp_md *ctx) { return *(unsigned char *)(long)ctx->data; }\n` +
            `char LICENSE[] SEC("license") = "GPL";\n`,
        );
        const multiarch = execFileSync("gcc", ["-dumpmachine"]).toString().trim();
        execFileSync("clang", ["-O2", "-g", "-target", "bpf", "-I", `/usr/include/${multiarch}`, "-c", src, "-o", join(dir, "unsafe.bpf.o")]);
        await expect(loadProgram(join(dir, "unsafe.bpf.o"))).rejects.toThrow(/invalid access to packet/);
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    });
  });

  describe("verdicts", () => {
    let fw: LoadedProgram;
    beforeAll(async () => {
      fw = await loadProgram(OBJ);
      await deny(fw, {
        v4: ["192.0.2.9"],
        v6: ["2001:db8::9"],
        v4Prefix: ["198.51.100.0/24", "203.0.113.128/25"],
        v6Prefix: ["2001:db8:ff00::/40"],
      });
    });
    afterAll(() => fw?.close());

    const denied4 = "192.0.2.9";
    const denied6 = "2001:db8::9";
    const q = (vid: number): VlanTag => ({ vid });
    const ad = (vid: number): VlanTag => ({ vid, tpid: ETH_P.QINQ });
    const v4Hdr = (src: string, o: Partial<Parameters<typeof ipv4>[0]> = {}) =>
      ipv4({ src, dst: "10.0.0.1", payload: probe(), ...o });
    const eth4 = (payload: Buffer, vlans?: VlanTag[]) => ethernet({ etherType: ETH_P.IP, vlans, payload });
    const eth6 = (payload: Buffer) => ethernet({ etherType: ETH_P.IPV6, payload });
    const options40 = Buffer.concat([Buffer.from([0x94, 0x04, 0, 0]), Buffer.alloc(36, 0x01)]); // Router Alert + NOPs

    const cases: [string, () => Buffer, number][] = [
      // IPv4 exact
      ["IPv4 exact hit, UDP", () => from(denied4), XDP.DROP],
      ["IPv4 exact hit, TCP SYN", () => from(denied4, { seg: tcp({ srcPort: 1234, dstPort: 22 }) }), XDP.DROP],
      ["IPv4 exact hit, ICMP echo", () => from(denied4, { seg: icmpv4({ type: 8, id: 1, sequence: 1 }) }), XDP.DROP],
      ["IPv4 neighbour of an exact entry", () => from("192.0.2.10"), XDP.PASS],
      ["IPv4 denied address as destination only", () => from("10.9.9.9", { dst: denied4 }), XDP.PASS],
      // IPv4 prefixes
      ["IPv4 prefix hit, first address of the /24", () => from("198.51.100.0"), XDP.DROP],
      ["IPv4 prefix hit, last address of the /24", () => from("198.51.100.255"), XDP.DROP],
      ["IPv4 just below the /24", () => from("198.51.99.255"), XDP.PASS],
      ["IPv4 just above the /24", () => from("198.51.101.0"), XDP.PASS],
      ["IPv4 in the denied upper /25", () => from("203.0.113.200"), XDP.DROP],
      ["IPv4 in the lower /25 of the same /24", () => from("203.0.113.5"), XDP.PASS],
      ["IPv4 miss", () => from("10.1.2.3"), XDP.PASS],
      // IPv4 header variants
      ["IPv4 with 40 bytes of options, denied source", () => eth4(v4Hdr(denied4, { options: options40 })), XDP.DROP],
      ["IPv4 with 40 bytes of options, other source", () => eth4(v4Hdr("10.1.2.3", { options: options40 })), XDP.PASS],
      ["IPv4 later fragment from a denied source", () => eth4(v4Hdr(denied4, { payload: Buffer.alloc(64, 0xab), protocol: 17, fragmentOffset: 185 })), XDP.DROP],
      // VLAN
      ["802.1Q-tagged IPv4 exact hit", () => from(denied4, { vlans: [q(100)] }), XDP.DROP],
      ["QinQ (802.1AD + 802.1Q) IPv4 prefix hit", () => from("198.51.100.7", { vlans: [ad(10), q(20)] }), XDP.DROP],
      ["802.1Q-tagged IPv4 miss", () => from("10.1.2.3", { vlans: [q(100)] }), XDP.PASS],
      ["three VLAN tags (deeper than we parse), denied source", () => from(denied4, { vlans: [ad(1), q(2), q(3)] }), XDP.PASS],
      ["802.1Q-tagged IPv6 exact hit", () => from(denied6, { vlans: [q(100)] }), XDP.DROP],
      // IPv6
      ["IPv6 exact hit, UDP", () => from(denied6), XDP.DROP],
      ["IPv6 exact hit, TCP", () => from(denied6, { seg: tcp({ srcPort: 1234, dstPort: 443 }) }), XDP.DROP],
      ["IPv6 exact hit, ICMPv6 echo", () => from(denied6, { seg: icmpv6({ type: 128, id: 1, sequence: 1 }) }), XDP.DROP],
      ["IPv6 neighbour of an exact entry", () => from("2001:db8::a"), XDP.PASS],
      ["IPv6 denied address as destination only", () => from("2001:db8:1::5", { dst: denied6 }), XDP.PASS],
      ["IPv6 prefix hit, start of the /40", () => from("2001:db8:ff00::1"), XDP.DROP],
      ["IPv6 prefix hit, end of the /40", () => from("2001:db8:ffff:ffff:ffff:ffff:ffff:ffff"), XDP.DROP],
      ["IPv6 just below the /40", () => from("2001:db8:feff:ffff:ffff:ffff:ffff:ffff"), XDP.PASS],
      ["IPv6 miss", () => from("2001:db8:1::1234"), XDP.PASS],
      // not IP, or not parseable: pass (see the comment at the top of xdp_firewall.bpf.c)
      ["ARP request from a denied IPv4 address", () => ethernet({ dst: "ff:ff:ff:ff:ff:ff", etherType: ETH_P.ARP, payload: arp({ op: "request", senderMac: "02:00:00:00:00:09", senderIp: denied4, targetIp: "10.0.0.1" }) }), XDP.PASS],
      ["Ethernet header only, EtherType IPv4", () => ethernet({ etherType: ETH_P.IP, payload: Buffer.alloc(0) }), XDP.PASS],
      ["802.1Q tag cut short", () => ethernet({ etherType: ETH_P.VLAN, payload: Buffer.from([0x00, 0x64]) }), XDP.PASS],
      ["IPv4 header cut at 19 bytes, denied source present", () => eth4(v4Hdr(denied4).subarray(0, 19)), XDP.PASS],
      ["IPv4 IHL=15 with only 20 header bytes, denied source", () => eth4(v4Hdr(denied4, { ihl: 15, payload: Buffer.alloc(0), protocol: 17 })), XDP.PASS],
      ["IPv4 IHL=4, denied source", () => eth4(v4Hdr(denied4, { ihl: 4 })), XDP.PASS],
      ["IPv4 EtherType with version 6 in the header, denied source", () => eth4(v4Hdr(denied4, { version: 6 })), XDP.PASS],
      ["IPv6 header cut at 39 bytes, denied source present", () => eth6(ipv6({ src: denied6, dst: "2001:db8:1::1", payload: probe() }).subarray(0, 39)), XDP.PASS],
    ];

    it.each(cases)("%s", async (_name, frame, verdict) => {
      const packet = frame();
      const out = await fw.run(packet);
      expect(out.retval).toBe(verdict);
      expect(out.dataOut.equals(packet), "the firewall never rewrites a packet").toBe(true);
    });

    it("cannot be given frames shorter than an Ethernet header: the kernel refuses them", async () => {
      // BPF_PROG_TEST_RUN (net/bpf/test_run.c) rejects data_size_in < ETH_HLEN
      // with EINVAL, so the parser's own short-frame check is only exercised
      // by the truncated-VLAN and truncated-IP cases above.
      await expect(fw.run(Buffer.alloc(13))).rejects.toThrow(/Invalid argument/);
    });
  });

  describe("maps are live", () => {
    it("drops an address as soon as it is written and passes it once deleted", async () => {
      await withProgram(OBJ, async (fw) => {
        const frame = from("192.0.2.50");
        expect((await fw.run(frame)).retval).toBe(XDP.PASS);
        await deny(fw, { v4: ["192.0.2.50"] });
        expect((await fw.run(frame)).retval).toBe(XDP.DROP);
        await fw.deleteFromMap("deny_v4_exact", [exactKey("192.0.2.50")]);
        expect((await fw.run(frame)).retval).toBe(XDP.PASS);
      });
    });

    it("treats a /0 prefix as 'every address of that family', and leaves the other family and ARP alone", async () => {
      // The kernel's LPM trie accepts prefixlen 0. Whether a user may deny
      // 0.0.0.0/0 is the provider's decision (lockout guard), not the program's.
      await withProgram(OBJ, async (fw) => {
        const arpFrame = ethernet({ etherType: ETH_P.ARP, payload: arp({ op: "request", senderMac: "02:00:00:00:00:01", senderIp: "10.0.0.2", targetIp: "10.0.0.1" }) });
        await deny(fw, { v4Prefix: ["0.0.0.0/0"] });
        expect((await fw.run(from("10.1.2.3"))).retval).toBe(XDP.DROP);
        expect((await fw.run(from("255.255.255.255"))).retval).toBe(XDP.DROP);
        expect((await fw.run(from("2001:db8:1::1234"))).retval).toBe(XDP.PASS);
        expect((await fw.run(arpFrame)).retval).toBe(XDP.PASS);
        await deny(fw, { v6Prefix: ["::/0"] });
        expect((await fw.run(from("2001:db8:1::1234"))).retval).toBe(XDP.DROP);
        expect((await fw.run(from("fe80::1"))).retval).toBe(XDP.DROP);
        expect((await fw.run(arpFrame)).retval).toBe(XDP.PASS);
      });
    });
  });

  describe("provider/xdpFirewall/codec.ts", () => {
    it("writes keys the program matches, and reads back what it wrote", async () => {
      await withProgram(OBJ, async (fw) => {
        const canonical = ["192.0.2.9/32", "198.51.100.0/24", "0.0.0.0/1", "2001:db8::9/128", "2001:db8:ff00::/40"];
        const byMap = new Map<string, Buffer[]>();
        for (const entry of canonical) {
          const { map, key } = encodeDenyEntry(entry);
          byMap.set(map, [...(byMap.get(map) ?? []), Buffer.from(key)]);
        }
        for (const [map, keys] of byMap) await fw.updateMap(map, keys.map((key) => ({ key, value: Buffer.from(CODEC_DENY_VALUE) })));

        const dropped = ["192.0.2.9", "198.51.100.77", "127.0.0.1", "2001:db8::9", "2001:db8:ff12::1"];
        for (const src of dropped) expect((await fw.run(from(src))).retval, src).toBe(XDP.DROP);
        for (const src of ["192.0.2.8", "198.51.101.1", "2001:db8::8", "2001:db8:fe00::1"]) {
          expect((await fw.run(from(src))).retval, src).toBe(XDP.PASS);
        }
        const readBack: string[] = [];
        for (const map of DENY_MAPS) {
          for (const e of await fw.dumpMap(map)) readBack.push(decodeDenyEntry(map, e.key));
        }
        expect(readBack.sort()).toEqual([...canonical].sort());

        await fw.run(from("192.0.2.9"), { repeat: 3 });
        const stats = await fw.lookupPerCpu(STATS_MAP, statKey(FW_STAT_DROP));
        const droppedBytes = dropped.reduce((n, src) => n + from(src).length, 0) + 3 * from("192.0.2.9").length;
        expect(codecSumCounters(stats)).toEqual({ packets: dropped.length + 3, bytes: droppedBytes });
      });
    });
  });

  describe("fw_stats", () => {
    it("counts passed and dropped packets and their bytes, summed over CPUs", async () => {
      await withProgram(OBJ, async (fw) => {
        await deny(fw, { v4: ["192.0.2.9"], v6Prefix: ["2001:db8:ff00::/40"] });
        const read = async (i: number) => sumCounters(await fw.lookupPerCpu("fw_stats", statKey(i)));
        expect(await read(FW_STAT_PASS)).toEqual({ packets: 0n, bytes: 0n });
        expect(await read(FW_STAT_DROP)).toEqual({ packets: 0n, bytes: 0n });

        const drop4 = from("192.0.2.9");
        const drop6 = from("2001:db8:ff00::1", { vlans: [{ vid: 3 }] });
        const pass4 = from("10.1.2.3", { seg: tcp({ srcPort: 1, dstPort: 2, payload: Buffer.alloc(100) }) });
        const passArp = ethernet({ etherType: ETH_P.ARP, payload: arp({ op: "reply", senderMac: "02:00:00:00:00:01", senderIp: "10.0.0.2", targetIp: "10.0.0.1" }) });
        await fw.run(drop4, { repeat: 1000 });
        await fw.run(drop6, { repeat: 10 });
        await fw.run(pass4, { repeat: 500 });
        await fw.run(passArp);

        expect(await read(FW_STAT_DROP)).toEqual({
          packets: 1010n,
          bytes: BigInt(1000 * drop4.length + 10 * drop6.length),
        });
        expect(await read(FW_STAT_PASS)).toEqual({
          packets: 501n,
          bytes: BigInt(500 * pass4.length + passArp.length),
        });
      });
    });
  });
});
