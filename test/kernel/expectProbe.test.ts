// The host side of packet expectations (provider/expect/hostRun.ts and
// sh/expect-probe.sh) run for real on this kernel: the script, as a host runs it
// (`sh -c TEXT bpfleet ARGS`, the frames on stdin), loads probe copies of live
// programs loaded here, runs one bpftool batch per round and removes the copies;
// the verdicts are judged as the lifecycle judges them. Live counters, flows and
// chain slots stay as they were, and no probe pin is left behind.
import { spawnSync } from "node:child_process";
import { readdirSync } from "node:fs";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { canonicalPrefix } from "../../provider/cidr";
import { sumCounters } from "../../provider/counters";
import { parseExpectationText, type ExpectKind } from "../../provider/expect/grammar";
import { runExpectations, type ProbeTarget } from "../../provider/expect/hostRun";
import { CHAIN_SHARED_MAPS, SHARED_MAPS } from "../../provider/expect/probe";
import { encodeBackend, encodeIndex, encodeVip, encodeVipKey, MAPS as LB_MAPS, tableOperations } from "../../provider/maglev/codec";
import { buildTable, diffTable } from "../../provider/maglev/table";
import { batchText } from "../../provider/remote/mapOperations";
import { localObject } from "../../provider/remote/objectUpload";
import type { ExecOptions, ExecResult, SshSession } from "../../provider/remote/ssh";
import { MAPS as TC_MAPS } from "../../provider/tcPolicy/codec";
import { desiredPolicy, observePolicy, planPolicy } from "../../provider/tcPolicy/plan";
import { rulesOf, tcPolicySchema } from "../../provider/tcPolicy/schema";
import { denyOperations, planDeny } from "../../provider/xdpFirewall/plan";
import { buildObjects, kernelTestsUnavailable, loadObject, loadProgram, objectPath, type LoadedObject, type LoadedProgram } from "./progRun";

const unavailable = kernelTestsUnavailable();
if (unavailable) console.warn(`test/kernel/expectProbe: skipped: ${unavailable}`);

/** A session whose scripts run here, as SshSession.runScript runs them on a host. */
const local: SshSession = {
  label: "local",
  async runScript(script: string, args: readonly string[], options: ExecOptions = {}): Promise<ExecResult> {
    const r = spawnSync("sh", ["-c", script, "bpfleet", ...args], { input: options.stdin, maxBuffer: 64 << 20 });
    const result = { code: r.status ?? -1, stdout: r.stdout.toString(), stderr: r.stderr.toString() };
    if (result.code !== 0 && !options.allowFailure) throw new Error(`expect-probe exited ${result.code}: ${result.stderr}`);
    return result;
  },
} as unknown as SshSession;

const byPath = (o: { path: string }) => o.path;
const probePins = () => readdirSync("/sys/fs/bpf").filter((n) => n.startsWith("bpfleet-probe-"));
const parse = (kind: ExpectKind, texts: string[]) => texts.map((t) => parseExpectationText(kind, t));
const u32 = (n: number) => Buffer.from([n & 0xff, (n >> 8) & 0xff, (n >> 16) & 0xff, (n >>> 24) & 0xff]);

