// Issue 15, finding 2: "::ffff:10.200.1.201" in a deny list was kept as an
// IPv6 /128 and the client's IPv4 pings still passed. Every input that takes
// an address or prefix now turns an IPv4-mapped form into the IPv4 it stands
// for (packets never carry the mapped form) and refuses the deprecated
// IPv4-compatible form (::a.b.c.d), whose bytes are also ordinary IPv6
// addresses. Map dumps keep every byte: parsePrefix is unchanged.
import { describe, expect, it } from "vitest";
import { canonicalInputPrefix, formatPrefix, parsePrefix } from "../../provider/cidr";
import { checkMaglevService } from "../../provider/maglev/schema";
import { checkTcPolicy } from "../../provider/tcPolicy/schema";
import { checkTrafficMirror } from "../../provider/trafficMirror/schema";
import { checkXdpFirewall } from "../../provider/xdpFirewall/schema";
import { failureAt } from "../support/checkFailure";

const host = { address: "10.200.1.2", hostKey: "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB" };
const base = { host, credentials: { privateKey: "k" }, interface: "eth0", name: "x" };

describe("canonicalInputPrefix", () => {
  it.each([
    ["::ffff:10.200.1.201", "10.200.1.201/32"],
    ["::FFFF:10.200.1.201/128", "10.200.1.201/32"],
    ["::ffff:a00:1", "10.0.0.1/32"],
    ["0:0:0:0:0:ffff:10.200.1.0/120", "10.200.1.0/24"],
    ["::ffff:10.200.1.7/120", "10.200.1.0/24"],
    ["::ffff:0:0/96", "0.0.0.0/0"],
    // not (only) mapped space: real IPv6 prefixes, kept
    ["::ffff:0:0/95", "::fffe:0:0/95"],
    ["::/0", "::/0"],
    ["::", "::/128"],
    ["::1", "::1/128"],
    ["::1/127", "::/127"],
    ["2001:db8::/32", "2001:db8::/32"],
    ["64:ff9b::10.0.0.1", "64:ff9b::a00:1/128"],
    ["10.200.1.201", "10.200.1.201/32"],
  ])("%s -> %s", (input, expected) => {
    expect(canonicalInputPrefix(input)).toBe(expected);
  });

  it.each([
    ["::10.200.1.201", /"::10\.200\.1\.201" is an IPv4-compatible IPv6 address \(::a\.b\.c\.d, deprecated by RFC 4291\): no packet carries it, so it would match nothing; write the IPv4 form "10\.200\.1\.201"/],
    ["::a00:1", /IPv4-compatible.*"10\.0\.0\.1"/],
    ["::10.200.1.0/120", /IPv4-compatible.*"10\.200\.1\.0\/24"/],
    ["::/96", /IPv4-compatible/],
    ["::2", /IPv4-compatible/],
  ])("refuses the IPv4-compatible %s", (input, reason) => {
    expect(() => canonicalInputPrefix(input)).toThrow(reason);
  });

  it("leaves map dumps as they are: parsePrefix keeps a mapped address IPv6", () => {
    const mapped = parsePrefix("::ffff:10.200.1.201");
    expect(mapped.family).toBe(6);
    expect(formatPrefix(mapped)).toBe("::ffff:10.200.1.201/128");
  });
});

