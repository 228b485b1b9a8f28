// The `expect` input through each kind's real check() (the provider the SDK
// requires, as the engine calls it at preview): canonical records keyed by the
// canonical text, and a bad expectation named by property, index and reason
// before anything touches a host. Plus the pure parts of the host-side run:
// which copies a chain is probed with, the script's stdin, the judge and the
// failure table.
import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { scriptArgs, shellScript } from "../../provider/remote/shellScript";
import { UNKNOWN } from "../../provider/dynamicAdapter";
import { parseExpectationText } from "../../provider/expect/grammar";
import { backendOfFrame, expectationTable, ExpectationsMissedError, judge, probeInput, xdpProbeTarget } from "../../provider/expect/hostRun";
import { buildFrame } from "../../provider/expect/packet";
import { CHAIN_SHARED_MAPS, SHARED_MAPS } from "../../provider/expect/probe";
import { provider as maglevProvider } from "../../provider/maglev/dynamic";
import { pinLayout } from "../../provider/remote/pins";
import { provider as tcProvider } from "../../provider/tcPolicy/dynamic";
import { provider as firewallProvider } from "../../provider/xdpFirewall/dynamic";
import { gateTargetSchema } from "../../provider/healthGate/schema";

const host = { address: "192.0.2.1" };
const firewall = (expect: unknown) => firewallProvider.check({}, { host, interface: "eth0", name: "fw", deny: ["203.0.113.0/24"], expect });
const policy = (expect: unknown) => tcProvider.check({}, { host, interface: "eth0", name: "pol", ingress: { rules: ["allow tcp 22"] }, expect });
const balancer = (expect: unknown, vips: unknown = ["[2001:db8::10]:80/tcp"], backends: unknown = ["2001:db8::21", "2001:db8::22"]) =>
  maglevProvider.check({}, { host, interface: "eth0", name: "web", vips, backends, expect });

const reasons = (result: { failures?: { property: string; reason: string }[] }) => (result.failures ?? []).map((f) => f.reason);