describe.skipIf(unavailable !== undefined)("expect-probe.sh on this kernel", { timeout: 120_000 }, () => {
  beforeAll(buildObjects, 120_000);
  afterAll(() => expect(probePins()).toEqual([]));

  it("a firewall alone: each expectation judged, a wrong one missed, the live counters untouched", async () => {
    const fw = await loadProgram(objectPath("xdp_firewall"));
    try {
      const deny = ["192.0.2.9/32", "198.51.100.0/24", "2001:db8:bad::/48"].map(canonicalPrefix);
      await fw.batchText(batchText(denyOperations(planDeny(deny, []), (m) => fw.mapPin(m))));
      const stats = async () => Promise.all([0, 1].map(async (i) => sumCounters(await fw.lookupPerCpu("fw_stats", u32(i)))));
      const before = await stats();
      const target: ProbeTarget = { type: "xdp", iface: "lo", members: [{ object: localObject(objectPath("xdp_firewall")), liveDir: fw.dir, shared: SHARED_MAPS.xdpFirewall }] };
      const texts = [
        "tcp 192.0.2.9:40000 > 10.0.0.1:22 syn: drop",
        "tcp 192.0.2.10:40000 > 10.0.0.1:22 syn: pass",
        "udp 198.51.100.77:5353 > 10.0.0.1:53: drop",
        "icmp 2001:db8:bad::1 > 2001:db8::1: drop",
        "udp [2001:db8:bae::1]:1 > [2001:db8::1]:53: pass",
        // Wrong on purpose: the source is denied.
        "tcp 198.51.100.5:40000 > 10.0.0.1:80 syn: pass",
      ];
      const results = await runExpectations(local, target, parse("xdpFirewall", texts), undefined, byPath);
      expect(Object.keys(results).sort()).toEqual([...texts].sort());
      for (const text of texts.slice(0, 5)) expect(results[text], text).toEqual({ wanted: text.replace(/.*: /, ""), got: text.replace(/.*: /, ""), met: true });
      expect(results[texts[5]!]).toEqual({ wanted: "pass", got: "drop", met: false });
      expect(await stats()).toEqual(before);
      expect(probePins()).toEqual([]);
    } finally {
      fw.close();
    }
  });

  it("a stateful TcPolicy: a reply meets its own flow, the same tuple as a new packet a round of its own; the live flow table stays empty", async () => {
    const live = await loadObject(objectPath("tc_policy"));
    try {
      const inputs = tcPolicySchema.parse({
        host: { address: "192.0.2.1" }, interface: "eth0", name: "ktest", stateful: true,
        ingress: { default: "deny", rules: ["allow tcp 22"] }, egress: { default: "allow" },
      });
      const raw = async (obj: LoadedObject, map: string) => (await obj.dumpMap(map)).map((e) => ({ key: e.key, value: e.value }));
      const observed = observePolicy({ rules: await raw(live, TC_MAPS.rules), tries: {}, config: await live.lookup(TC_MAPS.config, u32(0)) });
      await live.batchText(batchText(planPolicy(desiredPolicy(inputs, rulesOf(inputs)), observed, (m) => live.mapPin(m)).operations));
      const texts = [
        "ingress reply tcp 198.51.100.10:443 > 10.0.0.1:41000 syn ack: pass",
        "ingress tcp 198.51.100.10:443 > 10.0.0.1:41000 syn ack: drop",
        "ingress tcp 198.51.100.20:40000 > 10.0.0.1:22 syn: pass",
        "ingress reply udp 192.0.2.53:53 > 10.0.0.1:33000: pass",
        "egress udp 10.0.0.1:33000 > 192.0.2.53:53: pass",
      ];
      const target: ProbeTarget = { type: "tc", iface: "lo", members: [{ object: localObject(objectPath("tc_policy")), liveDir: live.dir, shared: SHARED_MAPS.tcPolicy }] };
      const results = await runExpectations(local, target, parse("tcPolicy", texts), undefined, byPath);
      for (const text of texts) expect(results[text], text).toMatchObject({ met: true });
      expect(await live.dumpMap(TC_MAPS.flows)).toEqual([]);
    } finally {
      live.close();
    }
  });

  it("through an XDP chain: the firewall copy drops a denied client, the balancer copy names the backend by its MAC; the live chain counts nothing", async () => {
    const M = 251;
    const backends = [{ address: "10.0.0.11", mac: "02:00:00:00:aa:11" }, { address: "10.0.0.12", mac: "02:00:00:00:aa:12" }];
    const dispatcher = await loadProgram(objectPath("xdp_dispatcher"));
    const firewall = await loadProgram(objectPath("xdp_firewall"), "xdp", { xdp_chain: dispatcher.mapPin("xdp_chain") });
    const balancer = await loadProgram(objectPath("xdp_maglev"), "xdp", { xdp_chain: dispatcher.mapPin("xdp_chain") });
    try {
      await firewall.batchText(batchText(denyOperations(planDeny(["192.0.2.66/32"], []), (m) => firewall.mapPin(m))));
      const table = buildTable(backends.map((b) => ({ id: b.address })), M);
      const indexOf = (id: string) => table.backends.indexOf(id) + 1;
      await balancer.updateMap(LB_MAPS.backends, backends.map((b) => ({ key: Buffer.from(encodeIndex(indexOf(b.address))), value: Buffer.from(encodeBackend({ address: b.address, port: 0, mac: b.mac, mtu: 1500 })) })));
      const ops = tableOperations(diffTable(buildTable([], M), table), 0, indexOf, balancer.mapPin(LB_MAPS.table));
      await balancer.updateMap(LB_MAPS.table, ops.map((o) => ({ key: Buffer.from(o.key), value: Buffer.from((o as { value: Uint8Array }).value) })));
      await balancer.updateMap(LB_MAPS.vips, [{ key: Buffer.from(encodeVipKey({ address: "198.51.100.10", port: 80, protocol: "tcp" })), value: Buffer.from(encodeVip({ vipIndex: 0, tableOffset: 0, tableSize: M, mode: "dsr", flowTable: true })) }]);
      for (const [member, slot] of [[firewall, 0], [balancer, 1]] as const) {
        await member.updateMap("xdp_chain_next", [{ key: u32(0), value: u32(slot + 1) }]);
        await dispatcher.batchText(`map update pinned ${dispatcher.mapPin("xdp_chain")} key ${slot} 0 0 0 value pinned ${member.progPin}\n`);
      }
      const chainBefore = await dispatcher.dumpMap("xdp_chain");
      const fwStats = async () => Promise.all([0, 1].map(async (i) => sumCounters(await firewall.lookupPerCpu("fw_stats", u32(i))).packets));
      const fwBefore = await fwStats();

      const target: ProbeTarget = {
        type: "xdp",
        iface: "lo",
        dispatcher: localObject(objectPath("xdp_dispatcher")),
        members: [
          { slot: 0, object: localObject(objectPath("xdp_firewall")), liveDir: firewall.dir, shared: [...SHARED_MAPS.xdpFirewall, ...CHAIN_SHARED_MAPS] },
          { slot: 1, object: localObject(objectPath("xdp_maglev")), liveDir: balancer.dir, shared: [...SHARED_MAPS.maglevService, ...CHAIN_SHARED_MAPS] },
        ],
      };
      const flows = Array.from({ length: 8 }, (_, i) => ({ client: `192.0.2.${10 + i}`, sport: 40000 + i }));
      const texts = flows.map((f) => `tcp ${f.client}:${f.sport} > 198.51.100.10:80 syn: backend 10.0.0.11`);
      texts.push("tcp 192.0.2.66:40000 > 198.51.100.10:80 syn: drop", "tcp 192.0.2.10:40000 > 10.0.0.1:22 syn: pass");
      const view = { mode: "dsr" as const, backends };
      const results = await runExpectations(local, target, parse("maglevService", texts), view, byPath);
      const got = flows.map((_, i) => results[texts[i]!]!);
      // Every flow went to a backend named by its MAC, with the packet untouched beyond Ethernet;
      // the ones that went to 10.0.0.11 are met, the others missed and say where they went.
      for (const r of got) expect(r.got).toMatch(/^backend 10\.0\.0\.1[12]$/);
      for (const r of got) expect(r.met).toBe(r.got === "backend 10.0.0.11");
      expect(new Set(got.map((r) => r.got)).size).toBe(2);
      expect(results["tcp 192.0.2.66:40000 > 198.51.100.10:80 syn: drop"]).toEqual({ wanted: "drop", got: "drop", met: true });
      expect(results["tcp 192.0.2.10:40000 > 10.0.0.1:22 syn: pass"]).toEqual({ wanted: "pass", got: "pass", met: true });
      // The live chain: same slots, the firewall counted nothing, the balancer's connection table is empty.
      expect(await dispatcher.dumpMap("xdp_chain")).toEqual(chainBefore);
      expect(await fwStats()).toEqual(fwBefore);
      expect(await balancer.dumpMap(LB_MAPS.flows)).toEqual([]);
    } finally {
      for (const p of [balancer, firewall, dispatcher] as LoadedProgram[]) p.close();
    }
  });
});
