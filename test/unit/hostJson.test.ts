import { execFileSync } from "node:child_process";
import { describe, expect, it } from "vitest";
import { parseSurvey } from "../../provider/healthGate/targetSurvey";
import { parseMapDump } from "../../provider/remote/mapOperations";
import { featureProbe, HostOutputError, hostJson, ipLinks, ipRouteGet, mapDump, netShow, tcQdiscRows, xdpOfNetShow } from "../../provider/remote/hostJson";
import { parseTcFilters } from "../../provider/remote/tc";
import { parseLinks } from "../../provider/trafficMirror/tunnel";

const source = { host: "root@10.200.1.11:22", command: "bpftool -j net show dev eth0" };

describe("hostJson", () => {
  it("reads the XDP program of `bpftool net show`, in one mode or several", () => {
    // As bpftool 7.1 prints them: one mode, then driver and generic at once (XDP_ATTACHED_MULTI).
    const single = hostJson(netShow, JSON.stringify([{ xdp: [{ devname: "eth0", ifindex: 2, mode: "driver", id: 42 }], tc: [{ devname: "eth0", ifindex: 2, kind: "clsact/ingress", name: "tc_policy", prog_id: 7 }], flow_dissector: [], netfilter: [] }]), source);
    expect(xdpOfNetShow(single)).toEqual({ mode: "driver", programId: 42 });
    expect(single[0]!.tc).toEqual([{ kind: "clsact/ingress", prog_id: 7 }]);
    const multi = hostJson(netShow, JSON.stringify([{ xdp: [{ devname: "eth0", ifindex: 2, multi_attachments: [{ mode: "generic", id: 5 }, { mode: "driver", id: 6 }] }] }]), source);
    expect(xdpOfNetShow(multi)).toEqual({ mode: "multi", programId: 5 });
    expect(xdpOfNetShow(hostJson(netShow, JSON.stringify([{ xdp: [], tc: [] }]), source))).toBeUndefined();
    expect(xdpOfNetShow(hostJson(netShow.nullable(), "null", source))).toBeUndefined();
  });

  it("names the host, the command and the field when the JSON has another shape", () => {
    const wrong = JSON.stringify([{ xdp: [{ devname: "eth0", mode: "driver", id: "42" }] }]);
    expect(() => hostJson(netShow, wrong, source)).toThrow(HostOutputError);
    expect(() => hostJson(netShow, wrong, source)).toThrow(/^root@10\.200\.1\.11:22: `bpftool -j net show dev eth0` printed JSON of another shape, at \[0\]\.xdp\[0\]\.id: Invalid input: expected number, received string/);
    expect(() => hostJson(netShow, JSON.stringify({ xdp: [] }), source)).toThrow(/at the top level: .*expected array/i);
    expect(() => hostJson(ipLinks, JSON.stringify([{ ifname: "eth0" }]), { command: "ip -j link show" })).toThrow(/^`ip -j link show` printed JSON of another shape, at \[0\]\.ifindex: .*expected number/i);
  });

  it("says when a command printed something other than JSON, quoting its start", () => {
    const text = "libbpf: Error in bpf_object__probe_loading(): Operation not permitted(1).\n" + "x".repeat(200);
    expect(() => hostJson(featureProbe, text, { host: "h1", command: "bpftool -j feature probe kernel" })).toThrow(
      /^h1: `bpftool -j feature probe kernel` printed something other than JSON \(it began: "libbpf: Error in bpf_object__probe_loading\(\): Operation not permitted\(1\)\. x+…"\), which bpfleet cannot read\. Check which bpftool and iproute2 the host runs/,
    );
  });

  it("reads map dumps, per-CPU ones too, and refuses a dump whose value is an error", () => {
    const dump = [
      { key: ["0x0a", "0x00"], value: ["0x01"], formatted: { key: 10, value: 1 } },
      { key: ["0x0b", "0x00"], values: [{ cpu: 0, value: ["0x02"] }, { cpu: 1, value: ["0x03"] }] },
    ];
    expect(parseMapDump(JSON.stringify(dump)).map((e) => [[...e.key], e.values.map((v) => [...v])])).toEqual([
      [[10, 0], [[1]]],
      [[11, 0], [[2], [3]]],
    ]);
    expect(hostJson(mapDump, "[]", source)).toEqual([]);
    // bpftool prints a failed lookup during a dump as a value object with an error.
    const failed = JSON.stringify([{ key: ["0x00"], value: { error: "Operation not permitted" } }]);
    expect(() => parseMapDump(failed, { host: "h1", command: "bpftool -j map dump pinned /sys/fs/bpf/bpfleet/x/maps/m" })).toThrow(
      /^h1: `bpftool -j map dump pinned \/sys\/fs\/bpf\/bpfleet\/x\/maps\/m` printed JSON of another shape, at \[0\]\.value: /,
    );
  });

  it("fails the pure parsers with the command they read", () => {
    expect(() => parseSurvey("@@dir\ntrue\n@@prog\n{\"name\":\"x\"}\n@@net\nnull\n@@stats\nnull\n")).toThrow(/`bpftool -j prog show pinned <program>` printed JSON of another shape, at id: /);
    expect(() => parseTcFilters("[{\"pref\":\"1\"}]", "ingress")).toThrow(/`tc -j filter show ingress` printed JSON of another shape, at \[0\]\.pref/);
    expect(() => parseLinks("Device \"x\" does not exist.")).toThrow(/`ip -d -j link show` printed something other than JSON/);
  });

  // The schemas against this machine's own iproute2, which needs no privileges.
  it("accepts what this machine's ip and tc print", () => {
    const run = (cmd: string, args: string[]) => execFileSync(cmd, args, { encoding: "utf8" });
    const links = hostJson(ipLinks, run("ip", ["-j", "link", "show"]), { command: "ip -j link show" });
    expect(links.map((l) => l.ifname)).toContain("lo");
    expect(links.find((l) => l.ifname === "lo")).toMatchObject({ ifindex: 1, link_type: "loopback" });
    expect(hostJson(ipLinks, run("ip", ["-d", "-j", "link", "show", "dev", "lo"]), { command: "ip -d -j link show dev lo" })[0]!.flags).toContain("UP");
    expect(hostJson(ipRouteGet, run("ip", ["-j", "route", "get", "127.0.0.1"]), { command: "ip -j route get 127.0.0.1" })[0]).toMatchObject({ dev: "lo", prefsrc: "127.0.0.1" });
    expect(hostJson(tcQdiscRows, run("tc", ["-j", "qdisc", "show", "dev", "lo"]), { command: "tc -j qdisc show dev lo" }).length).toBeGreaterThan(0);
  });
});