describe("every input that takes an address", () => {
  it("XdpFirewall deny: a mapped entry is the IPv4 entry (one entry with its IPv4 twin)", () => {
    const result = checkXdpFirewall({ ...base, deny: ["::ffff:10.200.1.201", "10.200.1.201/32", "::ffff:192.0.2.0/120", "2001:db8::/32"] });
    expect(result.failures).toBeUndefined();
    expect(result.inputs?.deny).toEqual({ "10.200.1.201/32": "deny", "192.0.2.0/24": "deny", "2001:db8::/32": "deny" });
  });

  it("XdpFirewall deny: the record form from an older state is re-keyed, so the next up rewrites the entry", () => {
    const result = checkXdpFirewall({ ...base, deny: { "::ffff:10.200.1.201/128": "deny" } });
    expect(result.inputs?.deny).toEqual({ "10.200.1.201/32": "deny" });
  });

  it("XdpFirewall deny: an IPv4-compatible entry is refused, naming the entry", () => {
    const news = { ...base, deny: ["10.0.0.1", "::10.200.1.201"] };
    const result = checkXdpFirewall(news);
    expect(result.inputs).toBeUndefined();
    expect(failureAt(result, "deny[1]", news).reason).toMatch(/IPv4-compatible.*write the IPv4 form "10\.200\.1\.201"/);
  });

  it("TcPolicy from/to: mapped becomes IPv4, and so meets an IPv4 'to' in one family", () => {
    const result = checkTcPolicy({
      ...base,
      ingress: { rules: ["deny icmp from ::ffff:10.200.1.201", { action: "deny", protocol: "tcp", port: 80, from: "::ffff:10.200.1.0/120", to: "10.200.1.2" }] },
    });
    expect(result.failures).toBeUndefined();
    expect(Object.keys((result.inputs?.ingress as { rules: object }).rules)).toEqual(["deny icmp from 10.200.1.201/32", "deny tcp 80 from 10.200.1.0/24 to 10.200.1.2/32"]);
  });

  it("TcPolicy from/to: IPv4-compatible refused, naming the rule and the keyword", () => {
    const news = { ...base, egress: { rules: ["allow tcp 22", "deny udp 53 to ::8.8.8.8"] } };
    const result = checkTcPolicy(news);
    expect(result.inputs).toBeUndefined();
    expect(failureAt(result, "egress.rules[1]", news).reason).toMatch(/^egress\.rules\[1\]: to: "::8\.8\.8\.8" is an IPv4-compatible/);
  });

  it("MaglevService VIPs and backends: mapped become IPv4", () => {
    const result = checkMaglevService({ ...base, vips: ["[::ffff:198.51.100.10]:80/tcp", { address: "::ffff:198.51.100.10", port: 53, protocol: "udp" }], backends: ["::ffff:10.200.1.12", { address: "::ffff:10.200.1.13", weight: 2 }] });
    expect(result.failures).toBeUndefined();
    expect(Object.keys(result.inputs?.vips)).toEqual(["198.51.100.10:53/udp", "198.51.100.10:80/tcp"]);
    expect(result.inputs?.backends).toEqual({ "10.200.1.12": { address: "10.200.1.12", weight: 1 }, "10.200.1.13": { address: "10.200.1.13", weight: 2 } });
  });

  it("MaglevService: a mapped backend and its IPv4 form are one backend, listed twice", () => {
    const news = { ...base, vips: ["198.51.100.10:80/tcp"], backends: ["10.200.1.12", "::ffff:10.200.1.12"] };
    expect(failureAt(checkMaglevService(news), "backends[1]", news).reason).toMatch(/10\.200\.1\.12 is listed twice/);
  });

  it.each([
    [{ vips: ["[::198.51.100.10]:80/tcp"], backends: ["10.200.1.12"] }, "vips[0]"],
    [{ vips: [{ address: "::198.51.100.10", port: 80, protocol: "tcp" }], backends: ["10.200.1.12"] }, "vips[0].address"],
    [{ vips: ["198.51.100.10:80/tcp"], backends: ["::10.200.1.12"] }, "backends[0].address"],
  ])("MaglevService refuses IPv4-compatible %j at %s", (patch, path) => {
    const news = { ...base, ...patch };
    expect(failureAt(checkMaglevService(news), path, news).reason).toMatch(/IPv4-compatible/);
  });

  it("TrafficMirror filters and tunnel endpoints: mapped become IPv4", () => {
    const result = checkTrafficMirror({
      ...base,
      filters: [{ source: "::ffff:10.0.0.0/104", protocol: "icmp" }],
      target: { tunnel: { type: "vxlan", remote: "::ffff:192.0.2.50", local: "10.200.1.2", vni: 1 } },
    });
    expect(result.failures).toBeUndefined();
    expect(result.inputs?.filters).toEqual({ "icmp and src net 10.0.0.0/8": { protocol: "icmp", source: "10.0.0.0/8" } });
    expect(result.inputs?.target).toEqual({ tunnel: { type: "vxlan", remote: "192.0.2.50", local: "10.200.1.2", vni: 1, port: 4789 } });
  });
});
