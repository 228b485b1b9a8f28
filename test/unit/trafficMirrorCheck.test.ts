import { describe, expect, it } from "vitest";
import { failureAt } from "../support/checkFailure";
import { checkInputs, diffInputs, UNKNOWN } from "../../provider/dynamicAdapter";
import { provider } from "../../provider/trafficMirror/dynamic";
import { touchesManagementPath } from "../../provider/trafficMirror/guard";
import { trafficMirrorKind } from "../../provider/trafficMirror/lifecycle";
import { checkTrafficMirror, trafficMirrorSchema } from "../../provider/trafficMirror/schema";

const valid = {
  host: { address: "10.200.1.2", hostKey: "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB" },
  credentials: { privateKey: "-----BEGIN OPENSSH PRIVATE KEY-----" },
  interface: "eth0",
  name: "web-mirror",
  direction: "ingress",
  filters: [
    { protocol: "tcp", destinationPort: "80" },
    { destination: "2001:DB8::1/32", protocol: 17, sourcePort: "1024 - 65535" },
    { protocol: 6, destinationPort: 80 },
  ],
  target: { interface: "mirror0" },
};

const canonical = () => checkInputs(trafficMirrorSchema, valid).inputs!;

describe("TrafficMirror check", () => {
  it("canonicalises filters into a record keyed by a tcpdump-like expression, deduplicated and sorted", () => {
    const result = checkInputs(trafficMirrorSchema, valid);
    expect(result.failures).toBeUndefined();
    expect(result.inputs?.filters).toEqual({
      "tcp and dst port 80": { protocol: "tcp", destinationPort: 80 },
      "udp and dst net 2001:db8::/32 and src portrange 1024-65535": { protocol: "udp", destination: "2001:db8::/32", sourcePort: "1024-65535" },
    });
    expect(result.inputs).toMatchObject({ sampleRate: 1, priority: 1, direction: "ingress", target: { interface: "mirror0" }, host: { port: 22, user: "root" } });
    expect(result.inputs).toMatchObject({ lockoutGuard: true, lockoutRevertSeconds: 30 });
  });

  it("accepts the canonical record form it produced, and produces it again", () => {
    const once = canonical();
    expect(checkInputs(trafficMirrorSchema, once).inputs).toEqual(once);
  });

  it("recomputes record keys from the values rather than trusting them", () => {
    const result = checkInputs(trafficMirrorSchema, { ...valid, filters: { "whatever": { protocol: "udp" } } });
    expect(Object.keys(result.inputs!.filters)).toEqual(["udp"]);
  });

  it("gives defaults: both directions, no filters (mirror everything), every packet", () => {
    const { filters: _f, direction: _d, ...rest } = valid;
    const result = checkInputs(trafficMirrorSchema, rest);
    expect(result.inputs).toMatchObject({ direction: "both", filters: {}, sampleRate: 1 });
  });

  it("canonicalises tunnel targets: addresses compressed, VXLAN port defaulted", () => {
    const result = checkInputs(trafficMirrorSchema, { ...valid, target: { tunnel: { type: "vxlan", remote: "2001:DB8:0:0::50", vni: 42 } } });
    expect(result.inputs?.target).toEqual({ tunnel: { type: "vxlan", remote: "2001:db8::50", vni: 42, port: 4789 } });
    const gre = checkInputs(trafficMirrorSchema, { ...valid, target: { tunnel: { type: "gretap", remote: "192.0.2.50", key: 7 } } });
    expect(gre.inputs?.target).toEqual({ tunnel: { type: "gretap", remote: "192.0.2.50", key: 7 } });
  });

  it.each([
    // filters: CIDRs
    [{ filters: [{ source: "10.0.0.0/33" }] }, "filters[0].source", /prefix length/],
    [{ filters: [{ protocol: "tcp" }, { destination: "2001:db8::zz" }] }, "filters[1].destination", /not an IPv4 or IPv6/],
    [{ filters: [{ source: "300.1.1.1" }] }, "filters[0].source", /not an IPv4 or IPv6/],
    [{ filters: [{ source: "10.0.0.0/8", destination: "2001:db8::/32" }] }, "filters[0].destination", /IPv6 but source is IPv4/],
    // filters: ports
    [{ filters: [{ destinationPort: 70000 }] }, "filters[0].destinationPort", /0 to 65535/],
    [{ filters: [{ destinationPort: "2000-1000" }] }, "filters[0].destinationPort", /greater than its last/],
    [{ filters: [{ sourcePort: "http" }] }, "filters[0].sourcePort", /not a port/],
    [{ filters: [{ sourcePort: -1 }] }, "filters[0].sourcePort", /not a port/],
    [{ filters: [{ sourcePort: 80.5 }] }, "filters[0].sourcePort", /whole port number/],
    [{ filters: [{ protocol: "icmp", destinationPort: 80 }] }, "filters[0].destinationPort", /icmp has no ports/],
    // issue 15: port 0 was accepted (TcPolicy refuses it)
    [{ filters: [{ destinationPort: 0 }] }, "filters[0].destinationPort", /^filters\[0\]\.destinationPort: port 0 is not a port traffic is addressed to \(use 1-65535\)$/],
    [{ filters: [{ protocol: "udp", sourcePort: "0-1023" }] }, "filters[0].sourcePort", /"0-1023": port 0 is not a port traffic is addressed to; start the range at 1 \("1-1023"\)/],
    [{ filters: [{ destinationPort: "0" }] }, "filters[0].destinationPort", /port 0/],
    // IPv4-compatible addresses match nothing (IPv4-mapped ones become IPv4: test/unit/inputAddresses.test.ts)
    [{ filters: [{ source: "::10.0.0.1" }] }, "filters[0].source", /IPv4-compatible IPv6 address.*"10\.0\.0\.1"/],
    // filters: protocol and shape
    [{ filters: [{ protocol: "gre" }] }, "filters[0].protocol", /./],
    [{ filters: [{ protocol: 256 }] }, "filters[0].protocol", /./],
    [{ filters: [{ protocol: "icmp", source: "2001:db8::/32" }] }, "filters[0].protocol", /icmpv6/],
    [{ filters: [{ protocol: "icmpv6", destination: "10.0.0.0/8" }] }, "filters[0].protocol", /IPv4 packets carry icmp/],
    [{ filters: [{ port: 80 }] }, "filters[0]", /port/],
    [{ filters: Array.from({ length: 65 }, (_, i) => ({ destinationPort: i + 1 })) }, "filters", /at most 64/],
    // target
    [{ target: { tunnel: { type: "vxlan", remote: "collector.example.com", vni: 1 } } }, "target.tunnel.remote", /not an IPv4 or IPv6 address/],
    [{ target: { tunnel: { type: "vxlan", remote: "192.0.2.0/24", vni: 1 } } }, "target.tunnel.remote", /not an IPv4 or IPv6 address/],
    [{ target: { tunnel: { type: "gretap", remote: "10.0.0.1; reboot" } } }, "target.tunnel.remote", /not an IPv4 or IPv6 address/],
    [{ target: { tunnel: { type: "vxlan", remote: "192.0.2.1", vni: 1 << 24 } } }, "target.tunnel.vni", /./],
    [{ target: { tunnel: { type: "vxlan", remote: "192.0.2.1", vni: 1, local: "2001:db8::1" } } }, "target.tunnel.local", /same address family/],
    [{ target: { tunnel: { type: "gretap", remote: "2001:db8::50" } } }, "target.tunnel.local", /required for an IPv6 gretap/],
    [{ target: { tunnel: { type: "gretap", remote: "192.0.2.1", key: -1 } } }, "target.tunnel.key", /./],
    [{ target: { tunnel: { type: "geneve", remote: "192.0.2.1" } } }, "target.tunnel.type", /./],
    [{ target: { interface: "eth1; rm -rf /" } }, "target.interface", /only letters, digits/],
    [{ target: {} }, "target", /exactly one of interface/],
    // issue 15: refused only at up, though check sees both names
    [{ target: { interface: "eth0" } }, "target.interface", /"eth0" is the mirrored interface itself: every copy sent out of it would be mirrored again \(a loop\)/],
    [{ target: { tunnel: { type: "vxlan", remote: "::192.0.2.1", vni: 1 } } }, "target.tunnel.remote", /IPv4-compatible/],
    [{ target: { interface: "mirror0", tunnel: { type: "vxlan", remote: "192.0.2.1", vni: 1 } } }, "target", /exactly one of interface/],
    // the rest
    [{ direction: "sideways" }, "direction", /./],
    [{ sampleRate: 0 }, "sampleRate", /./],
    [{ sampleRate: 1.5 }, "sampleRate", /./],
    [{ priority: 0 }, "priority", /./],
    [{ priority: 65536 }, "priority", /./],
    [{ interface: "$(reboot)" }, "interface", /only letters, digits/],
    [{ name: "web.mirror" }, "pinName", /bpffs refuses/],
    // lockout guard
    [{ lockoutRevertSeconds: 9 }, "lockoutRevertSeconds", /at least 10 seconds.*fresh SSH login/],
    [{ lockoutRevertSeconds: 3601 }, "lockoutRevertSeconds", /at most 3600/],
    [{ lockoutRevertSeconds: 10.5 }, "lockoutRevertSeconds", /whole number of seconds/],
    [{ lockoutGuard: "false" }, "lockoutGuard", /boolean/],
  ])("rejects %j naming %s", (patch, property, reason) => {
    const result = checkTrafficMirror({ ...valid, ...patch });
    expect(result.inputs).toBeUndefined();
    const failure = failureAt(result, property, { ...valid, ...patch });
    expect(failure.reason).toMatch(reason);
  });

  it("refuses a target equal to the mirrored interface through the provider's check, as the engine calls it", async () => {
    const news = { ...valid, target: { interface: "eth0" } };
    const result = await provider.check!({}, news);
    expect(result.inputs).toBeUndefined();
    expect(failureAt(result, "target.interface", news).reason).toMatch(/mirrored interface itself/);
    // unknown during preview: judged when known
    expect((await provider.check!({}, { ...valid, target: { interface: UNKNOWN } })).failures).toBeUndefined();
    expect((await provider.check!({}, { ...valid, interface: "eth1", target: { interface: "eth0" } })).failures).toBeUndefined();
  });

  it("lets values that are unknown during preview through unchecked", () => {
    const result = checkInputs(trafficMirrorSchema, { ...valid, filters: [{ protocol: "tcp" }, UNKNOWN], target: { tunnel: { type: "vxlan", remote: UNKNOWN, vni: 1 } } });
    expect(result.failures).toBeUndefined();
    expect(result.inputs?.filters).toEqual([{ protocol: "tcp" }, UNKNOWN]);
    expect(result.inputs?.target).toEqual({ tunnel: { type: "vxlan", remote: UNKNOWN, vni: 1 } });
    expect(result.inputs?.interface).toBe("eth0");
  });
});