describe("expect through check()", () => {
  it("canonicalises every kind's list into a record keyed by canonical text, whatever the spelling", async () => {
    const fw = await firewall(["TCP 10.0.0.5:33000 > 10.0.0.7:22: pass", { protocol: "udp", source: "2001:db8::1", sourcePort: 53, destination: "2001:db8::7", destinationPort: 40000, verdict: "drop" }]);
    expect(fw.failures).toBeUndefined();
    expect(fw.inputs!.expect).toEqual({ "tcp 10.0.0.5:33000 > 10.0.0.7:22 syn: pass": "pass", "udp [2001:db8::1]:53 > [2001:db8::7]:40000: drop": "drop" });
    const pol = await policy(["ingress reply tcp 192.0.2.9:443 > 10.0.0.7:51000: pass"]);
    expect(pol.inputs!.expect).toEqual({ "ingress reply tcp 192.0.2.9:443 > 10.0.0.7:51000 syn ack: pass": "pass" });
    const lb = await balancer(["tcp [2001:db8::99]:40000 > [2001:db8::10]:80: backend 2001:db8::21"]);
    expect(lb.failures).toBeUndefined();
    expect(lb.inputs!.expect).toEqual({ "tcp [2001:db8::99]:40000 > [2001:db8::10]:80 syn: backend 2001:db8::21": "backend 2001:db8::21" });
    // The canonical record (state) checks to itself; none is the default.
    expect((await firewall(fw.inputs!.expect)).inputs!.expect).toEqual(fw.inputs!.expect);
    expect((await firewall(undefined)).inputs!.expect).toEqual({});
  });

  it("the issue's bad texts: each named by property, index and reason", async () => {
    expect(reasons(await firewall(["tcp 10.0.0.5:1 > 10.0.0.7:22: pass", "sctp 10.0.0.5:1 > 10.0.0.7:22: pass"]))).toEqual([
      'expect[1]: "sctp" is not a protocol: use tcp, udp or icmp',
    ]);
    expect(reasons(await firewall(["icmp 10.0.0.5:7 > 10.0.0.7: drop"]))).toEqual([
      'expect[0]: source: icmp has no ports: write the address alone ("10.0.0.5"), or use tcp or udp',
    ]);
    expect(reasons(await policy(["ingress tcp 10.0.0.5:1 > 10.0.0.7:22"]))).toEqual([
      'expect[0]: "ingress tcp 10.0.0.5:1 > 10.0.0.7:22" has no outcome: end it with ": pass" or ": drop"; write "<ingress|egress> [new|reply] <tcp|udp|icmp> <source> > <destination> [tcp flags]: <pass|drop>", e.g. "ingress reply tcp 192.0.2.9:443 > 10.0.0.7:51000: pass"',
    ]);
    // A v4 packet to a v6 VIP: the packet itself cannot say it, and naming a backend of a v6-only service neither.
    expect(reasons(await balancer(["tcp 192.0.2.7:40000 > [2001:db8::10]:80: backend 2001:db8::21"]))).toEqual([
      "expect[0]: source 192.0.2.7 is IPv4 but destination 2001:db8::10 is IPv6: a packet has one address family",
    ]);
    expect(reasons(await balancer(["tcp 192.0.2.7:40000 > 198.51.100.10:80: pass", "tcp 192.0.2.7:40000 > 198.51.100.10:80: backend 2001:db8::21"]))).toEqual([
      "expect[1]: an IPv4 packet cannot reach a VIP: every VIP of this service is IPv6",
    ]);
    expect(reasons(await balancer(["tcp [2001:db8::99]:40000 > [2001:db8::10]:80: backend 2001:db8::29"]))).toEqual([
      "expect[0]: backend 2001:db8::29 is not one of this service's backends",
    ]);
  });

  it("kind rules: a TcPolicy expectation names its hook, a firewall's has no backend", async () => {
    expect(reasons(await policy(["tcp 10.0.0.5:1 > 10.0.0.7:22: pass"]))).toEqual(['expect[0]: a TcPolicy expectation names its hook: begin with "ingress" or "egress"']);
    expect(reasons(await firewall(["tcp 10.0.0.5:1 > 10.0.0.7:22: backend 10.0.0.9"]))).toEqual(["expect[0]: XdpFirewall sends packets to no backend: the outcome is pass or drop"]);
  });

  it("an unknown value at preview passes through unchecked", async () => {
    const result = await firewall([UNKNOWN]);
    expect(result.failures).toBeUndefined();
    expect(result.inputs!.expect).toEqual([UNKNOWN]);
  });
});

