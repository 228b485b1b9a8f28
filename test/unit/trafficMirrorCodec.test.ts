import { describe, expect, it } from "vitest";
import { batchText } from "../../provider/remote/mapOperations";
import { parseTcFilters } from "../../provider/remote/tc";
import {
  decodeConfig, decodeFilter, EMPTY_CONFIG, encodeConfig, encodeFilter, FILTER_FLAG, GUARD, liveFilters, type MirrorConfig,
} from "../../provider/trafficMirror/codec";
import { directionsOf, tcHandle } from "../../provider/trafficMirror/lifecycle";
import { mirrorOperations, planMirror } from "../../provider/trafficMirror/plan";
import { filterKey, filterRecord, filterSchema, type MirrorFilter } from "../../provider/trafficMirror/schema";
import { parseLinks, sameTunnel, tunnelDeviceName, tunnelGuard, tunnelLinkArgs, tunnelSpecOf } from "../../provider/trafficMirror/tunnel";

const hex = (b: Uint8Array) => Buffer.from(b).toString("hex");
const f = (raw: Record<string, unknown>) => filterSchema.parse(raw);

describe("filter codec", () => {
  it("lays out struct mirror_filter: flags, protocol, port ranges, addresses and masks as on the wire", () => {
    const bytes = encodeFilter(f({ protocol: "tcp", source: "192.0.2.0/24", destinationPort: "80-88" }));
    expect(bytes.length).toBe(80);
    const v = new DataView(bytes.buffer);
    expect(v.getUint32(0, true)).toBe(FILTER_FLAG.PROTO | FILTER_FLAG.SRC | FILTER_FLAG.IPV4 | FILTER_FLAG.DPORT);
    expect(bytes[4]).toBe(6);
    expect([v.getUint16(12, true), v.getUint16(14, true)]).toEqual([80, 88]);
    expect(hex(bytes.slice(16, 32))).toBe("c0000200" + "00".repeat(12));
    expect(hex(bytes.slice(32, 48))).toBe("ffffff00" + "00".repeat(12));
    expect(hex(bytes.slice(48, 80))).toBe("00".repeat(32));
  });

  it("writes IPv6 masks of any length", () => {
    const bytes = encodeFilter(f({ destination: "2001:db8:8000::/33" }));
    expect(new DataView(bytes.buffer).getUint32(0, true)).toBe(FILTER_FLAG.DST | FILTER_FLAG.IPV6);
    expect(hex(bytes.slice(48, 64))).toBe("20010db88000" + "00".repeat(10));
    expect(hex(bytes.slice(64, 80))).toBe("ffffffff80" + "00".repeat(11));
  });

  it("encodes a filter with no fields as all zeroes (matches every packet)", () => {
    expect(hex(encodeFilter({}))).toBe("00".repeat(80));
  });

  it.each([
    {},
    { protocol: "udp" },
    { protocol: 47 },
    { protocol: "icmpv6", source: "2001:db8::/32" },
    { source: "0.0.0.0/0" },
    { source: "::/0", destination: "2001:db8::1/128" },
    { protocol: "tcp", source: "10.0.0.0/8", destination: "192.0.2.9/32", sourcePort: "1024-65535", destinationPort: 443 },
    { sourcePort: 1, destinationPort: "1-65535" },
  ])("round-trips %j", (raw) => {
    const filter = f(raw);
    expect(decodeFilter(encodeFilter(filter))).toEqual(filter);
  });

  it("round-trips port 0, which check() refuses but a hand-written map entry may hold", () => {
    const filter = { sourcePort: 0, destinationPort: "0-65535" } as MirrorFilter;
    expect(decodeFilter(encodeFilter(filter))).toEqual(filter);
  });

  it("reads a hand-written filter with a family flag but no prefix as 'any address of that family'", () => {
    const bytes = new Uint8Array(80);
    new DataView(bytes.buffer).setUint32(0, FILTER_FLAG.IPV6, true);
    expect(decodeFilter(bytes)).toEqual({ source: "::/0" });
  });

  it("keys filters by a tcpdump-like expression", () => {
    expect(filterKey(f({}))).toBe("all");
    expect(filterKey(f({ protocol: 6, destinationPort: "80" }))).toBe("tcp and dst port 80");
    expect(filterKey(f({ protocol: 132, source: "10.1.2.3", sourcePort: "5-5" }))).toBe("sctp and src net 10.1.2.3/32 and src port 5");
    expect(filterKey(f({ protocol: 99, destination: "2001:db8::/32", destinationPort: undefined }))).toBe("proto 99 and dst net 2001:db8::/32");
    expect(filterKey(f({ sourcePort: "1000-2000" }))).toBe("src portrange 1000-2000");
  });
});