describe("TrafficMirror lockout guard: which changes it watches", () => {
  it.each([
    ["the mirrored interface carries the session", { management: "eth0", underlay: undefined }, "eth0", false, true],
    ["another interface carries it, no tunnel", { management: "eth1", underlay: undefined }, "eth0", false, false],
    ["the tunnel leaves through the management interface", { management: "eth1", underlay: "eth1" }, "eth0", true, true],
    ["the tunnel leaves through another interface", { management: "eth1", underlay: "eth2" }, "eth0", true, false],
    ["no route to the peer: no telling, so guarded", { management: undefined, underlay: "eth2" }, "eth0", true, true],
  ])("%s: %s", (_name, paths, iface, tunnel, guarded) => {
    expect(touchesManagementPath(paths, iface, tunnel)).toBe(guarded);
  });
});

describe("TrafficMirror diff", () => {
  const olds = { ...canonical(), objectSha256: "x" } as never;

  it("updates in place when filters, sampling, direction or target change", () => {
    for (const patch of [
      { filters: [{ protocol: "udp" }] },
      { sampleRate: 100 },
      { direction: "both" },
      { target: { tunnel: { type: "vxlan", remote: "192.0.2.50", vni: 7 } } },
      { lockoutGuard: false },
      { lockoutRevertSeconds: 60 },
    ]) {
      const news = checkInputs(trafficMirrorSchema, { ...valid, ...patch }).inputs as never;
      const d = diffInputs(trafficMirrorKind, olds, news);
      expect(d.changes, JSON.stringify(patch)).toBe(true);
      expect(d.replaces, JSON.stringify(patch)).toEqual([]);
    }
  });

  it("sees no filter change when the same filters are listed in another order", () => {
    const news = checkInputs(trafficMirrorSchema, { ...valid, filters: [...valid.filters].reverse() }).inputs as never;
    const d = diffInputs(trafficMirrorKind, { ...canonical() } as never, news);
    expect(d.replaces).toEqual([]);
    expect(JSON.stringify((news as { filters: unknown }).filters)).toBe(JSON.stringify(canonical().filters));
  });

  it("replaces when host, interface, pin name or priority change", () => {
    for (const [patch, key] of [
      [{ interface: "eth1" }, "interface"],
      [{ host: { ...valid.host, address: "10.200.1.3" } }, "host"],
      [{ name: "other" }, "name"],
      [{ priority: 7 }, "priority"],
    ] as const) {
      const news = checkInputs(trafficMirrorSchema, { ...valid, ...patch }).inputs as never;
      expect(diffInputs(trafficMirrorKind, olds, news)).toMatchObject({ replaces: [key], deleteBeforeReplace: true });
    }
  });
});