describe("the host-side run's pure parts", () => {
  it("a chain is probed through the dispatcher, with every member in its slot sharing what it reads", () => {
    const layout = pinLayout("maglev", "web");
    const chain = { dispatcherId: 7, slots: new Map([[0, 11], [1, 12]]), owners: new Map([[11, "xdp-firewall/edge"], [12, "maglev/web"]]) };
    const target = xdpProbeTarget("maglevService", "xdp_maglev", layout, { iface: "eth0", mode: "auto", chainPriority: 1 }, chain, [12]);
    expect(target.dispatcher).toBeDefined();
    expect(target.members.map((m) => [m.slot, m.liveDir, m.shared])).toEqual([
      [1, "/sys/fs/bpf/bpfleet/maglev/web", [...SHARED_MAPS.maglevService, ...CHAIN_SHARED_MAPS]],
      [0, "/sys/fs/bpf/bpfleet/xdp-firewall/edge", [...SHARED_MAPS.xdpFirewall, ...CHAIN_SHARED_MAPS]],
    ]);
    const alone = xdpProbeTarget("xdpFirewall", "xdp_firewall", pinLayout("xdp-firewall", "fw"), { iface: "eth0", mode: "auto", chainPriority: undefined }, chain, []);
    expect(alone.dispatcher).toBeUndefined();
    expect(alone.members.map((m) => m.slot)).toEqual([undefined]);
    const foreign = { ...chain, owners: new Map<number, string>() };
    expect(() => xdpProbeTarget("maglevService", "xdp_maglev", layout, { iface: "eth0", mode: "auto", chainPriority: 1 }, foreign, [12])).toThrow(/slot 0 of eth0's XDP chain holds program 11, which is no bpfleet resource's/);
  });

  it("stdin: each distinct frame once, a round per group of flows, a reply's opener before it", () => {
    const es = ["ingress reply tcp 192.0.2.9:443 > 10.0.0.7:51000: pass", "ingress tcp 192.0.2.9:443 > 10.0.0.7:51000 syn ack: drop"].map((t) => parseExpectationText("tcPolicy", t));
    const { stdin, verdictRun } = probeInput({ type: "tc", iface: "eth0", members: [] }, es);
    const lines = stdin.trim().split("\n").map((l) => l.split(" ").slice(0, 3).join(" "));
    expect(lines.filter((l) => l.startsWith("frame")).length).toBe(2);
    expect(lines.filter((l) => !l.startsWith("frame"))).toEqual(["round", "run tc_policy_egress f0", "run tc_policy_ingress f1", "round", "run tc_policy_ingress f1"]);
    expect(es.map((e) => verdictRun.get(e)!.run)).toEqual([2, 3]);
  });

  it("judge: XDP and TC verdicts; a firewall's pass is met when a later member forwards the packet", () => {
    const fw = parseExpectationText("xdpFirewall", "tcp 10.0.0.5:1 > 10.0.0.7:22: pass");
    const frame = buildFrame(fw);
    expect(judge(fw, "xdp", 2, frame, undefined)).toEqual({ wanted: "pass", got: "pass", met: true });
    expect(judge(fw, "xdp", 1, frame, undefined)).toEqual({ wanted: "pass", got: "drop", met: false });
    expect(judge(fw, "xdp", 3, frame, undefined)).toEqual({ wanted: "pass", got: "tx", met: true });
    const pol = parseExpectationText("tcPolicy", "egress tcp 10.0.0.5:1 > 10.0.0.7:25: drop");
    expect(judge(pol, "tc", 2, frame, undefined)).toEqual({ wanted: "drop", got: "drop", met: true });
    expect(judge(pol, "tc", 0xffffffff, frame, undefined)).toEqual({ wanted: "drop", got: "pass", met: false });
    const lb = parseExpectationText("maglevService", "tcp 192.0.2.7:40000 > 198.51.100.10:80: pass");
    expect(judge(lb, "xdp", 3, frame, undefined).met).toBe(false);
  });

  it("a balancer's backend from the rewritten frame: NAT's address and port with sound checksums, DSR's MAC", () => {
    const e = parseExpectationText("maglevService", "tcp 192.0.2.7:40000 > 198.51.100.10:80: backend 10.0.1.3:8080");
    const frame = buildFrame(e);
    const rewritten = buildFrame({ ...e, destination: "10.0.1.3", destinationPort: 8080 });
    expect(backendOfFrame(frame, rewritten, { mode: "nat", backends: [] })).toMatchObject({ address: "10.0.1.3", port: 8080, text: "backend 10.0.1.3:8080", problem: undefined });
    expect(judge(e, "xdp", 3, frame, rewritten, { mode: "nat", backends: [] })).toEqual({ wanted: "backend 10.0.1.3:8080", got: "backend 10.0.1.3:8080", met: true });
    const broken = Buffer.from(rewritten);
    broken[broken.length - 1]! ^= 0xff;
    broken[50]! ^= 1;
    expect(judge(e, "xdp", 3, frame, broken, { mode: "nat", backends: [] }).met).toBe(false);
    const dsr = Buffer.from(frame);
    Buffer.from([2, 0, 0, 0, 0xaa, 0x13]).copy(dsr, 0);
    const view = { mode: "dsr" as const, backends: [{ address: "10.0.1.3", mac: "02:00:00:00:aa:13" }, { address: "10.0.1.4", mac: "02:00:00:00:aa:14" }] };
    expect(backendOfFrame(frame, dsr, view)).toMatchObject({ address: "10.0.1.3", text: "backend 10.0.1.3" });
    dsr[30]! ^= 1;
    expect(backendOfFrame(frame, dsr, view).problem).toBe("DSR changed the packet beyond its Ethernet header");
  });

  it("the failure: a table of expectation, wanted, got and host, missed ones first", () => {
    const results = {
      "tcp 10.0.0.5:1 > 10.0.0.7:22 syn: pass": { wanted: "pass", got: "pass", met: true },
      "tcp 10.0.0.9:1 > 10.0.0.7:80 syn: pass": { wanted: "pass", got: "drop", met: false },
    };
    expect(expectationTable("10.0.0.7", results).split("\n")).toEqual([
      "expectation                             wanted  got   host",
      "tcp 10.0.0.9:1 > 10.0.0.7:80 syn: pass  pass    drop  10.0.0.7  MISSED",
      "tcp 10.0.0.5:1 > 10.0.0.7:22 syn: pass  pass    pass  10.0.0.7  met",
    ]);
    const err = new ExpectationsMissedError("10.0.0.7", results, "");
    expect(err.message).toMatch(/^10\.0\.0\.7: 1 of 2 packet expectations missed after the change, so the host reverted it at once \(the lockout guard's revert; its output is kept in \/run\/bpfleet\/guards\/<token>\.log there\)\. Nothing was recorded as applied\n/);
  });
});

describe("sh/expect-probe.sh under a stub bpftool", () => {
  const scratch = mkdtempSync(join(tmpdir(), "bpfleet-expect-unit-"));
  afterAll(() => rmSync(scratch, { recursive: true, force: true }));

  /** Runs the script with a bpftool that logs its argv and answers each batch line with retval 2 (copying data_in to data_out). */
  function run(args: Record<string, string>, stdin: string) {
    const bin = join(scratch, "bin");
    mkdirSync(bin, { recursive: true });
    const log = join(scratch, "calls.log");
    writeFileSync(log, "");
    writeFileSync(
      join(bin, "bpftool"),
      `#!/bin/sh\necho "bpftool $*" >> '${log}'\n` +
        `if [ "$2" = batch ]; then printf '['; sep=''; while read -r _ _ _ _ _ in _ out _ _ _ ctx; do cp "$in" "$out" 2>/dev/null; od -An -tx1 "$ctx" | tr -d ' \\n' >> '${log}'; echo >> '${log}'; printf '%s{"command":[],"output":{"retval":2,"duration":1}}' "$sep"; sep=,; done < "$4"; echo ']'; fi\n`,
      { mode: 0o755 },
    );
    const r = spawnSync("/bin/sh", ["-c", shellScript("expect-probe"), "bpfleet", ...scriptArgs("expect-probe", args)], { input: stdin, env: { PATH: `${bin}:/usr/bin:/bin` } });
    return { code: r.status, stdout: r.stdout.toString(), stderr: r.stderr.toString(), calls: readFileSync(log, "utf8").split("\n").filter(Boolean) };
  }

  it("a chain: the dispatcher copy, each member's copy against its scratch chain in its slot, one batch, pins gone", () => {
    const live = join(scratch, "live");
    mkdirSync(join(live, "maps"), { recursive: true });
    for (const m of ["deny_v4_exact", "xdp_chain_next"]) writeFileSync(join(live, "maps", m), "");
    const e = parseExpectationText("xdpFirewall", "tcp 10.0.0.5:1 > 10.0.0.7:22: pass");
    const { stdin } = probeInput({ type: "xdp", iface: "lo", members: [] }, [e]);
    const r = run({ type: "xdp", iface: "lo", dispatcher: "/objects/d.o", members: `0 /objects/fw.o ${live} deny_v4_exact,deny_v6_exact,xdp_chain_next`, outputs: "1" }, stdin);
    expect(r.code, r.stderr).toBe(0);
    const probe = /bpfleet-probe-\d+/.exec(r.calls[0]!)![0];
    const P = `/sys/fs/bpf/${probe}`;
    expect(r.calls.slice(0, 3)).toEqual([
      `bpftool prog load /objects/d.o ${P}/prog type xdp pinmaps ${P}/maps`,
      // Only maps the live member has are shared (deny_v6_exact is not there).
      `bpftool prog load /objects/fw.o ${P}/m0/prog type xdp map name xdp_chain pinned ${P}/maps/xdp_chain map name deny_v4_exact pinned ${live}/maps/deny_v4_exact map name xdp_chain_next pinned ${live}/maps/xdp_chain_next pinmaps ${P}/m0/maps_probe`,
      `bpftool map update pinned ${P}/maps/xdp_chain key 0 0 0 0 value pinned ${P}/m0/prog`,
    ]);
    expect(r.calls[3]).toMatch(new RegExp(`^bpftool -j batch file /tmp/`));
    // The run's context: data 0, data_end the frame's length, meta 0, lo's ifindex (1), queue 0, egress 0.
    const len = buildFrame(e).length;
    expect(r.calls[4]).toBe(`00000000${len.toString(16).padStart(2, "0")}000000` + "00000000" + "01000000" + "00000000" + "00000000");
    expect(r.stdout).toContain("@@round 1\n[");
    expect(r.stdout).toContain(`@@out 1\n${buildFrame(e).toString("base64")}\n`);
    expect(existsSync(P)).toBe(false);
  });

  it("refuses a line naming anything but a plain name, before loading anything", () => {
    const r = run({ type: "tc", iface: "lo", dispatcher: "", members: "- /objects/p.o /nowhere rules", outputs: "" }, "frame f0 3 AAAA\nround\nrun ../../x f0\n");
    expect(r.code).toBe(2);
    expect(r.stderr).toContain("bad name: ../../x");
    expect(r.calls).toEqual([]);
  });
});

describe("preview: expectations judged against the planned entries", () => {
  it("check() prints the ones the plan would miss, and still passes (the host is the proof)", async () => {
    const logged: string[] = [];
    const log = console.log;
    console.log = (...args: unknown[]) => void logged.push(args.join(" "));
    try {
      const ok = await firewallProvider.check({}, { host, interface: "eth0", name: "fw", deny: ["10.0.0.0/24"], expect: ["tcp 10.0.0.5:1 > 10.0.0.7:80: pass", "tcp 10.0.1.5:1 > 10.0.0.7:80: pass"] });
      expect(ok.failures).toBeUndefined();
      expect(logged).toEqual([
        "bpfleet: 1 packet expectation(s) would be missed by the planned entries (judged without the host; `up` proves them on it and reverts a miss):\n" +
          "  tcp 10.0.0.5:1 > 10.0.0.7:80 syn: pass: wanted pass, the plan gives drop (deny entry 10.0.0.0/24 covers the source)",
      ]);
      logged.length = 0;
      await tcProvider.check({}, { host, interface: "eth0", name: "pol", ingress: { default: "deny", rules: ["allow tcp 22", "allow tcp 80"] }, expect: ["ingress tcp 10.0.0.5:1 > 10.0.0.7:80: pass"] });
      expect(logged).toEqual([]);
      // Nothing is judged while an input it reads is still unknown.
      await firewallProvider.check({}, { host, interface: "eth0", name: "fw", deny: [UNKNOWN], expect: ["tcp 10.0.0.5:1 > 10.0.0.7:80: pass"] });
      expect(logged).toEqual([]);
    } finally {
      console.log = log;
    }
  });
});

describe("a HealthGate target's expectations", () => {
  it("are canonicalised by the grammar of the target's kind, and a bad one is named", () => {
    const target = (kind: string, expect: unknown) => gateTargetSchema.safeParse({ host, kind, name: "fw", expect });
    expect(target("xdp-firewall", ["TCP 10.0.0.5:1 > 10.0.0.7:80: pass"]).data!.expect).toEqual({ "tcp 10.0.0.5:1 > 10.0.0.7:80 syn: pass": "pass" });
    expect(target("xdp-firewall", ["sctp 10.0.0.5:1 > 10.0.0.7:80: pass"]).error!.issues.map((i) => [i.path, i.message])).toEqual([[["expect", 0], '"sctp" is not a protocol: use tcp, udp or icmp']]);
    expect(target("tc-policy", ["tcp 10.0.0.5:1 > 10.0.0.7:80: pass"]).error!.issues[0]!.message).toBe('a TcPolicy expectation names its hook: begin with "ingress" or "egress"');
    expect(target("traffic-mirror", ["tcp 10.0.0.5:1 > 10.0.0.7:80: pass"]).error!.issues[0]!.message).toBe("a traffic-mirror target has no packet expectations (xdp-firewall, tc-policy and maglev do)");
  });
});