describe("config codec", () => {
  it("lays out struct mirror_config and round-trips it", () => {
    const config: MirrorConfig = { targetIfindex: 7, activeSet: 1, setLength: [3, 64], sampleRate: 100, guard: { kind: GUARD.VXLAN, address: "2001:db8::50", port: 4789 } };
    const bytes = encodeConfig(config);
    expect(bytes.length).toBe(40);
    expect(hex(bytes)).toBe("07000000" + "01000000" + "03000000" + "40000000" + "64000000" + "02" + "06" + "b512" + "20010db8000000000000000000000050");
    expect(decodeConfig(bytes)).toEqual(config);
    const gre: MirrorConfig = { ...config, guard: { kind: GUARD.GRE, address: "192.0.2.50", port: 0 } };
    expect(decodeConfig(encodeConfig(gre))).toEqual(gre);
    expect(decodeConfig(encodeConfig(EMPTY_CONFIG))).toEqual(EMPTY_CONFIG);
  });

});

describe("planning", () => {
  const web = filterRecord([f({ protocol: "tcp", destinationPort: 80 }), f({ protocol: "udp" })]);
  const observed = (config: MirrorConfig, filters: Record<string, MirrorFilter>) => ({ config, filters });

  it("writes nothing when the host already has what is declared", () => {
    const config: MirrorConfig = { targetIfindex: 5, activeSet: 0, setLength: [2, 0], sampleRate: 1 };
    expect(planMirror({ targetIfindex: 5, sampleRate: 1, filters: web }, observed(config, web))).toEqual({ filterWrites: [], configWrites: [] });
    // 0 and 1 are the same sampling.
    expect(planMirror({ targetIfindex: 5, sampleRate: 1, filters: web }, observed({ ...config, sampleRate: 0 }, web)).configWrites).toEqual([]);
  });

  it("changes only the config when only the target or sampling change", () => {
    const config: MirrorConfig = { targetIfindex: 5, activeSet: 1, setLength: [0, 2], sampleRate: 1 };
    const plan = planMirror({ targetIfindex: 9, sampleRate: 10, filters: web }, observed(config, web));
    expect(plan.filterWrites).toEqual([]);
    expect(plan.configWrites).toEqual([{ ...config, targetIfindex: 9, sampleRate: 10, guard: undefined }]);
  });

  it("fills the inactive set, then its length, then flips to it with the new settings", () => {
    const config: MirrorConfig = { targetIfindex: 5, activeSet: 0, setLength: [1, 7], sampleRate: 1 };
    const guard = { kind: GUARD.VXLAN, address: "192.0.2.50", port: 4789 } as const;
    const plan = planMirror({ targetIfindex: 9, sampleRate: 1, guard, filters: web }, observed(config, filterRecord([f({ protocol: "icmp" })])));
    expect(plan.filterWrites.map((w) => [w.slot, filterKey(w.filter)])).toEqual([
      [64, "tcp and dst port 80"],
      [65, "udp"],
    ]);
    expect(plan.configWrites).toEqual([
      { ...config, setLength: [1, 2] },
      { targetIfindex: 9, activeSet: 1, setLength: [1, 2], sampleRate: 1, guard },
    ]);
    // The first config write changes nothing the program reads.
    const [first] = plan.configWrites;
    expect({ ...first, setLength: first!.setLength[0] }).toEqual({ ...config, setLength: config.setLength[0] });
  });

  it("flips back to set 0 from set 1, and an empty list is a set of length 0", () => {
    const config: MirrorConfig = { targetIfindex: 5, activeSet: 1, setLength: [4, 2], sampleRate: 1 };
    const plan = planMirror({ targetIfindex: 5, sampleRate: 1, filters: {} }, observed(config, web));
    expect(plan.filterWrites).toEqual([]);
    expect(plan.configWrites.at(-1)).toMatchObject({ activeSet: 0, setLength: [0, 2] });
  });

  it("reads back the live set only, keyed as check() keys it", () => {
    const slots = new Map<number, Uint8Array>([
      [0, encodeFilter(f({ protocol: "icmp" }))],
      [64, encodeFilter(f({ protocol: "udp" }))],
      [65, encodeFilter(f({ protocol: "tcp", destinationPort: 80 }))],
      [66, encodeFilter(f({ protocol: "sctp" }))], // beyond the set's length: stale
    ]);
    expect(liveFilters({ targetIfindex: 1, activeSet: 1, setLength: [1, 2], sampleRate: 1 }, slots)).toEqual(web);
    expect(Object.keys(liveFilters({ targetIfindex: 1, activeSet: 0, setLength: [1, 2], sampleRate: 1 }, slots))).toEqual(["icmp"]);
  });

  it("becomes bpftool batch lines: filters, then the set's classifier, then config writes, in order", () => {
    const plan = planMirror({ targetIfindex: 3, sampleRate: 1, filters: filterRecord([f({})]) }, observed(EMPTY_CONFIG, {}));
    const text = batchText(mirrorOperations(plan, (m) => `/sys/fs/bpf/bpfleet/traffic-mirror/m/maps/${m}`));
    const lines = text.trim().split("\n");
    expect(lines).toHaveLength(10);
    expect(lines[0]).toBe(`map update pinned /sys/fs/bpf/bpfleet/traffic-mirror/m/maps/mirror_filters key hex 40 00 00 00 value hex ${Array(80).fill("00").join(" ")}`);
    // Set 1's elements: ranges 4-7, ranges6 2-3, head 1; the head (which makes the bits live) last.
    expect(lines.slice(1, 8).map((l) => l.replace(/^map update pinned \S+\/(\w+) key hex (\w\w) .*/, "$1 $2"))).toEqual([
      "mirror_ranges 04", "mirror_ranges 05", "mirror_ranges 06", "mirror_ranges 07", "mirror_ranges6 02", "mirror_ranges6 03", "mirror_heads 01",
    ]);
    // bpftool batch splits a line into at most 4096 words.
    expect(Math.max(...lines.map((l) => l.split(" ").length))).toBeLessThan(4096);
    expect(lines[8]).toMatch(/^map update pinned \S+\/mirror_config key hex 00 00 00 00 value hex 00 00 00 00 00 00 00 00 00 00 00 00 01 00 00 00 /);
    expect(lines[9]).toMatch(/^map update pinned \S+\/mirror_config key hex 00 00 00 00 value hex 03 00 00 00 01 00 00 00 00 00 00 00 01 00 00 00 01 00 00 00 /);
  });
});

