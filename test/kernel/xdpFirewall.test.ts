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
import { canonicalPrefix, formatAddress, parsePrefix, prefixContains } from "../../provider/cidr";
import { batchText } from "../../provider/remote/mapOperations";
import { denyOperations, planDeny } from "../../provider/xdpFirewall/plan";
import { V4_NET_SLOT_BITS, V4_WAY_BITS, V6_WAY_BITS, WAYS, v4NetSlot, v4WayBucket, v6WayBucket } from "../../provider/xdpFirewall/index";
import { seededRandom } from "../support/seededRandom";

const unavailable = kernelTestsUnavailable();
if (unavailable) console.warn(`test/kernel/xdpFirewall: skipped: ${unavailable}`);

const OBJ = objectPath("xdp_firewall");
const FW_STAT_PASS = 0;
const FW_STAT_DROP = 1;
const statKey = (i: number) => Buffer.from([i, 0, 0, 0]);

/** The entries each loaded program holds, as the provider would observe them. */
const held = new WeakMap<LoadedProgram, Set<string>>();

/** Brings the program's maps to exactly `entries`, with the provider's own plan (records and index). */
async function setDeny(fw: LoadedProgram, entries: string[]): Promise<void> {
  const want = entries.map(canonicalPrefix);
  await fw.batchText(batchText(denyOperations(planDeny(want, held.get(fw) ?? []), (m) => fw.mapPin(m))));
  held.set(fw, new Set(want));
}