describe("tc and tunnels", () => {
  it("parses `tc -j filter show`, skipping the per-priority lines", () => {
    const json = JSON.stringify([
      { protocol: "all", pref: 1, kind: "bpf", chain: 0 },
      { protocol: "all", pref: 1, kind: "bpf", chain: 0, options: { handle: "0x2b", bpf_name: "prog:[*fsobj]", "direct-action": true, not_in_hw: true, prog: { id: 4902, name: "tc_mirror", tag: "59f4a931744dcdc6", jited: 1 } } },
      { protocol: "ip", pref: 49152, kind: "u32", chain: 0, options: { handle: "800::800" } },
    ]);
    const filters = parseTcFilters(json, "egress");
    expect(filters[0]).toEqual({ direction: "egress", priority: 1, protocol: "all", kind: "bpf", handle: 0x2b, directAction: true, programId: 4902, programName: "tc_mirror", programTag: "59f4a931744dcdc6" });
    expect(filters).toHaveLength(2);
    expect(parseTcFilters("", "ingress")).toEqual([]);
  });

  it("derives a stable, non-zero TC handle per pin name", () => {
    expect(tcHandle("web")).toBe(tcHandle("web"));
    expect(tcHandle("web")).not.toBe(tcHandle("web2"));
    expect(tcHandle("web")).toBeGreaterThan(0);
    expect(tcHandle("web")).toBeLessThanOrEqual(0xffffffff);
    expect(directionsOf("both")).toEqual(["ingress", "egress"]);
    expect(directionsOf("none")).toEqual([]);
  });

  it("names tunnels within IFNAMSIZ, differently when a parameter changes", () => {
    const a = tunnelDeviceName("web", { type: "vxlan", remote: "192.0.2.50", vni: 1, port: 4789 });
    const b = tunnelDeviceName("web", { type: "vxlan", remote: "192.0.2.50", vni: 2, port: 4789 });
    expect(a).toMatch(/^bfm[0-9a-f]{12}$/);
    expect(a).not.toBe(b);
    expect(tunnelDeviceName("web", { port: 4789, vni: 1, remote: "192.0.2.50", type: "vxlan" })).toBe(a);
  });

  it("builds `ip link add` arguments for each tunnel type", () => {
    expect(tunnelLinkArgs({ type: "vxlan", remote: "192.0.2.50", vni: 42, port: 4789 })).toEqual(["type", "vxlan", "id", "42", "remote", "192.0.2.50", "dstport", "4789", "nolearning"]);
    expect(tunnelLinkArgs({ type: "vxlan", remote: "2001:db8::50", vni: 1, port: 8472, local: "2001:db8::1", ttl: 9 })).toEqual([
      "type", "vxlan", "id", "1", "remote", "2001:db8::50", "dstport", "8472", "local", "2001:db8::1", "ttl", "9", "nolearning",
    ]);
    expect(tunnelLinkArgs({ type: "gretap", remote: "192.0.2.50", key: 7 })).toEqual(["type", "gretap", "remote", "192.0.2.50", "key", "7"]);
    expect(tunnelLinkArgs({ type: "gretap", remote: "2001:db8::50", local: "2001:db8::1", ttl: 3 })).toEqual(["type", "ip6gretap", "remote", "2001:db8::50", "local", "2001:db8::1", "hoplimit", "3"]);
    expect(tunnelGuard({ type: "gretap", remote: "192.0.2.50" })).toEqual({ kind: GUARD.GRE, address: "192.0.2.50", port: 0 });
  });

  it("reads tunnel parameters back from `ip -d -j link show`", () => {
    // As iproute2 6.1 prints them.
    const links = parseLinks(JSON.stringify([
      { ifindex: 4, ifname: "bfmx", flags: ["BROADCAST", "UP"], ifalias: "bpfleet traffic-mirror web", linkinfo: { info_kind: "vxlan", info_data: { id: 42, remote: "192.0.2.9", port_range: { low: 0, high: 0 }, port: 4789, learning: false, ttl: 0, df: "unset" } } },
      { ifindex: 5, ifname: "bfmy", flags: ["BROADCAST"], linkinfo: { info_kind: "vxlan", info_data: { id: 43, remote6: "2001:db8::9", local6: "2001:db8::1", port: 4790, ttl: 9 } } },
      { ifindex: 6, ifname: "bfmz", flags: [], linkinfo: { info_kind: "gretap", info_data: { remote: "192.0.2.9", local: "any", ikey: "0.0.0.7", okey: "0.0.0.7", ttl: 0 } } },
      { ifindex: 7, ifname: "eth0", altnames: ["enp0s1"], flags: ["UP"] },
    ]));
    expect(links[0]).toMatchObject({ ifindex: 4, up: true, alias: "bpfleet traffic-mirror web", kind: "vxlan" });
    expect(tunnelSpecOf(links[0]!)).toEqual({ type: "vxlan", remote: "192.0.2.9", vni: 42, port: 4789 });
    expect(tunnelSpecOf(links[1]!)).toEqual({ type: "vxlan", remote: "2001:db8::9", vni: 43, port: 4790, local: "2001:db8::1", ttl: 9 });
    expect(tunnelSpecOf(links[2]!)).toEqual({ type: "gretap", remote: "192.0.2.9", key: 7 });
    expect(tunnelSpecOf(links[3]!)).toBeUndefined();
    expect(links[3]!.altnames).toEqual(["enp0s1"]);
    expect(sameTunnel(tunnelSpecOf(links[0]!), { type: "vxlan", remote: "192.0.2.9", vni: 42, port: 4789 })).toBe(true);
    expect(sameTunnel(tunnelSpecOf(links[0]!), { type: "vxlan", remote: "192.0.2.9", vni: 42, port: 4789, ttl: 3 })).toBe(false);
  });
});