/** Adds entries to what the program holds. */
async function deny(fw: LoadedProgram, entries: { v4?: string[]; v6?: string[]; v4Prefix?: string[]; v6Prefix?: string[] }) {
  await setDeny(fw, [
    ...(held.get(fw) ?? []),
    ...(entries.v4 ?? []).map((a) => `${a}/32`),
    ...(entries.v6 ?? []).map((a) => `${a}/128`),
    ...(entries.v4Prefix ?? []),
    ...(entries.v6Prefix ?? []),
  ]);
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
      // The LPM tries are records for the provider: the program never reads them.
      expect(info.map_ids).toHaveLength(13);
    });

    it("pins exactly its fifteen maps (thirteen of its own, two of the XDP chain), with the types, sizes and flags the provider relies on", async () => {
      expect(fw.mapNames()).toEqual([
        "deny_v4_exact", "deny_v4_prefix", "deny_v6_exact", "deny_v6_prefix",
        "fw_stats", "fw_v4_hosts", "fw_v4_index", "fw_v4_net_slots", "fw_v4_ways", "fw_v6_index", "fw_v6_lengths", "fw_v6_long", "fw_v6_ways", "xdp_chain", "xdp_chain_next",
      ]);
      const NO_PREALLOC = 1;
      const expected = {
        deny_v4_exact: { type: "hash", flags: NO_PREALLOC, bytes_key: 4, bytes_value: 1, max_entries: 1048576 },
        deny_v6_exact: { type: "hash", flags: NO_PREALLOC, bytes_key: 16, bytes_value: 1, max_entries: 1048576 },
        deny_v4_prefix: { type: "lpm_trie", flags: NO_PREALLOC, bytes_key: 8, bytes_value: 1, max_entries: 262144 },
        deny_v6_prefix: { type: "lpm_trie", flags: NO_PREALLOC, bytes_key: 20, bytes_value: 1, max_entries: 262144 },
        fw_v4_index: { type: "array", flags: 0, bytes_key: 4, bytes_value: 64, max_entries: 65536 },
        fw_v6_index: { type: "array", flags: 0, bytes_key: 4, bytes_value: 64, max_entries: 65536 },
        fw_v4_hosts: { type: "hash", flags: NO_PREALLOC, bytes_key: 4, bytes_value: 32, max_entries: 262144 },
        fw_v4_ways: { type: "array", flags: 0, bytes_key: 4, bytes_value: 64, max_entries: 1 << V4_WAY_BITS },
        fw_v4_net_slots: { type: "array", flags: 0, bytes_key: 4, bytes_value: 40, max_entries: 1 << V4_NET_SLOT_BITS },
        fw_v6_ways: { type: "array", flags: 0, bytes_key: 4, bytes_value: 240, max_entries: 1 << V6_WAY_BITS },
        fw_v6_long: { type: "hash", flags: NO_PREALLOC, bytes_key: 20, bytes_value: 1, max_entries: 262144 },
        fw_v6_lengths: { type: "array", flags: 0, bytes_key: 4, bytes_value: 16, max_entries: 1 },
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
      expect(layout("fw_index_block")).toEqual({ size: 64, members: [["state", 0]] });
      expect(layout("fw_v4_hosts")).toEqual({ size: 32, members: [["bits", 0]] });
      expect(layout("fw_v4_ways")).toEqual({ size: 64, members: [["addr", 0], ["valid", 4 * WAYS], ["overflow", 5 * WAYS], ["pad", 5 * WAYS + 1]] });
      expect(layout("fw_v6_ways")).toEqual({ size: 240, members: [["addr", 0], ["tag", 16 * WAYS], ["len", 16 * WAYS + 16], ["valid", 17 * WAYS + 16], ["overflow", 18 * WAYS + 16], ["pad", 18 * WAYS + 17]] });
      expect(layout("fw_v4_net_slot")).toEqual({ size: 40, members: [["net", 0], ["valid", 4], ["overflow", 5], ["pad", 6], ["bits", 8]] });
      expect(layout("fw_v6_lengths")).toEqual({ size: 16, members: [["bits", 0]] });
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
      ["IPv4 first fragment from a denied source", () => eth4(v4Hdr(denied4, { moreFragments: true })), XDP.DROP],
      ["IPv4 later fragment from a denied source", () => eth4(v4Hdr(denied4, { payload: Buffer.alloc(64, 0xab), protocol: 17, fragmentOffset: 185 })), XDP.DROP],
      ["IPv4 later fragment from another source", () => eth4(v4Hdr("10.1.2.3", { payload: Buffer.alloc(64, 0xab), protocol: 17, fragmentOffset: 185 })), XDP.PASS],
      ["IPv6 first fragment from a denied source", () => eth6(ipv6({ src: denied6, dst: "2001:db8:1::1", payload: probe(), extensions: [{ type: "fragment", moreFragments: true }] })), XDP.DROP],
      ["IPv6 later fragment from a denied source", () => eth6(ipv6({ src: denied6, dst: "2001:db8:1::1", payload: Buffer.alloc(64, 0xab), nextHeader: 17, extensions: [{ type: "fragment", fragmentOffset: 185 }] })), XDP.DROP],
      ["IPv6 later fragment from another source", () => eth6(ipv6({ src: "2001:db8:1::2", dst: "2001:db8:1::1", payload: Buffer.alloc(64, 0xab), nextHeader: 17, extensions: [{ type: "fragment", fragmentOffset: 185 }] })), XDP.PASS],
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
        await setDeny(fw, []);
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

  describe("the index (xdp_firewall.h), written by the provider's plan", () => {
    let fw: LoadedProgram;
    beforeAll(async () => {
      fw = await loadProgram(OBJ);
    });
    afterAll(() => fw?.close());

    /** The address `delta` away from `bytes` (wrapping is the caller's business). */
    const offset = (bytes: Uint8Array, delta: bigint) => {
      const width = BigInt(bytes.length * 8);
      let n = BigInt(`0x${Buffer.from(bytes).toString("hex")}`) + delta;
      n &= (1n << width) - 1n;
      return formatAddress(Buffer.from(n.toString(16).padStart(bytes.length * 2, "0"), "hex"));
    };
    const span = (family: 4 | 6, len: number) => 1n << BigInt((family === 4 ? 32 : 128) - len);

    // One prefix at a time, each length once, so that every bucket state and every IPv6
    // length bit is exercised; the list moves from one to the next by the provider's plan.
    // An exact address just outside each prefix keeps the neighbouring bucket busy too.
    for (const [family, base, bits] of [[4, "203.0.113.77", 32], [6, "2001:db8:abcd:ef01:2345:6789:abcd:ef77", 128]] as const) {
      it(`drops exactly the addresses of an IPv${family} prefix of every length 0–${bits}`, async () => {
        for (let len = 0; len <= bits; len++) {
          const prefix = parsePrefix(canonicalPrefix(`${base}/${len}`));
          const size = span(family, len);
          const inside = [0n, size - 1n, size / 2n].map((d) => offset(prefix.bytes, d));
          const outside = len === 0 ? [] : [offset(prefix.bytes, -1n), offset(prefix.bytes, size)];
          const neighbour = len === 0 ? [] : [offset(prefix.bytes, size + 1n)];
          await setDeny(fw, [`${formatAddress(prefix.bytes)}/${len}`, ...neighbour.map((a) => `${a}/${bits}`)]);
          for (const src of inside) expect((await fw.run(from(src))).retval, `/${len}: ${src} inside`).toBe(XDP.DROP);
          for (const src of outside) expect((await fw.run(from(src))).retval, `/${len}: ${src} outside`).toBe(XDP.PASS);
          for (const src of neighbour) expect((await fw.run(from(src))).retval, `/${len}: ${src} exact neighbour`).toBe(XDP.DROP);
        }
        await setDeny(fw, []);
      }, 300_000);
    }

    it("keeps overlapping prefixes apart: removing the outer one leaves the inner ones denied", async () => {
      const inner = ["10.1.2.0/24", "10.1.3.128/25", "10.1.4.6/31", "10.1.5.5/32", "2001:db8:1::/48", "2001:db8:1:2::/64", "2001:db8:1:3::7/128"];
      await setDeny(fw, ["10.0.0.0/8", "2001:db8::/32", ...inner]);
      for (const src of ["10.200.0.1", "10.1.3.1", "2001:db8:9::1", "2001:db8:1:3::8"]) expect((await fw.run(from(src))).retval, src).toBe(XDP.DROP);
      await setDeny(fw, inner);
      const drop = ["10.1.2.0", "10.1.2.255", "10.1.3.128", "10.1.3.255", "10.1.4.6", "10.1.4.7", "10.1.5.5", "2001:db8:1::1", "2001:db8:1:ffff::1", "2001:db8:1:2::9", "2001:db8:1:3::7"];
      const pass = ["10.200.0.1", "10.1.3.127", "10.1.4.5", "10.1.4.8", "10.1.5.4", "10.1.5.6", "2001:db8:9::1", "2001:db8:2::1", "2001:db8:1:3::8"];
      // 2001:db8:1:3::8 lies in 2001:db8:1::/48: denied by it, not by the /128.
      for (const src of drop) expect((await fw.run(from(src))).retval, src).toBe(XDP.DROP);
      for (const src of pass.filter((a) => a !== "2001:db8:1:3::8")) expect((await fw.run(from(src))).retval, src).toBe(XDP.PASS);
      expect((await fw.run(from("2001:db8:1:3::8"))).retval).toBe(XDP.DROP);
      await setDeny(fw, []);
      for (const src of [...drop, ...pass]) expect((await fw.run(from(src))).retval, src).toBe(XDP.PASS);
    });

    // Addresses from 198.51.100.0 (or `base`) on that share one fw_v4_ways bucket, lowest first.
    const sharing = (count: number, base = 0xc6336400) => {
      const out: string[] = [];
      for (let a = base; out.length < count; a++) if (v4WayBucket(a) === v4WayBucket(base)) out.push(formatAddress(Buffer.from([a >>> 24, (a >>> 16) & 255, (a >>> 8) & 255, a & 255])));
      return out;
    };

    it("finds exact IPv4 addresses that share a bucket", async () => {
      const [s0, s1, s2] = sharing(3);
      const neighbour = "198.51.100.1"; // its /24 is an EXACT bucket; its slot is another
      for (const list of [[s0!, s1!, s2!], [s1!, s2!], [s0!, s2!], [s2!], [s0!]]) {
        await setDeny(fw, [...list, "198.51.100.77"].map((a) => `${a}/32`));
        for (const src of [s0!, s1!, s2!]) expect((await fw.run(from(src))).retval, `${list.join(" ")}: ${src}`).toBe(list.includes(src) ? XDP.DROP : XDP.PASS);
        expect((await fw.run(from(neighbour))).retval, neighbour).toBe(XDP.PASS);
        expect((await fw.run(from("198.51.100.77"))).retval).toBe(XDP.DROP);
      }
      // 0.0.0.0 is an address like any other (a way's `valid` tells a held way from an empty one).
      await setDeny(fw, ["0.0.0.0/32"]);
      expect((await fw.run(from("0.0.0.0"))).retval).toBe(XDP.DROP);
      await setDeny(fw, ["0.0.0.1/32"]);
      expect((await fw.run(from("0.0.0.0"))).retval).toBe(XDP.PASS);
      await setDeny(fw, []);
    });

    // /24s that share one fw_v4_net_slots slot, lowest first, as "a.b.c." (from `base`, 203.0.113.0/24 by default).
    const sharingNets = (count: number, base = 0xcb0071) => {
      const out: string[] = [];
      for (let t = base; out.length < count; t++) if (v4NetSlot(t) === v4NetSlot(base)) out.push(`${t >>> 16}.${(t >>> 8) & 255}.${t & 255}.`);
      return out;
    };

    it("finds /25–/31 prefixes of /24s that share a net slot: the slot's own bitmap, and the others in fw_v4_hosts", async () => {
      const [h0, h1, h2] = sharingNets(3);
      const entries = (i: number) => [[`${h0}128/25`, `${h0}3/32`], [`${h1}8/29`, `${h1}200/31`], [`${h2}0/30`, `${h2}99/32`]][i]!;
      const probes = [h0, h1, h2].flatMap((h) => [0, 3, 4, 7, 8, 15, 16, 99, 127, 128, 199, 200, 201, 202, 255].map((x) => `${h}${x}`));
      for (const pick of [[0, 1, 2], [1, 2], [0, 2], [2], [0], [1]]) {
        const list = [...pick.flatMap(entries), "203.0.113.250/32"];
        await setDeny(fw, list);
        for (const src of probes) {
          const want = list.some((e) => prefixContains(parsePrefix(e), parsePrefix(src))) ? XDP.DROP : XDP.PASS;
          expect((await fw.run(from(src))).retval, `${list.join(" ")}: ${src}`).toBe(want);
        }
      }
      await setDeny(fw, []);
      for (const src of probes) expect((await fw.run(from(src))).retval, src).toBe(XDP.PASS);
    });

    // IPv6 keys of one fw_v6_ways bucket: exact addresses (length 128) or /64 prefixes, lowest first.
    const sharing6 = (length: number, count: number, start = "20010db8005500000000000000000000") => {
      const out: string[] = [];
      const bytes = Buffer.from(start, "hex");
      const word = length === 128 ? 3 : 1;
      const want = v6WayBucket(bytes, length);
      for (let i = 0; out.length < count; i++) {
        bytes.writeUInt32BE(i, word * 4);
        if (v6WayBucket(bytes, length) === want) out.push(formatAddress(bytes));
      }
      return out;
    };

    it("finds IPv6 addresses and /64 prefixes that share a bucket", async () => {
      const exact = sharing6(128, 3);
      const nets = sharing6(64, 3);
      const inNet = (net: string) => offset(parsePrefix(net).bytes, 0x1234n);
      const lists = [[0, 1, 2], [1, 2], [0, 2], [2], [0]];
      for (const pick of lists) {
        const list = [...pick.map((i) => `${exact[i]}/128`), ...pick.map((i) => `${nets[i]}/64`), "2001:db8:99::/48"];
        await setDeny(fw, list);
        for (const src of [...exact, ...nets.map(inNet)]) {
          const want = list.some((e) => prefixContains(parsePrefix(e), parsePrefix(src))) ? XDP.DROP : XDP.PASS;
          expect((await fw.run(from(src))).retval, `${list.join(" ")}: ${src}`).toBe(want);
        }
      }
      await setDeny(fw, [...exact.map((a) => `${a}/128`), ...nets.map((n) => `${n}/64`)]);
      for (const a of [...exact, ...nets.map(inNet)]) expect((await fw.run(from(a))).retval, a).toBe(XDP.DROP);
      expect((await fw.run(from("2001:db8:55:0:ffff::1"))).retval, "same /64 as the exact addresses, not listed").toBe(XDP.PASS);
      await setDeny(fw, []);
    });

    it("finds the addresses of a full bucket: its twelve lowest in the ways, the others in the hashes, as they come and go", async () => {
      // WAYS + 2 keys of one bucket each: IPv4 addresses, IPv6 addresses, IPv6 /64s.
      const v4 = sharing(WAYS + 2, 0xc6337000); // from 198.51.112.0
      const v6 = sharing6(128, WAYS + 2, "20010db8005600000000000000000000");
      const nets = sharing6(64, WAYS + 2, "20010db8005700000000000000000000");
      const inNet = (net: string) => offset(parsePrefix(net).bytes, 0x99n);
      const all = [...v4.map((a) => `${a}/32`), ...v6.map((a) => `${a}/128`), ...nets.map((n) => `${n}/64`)];
      const probes = [...v4, ...v6, ...nets.map(inNet)];
      // Full and overflowing; the lowest gone (the 13th moves into a way); one in the middle gone;
      // the highest two gone (no overflow); every other one; only the overflowing two.
      const picks = [
        [...Array(WAYS + 2).keys()],
        [...Array(WAYS + 2).keys()].filter((i) => i !== 0),
        [...Array(WAYS + 2).keys()].filter((i) => i !== 5),
        [...Array(WAYS).keys()],
        [...Array(WAYS + 2).keys()].filter((i) => i % 2 === 1),
        [WAYS, WAYS + 1],
        [...Array(WAYS + 2).keys()],
      ];
      for (const pick of picks) {
        const list = [v4, v6].flatMap((keys, f) => pick.map((i) => `${keys[i]}/${f === 0 ? 32 : 128}`)).concat(pick.map((i) => `${nets[i]}/64`));
        await setDeny(fw, list);
        for (const src of probes) {
          const want = list.some((e) => prefixContains(parsePrefix(e), parsePrefix(src))) ? XDP.DROP : XDP.PASS;
          expect((await fw.run(from(src))).retval, `${pick.join(",")}: ${src}`).toBe(want);
        }
      }
      // The ways really overflow: with all of them listed, the two highest of each bucket are in no way.
      await setDeny(fw, all);
      const bucket = v4WayBucket(Buffer.from(parsePrefix(v4[0]!).bytes).readUInt32BE(0));
      const keyHex = [0, 8, 16, 24].map((s) => ((bucket >>> s) & 255).toString(16).padStart(2, "0"));
      const lookup = JSON.parse(execFileSync("bpftool", ["-j", "map", "lookup", "pinned", fw.mapPin("fw_v4_ways"), "key", "hex", ...keyHex]).toString()) as { value: string[] };
      const held = Buffer.from(lookup.value.map((x) => parseInt(x, 16)));
      const ways = Array.from({ length: WAYS }, (_, i) => formatAddress(Buffer.from(held.subarray(4 * i, 4 * i + 4))));
      expect(ways).toEqual(v4.slice(0, WAYS));
      expect([...held.subarray(4 * WAYS, 5 * WAYS)]).toEqual(Array(WAYS).fill(1));
      expect(held[5 * WAYS], "overflow").toBe(1);
      await setDeny(fw, []);
      for (const src of probes) expect((await fw.run(from(src))).retval, src).toBe(XDP.PASS);
    });

    it("agrees with a reference on random exact + prefix mixes, at and around every entry", async () => {
      const rand = seededRandom(12);
      const byte = () => Math.floor(rand() * 256);
      // Crowded into a few /16s so that buckets hold exact addresses, long and short prefixes together.
      const v4 = () => `198.${18 + Math.floor(rand() * 2)}.${Math.floor(rand() * 4)}.${byte()}`;
      const v6 = () => `2001:db8:${Math.floor(rand() * 3).toString(16)}:${Math.floor(rand() * 4).toString(16)}:${byte().toString(16)}::${byte().toString(16)}`;
      const lengths4 = [32, 32, 32, 31, 30, 28, 26, 25, 24, 23, 22, 17];
      const lengths6 = [128, 128, 128, 64, 64, 60, 56, 49, 48, 40, 33, 32, 24];
      for (let round = 0; round < 3; round++) {
        const entries = [
          ...Array.from({ length: 60 }, () => canonicalPrefix(`${v4()}/${lengths4[Math.floor(rand() * lengths4.length)]}`)),
          ...Array.from({ length: 60 }, () => canonicalPrefix(`${v6()}/${lengths6[Math.floor(rand() * lengths6.length)]}`)),
        ];
        await setDeny(fw, entries);
        const parsed = entries.map(parsePrefix);
        const probes = [...Array.from({ length: 80 }, v4), ...Array.from({ length: 80 }, v6), ...parsed.flatMap((p) => [formatAddress(p.bytes), offset(p.bytes, -1n), offset(p.bytes, span(p.family, p.prefixLength))])];
        for (const src of probes) {
          const address = parsePrefix(src);
          const want = parsed.some((p) => prefixContains(p, address)) ? XDP.DROP : XDP.PASS;
          expect((await fw.run(from(src))).retval, `round ${round}: ${src}`).toBe(want);
        }
      }
      await setDeny(fw, []);
    }, 300_000);

    it("never passes an entry that stays while updates race the lookups", async () => {
      // Each kept entry sits in a bucket whose structure the updates rebuild: the /24 turns
      // from DENY into LONGER and back, exact addresses gain and lose a covering prefix,
      // IPv6 lengths come and go around the kept one.
      // And a kept exact address whose fw_v4_ways bucket changes: a lower address
      // joins it in one list, a higher one in the other.
      const [s0, s1, s2] = sharing(3);
      const [t0, t1, t2] = sharing6(128, 3);
      const [n0, n1, n2] = sharing6(64, 3);
      // And a kept /26 whose /24's net slot changes hands (h0 takes it in one list, h2
      // shares it in the other) while its bitmap gains and loses a /28 beside it.
      const [h0, h1, h2] = sharingNets(3, 0xc6336f); // from 198.51.111.0/24
      // And full buckets (WAYS + 2 keys, IPv4 and IPv6): a kept key moves from way 5 to way 1
      // and back, and the kept highest one from the hash (the bucket overflows in `a`) into
      // a way (in `b`, where the bucket holds three keys) and back.
      const u = sharing(WAYS + 2, 0xc6337100); // from 198.51.113.0
      const w = sharing6(128, WAYS + 2, "20010db8005800000000000000000000");
      const fullKept = [`${u[5]}/32`, `${u[WAYS + 1]}/32`, `${w[5]}/128`, `${w[WAYS + 1]}/128`];
      const fullA = [...Array(WAYS + 1).keys()].filter((i) => i !== 5).flatMap((i) => [`${u[i]}/32`, `${w[i]}/128`]);
      const fullB = [`${u[1]}/32`, `${w[1]}/128`];
      const kept = ["198.51.100.7/32", "198.51.100.128/26", "203.0.113.9/32", `${s1}/32`, "2001:db8:5::/48", "2001:db8:5:1::9/128", "2001:db8:6::/56", `${t1}/128`, `${n1}/64`, `${h1}64/26`, ...fullKept];
      const a = [...kept, "198.51.100.0/24", "203.0.113.0/25", `${s0}/32`, "2001:db8::/32", "2001:db8:5:2::/64", `${t0}/128`, `${n0}/64`, `${h0}4/30`, `${h1}0/28`, ...fullA];
      const b = [...kept, "198.51.100.0/25", "203.0.113.200/30", `${s2}/32`, "2001:db8:5:3::/60", "2001:db8:7::/40", `${t2}/128`, `${n2}/64`, `${h2}0/31`, ...fullB];
      const probes = ["198.51.100.7", "198.51.100.130", "198.51.100.191", "203.0.113.9", s1!, "2001:db8:5:ffff::1", "2001:db8:5:1::9", "2001:db8:6:ff::1", t1!, offset(parsePrefix(n1!).bytes, 77n), `${h1}64`, `${h1}127`, u[5]!, u[WAYS + 1]!, w[5]!, w[WAYS + 1]!];
      await setDeny(fw, a);
      const statsBefore = sumCounters(await fw.lookupPerCpu(STATS_MAP, statKey(FW_STAT_PASS)));
      const dropsBefore = sumCounters(await fw.lookupPerCpu(STATS_MAP, statKey(FW_STAT_DROP)));
      const FLIPS = 20;
      let flips = 0;
      const flipper = (async () => {
        for (; flips < FLIPS; flips++) await setDeny(fw, flips % 2 === 0 ? b : a);
      })();
      // Lookups: each probe 200,000 times per run, runs back to back until the last update is in.
      const repeat = 200_000;
      let runs = 0;
      let runsDuringFlips = 0;
      await Promise.all(
        probes.map(async (src) => {
          const frame = from(src);
          while (flips < FLIPS) {
            const during = flips > 0;
            expect((await fw.run(frame, { repeat })).retval, src).toBe(XDP.DROP);
            runs++;
            if (during && flips < FLIPS) runsDuringFlips++;
          }
        }),
      );
      await flipper;
      const statsAfter = sumCounters(await fw.lookupPerCpu(STATS_MAP, statKey(FW_STAT_PASS)));
      const dropsAfter = sumCounters(await fw.lookupPerCpu(STATS_MAP, statKey(FW_STAT_DROP)));
      // Every packet of every run is counted: all dropped, not one passed.
      expect(statsAfter.packets - statsBefore.packets).toBe(0n);
      expect(dropsAfter.packets - dropsBefore.packets).toBe(BigInt(runs * repeat));
      expect(runsDuringFlips, "the lookups did race the updates").toBeGreaterThan(probes.length);
      await setDeny(fw, []);
    }, 300_000);
  });

  describe("provider/xdpFirewall/codec.ts", () => {
    it("writes keys the program matches, and reads back what it wrote", async () => {
      await withProgram(OBJ, async (fw) => {
        const canonical = ["192.0.2.9/32", "198.51.100.0/24", "0.0.0.0/1", "2001:db8::9/128", "2001:db8:ff00::/40"];
        const ops = denyOperations(planDeny(canonical, []), (m) => fw.mapPin(m));
        // The records are exactly what encodeDenyEntry makes of each entry.
        for (const entry of canonical) {
          const { map, key } = encodeDenyEntry(entry);
          expect(ops.some((o) => o.map === fw.mapPin(map) && o.op === "update" && Buffer.from(o.key).equals(key) && Buffer.from(o.value).equals(CODEC_DENY_VALUE)), entry).toBe(true);
        }
        await fw.batchText(batchText(ops));

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
