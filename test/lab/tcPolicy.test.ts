// TcPolicy's lifecycle against real hosts: real sshd, real kernel, real
// connections. h1 runs TCP echo services on 8080, 8081 and 9090 and UDP echo
// services on 5000 and 5001; the client c1 runs TCP and UDP echo services on
// 7000 and 7001 for the host's own outbound connections. eth0 carries both the
// provider's SSH session and the client traffic, so every change runs under the
// lockout guard. The provider is driven directly here; test/e2e drives it
// through the Pulumi CLI.
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { packagedObject } from "../../provider/objects";
import { parseMapDump } from "../../provider/remote/mapOperations";
import { objectRemotePath } from "../../provider/remote/objectUpload";
import { closeAllSessions } from "../../provider/remote/ssh";
import { decodeConfig, decodeFlowKey, decodeFlowValue, encodeConfig, encodeL4Key, IPPROTO, MAPS } from "../../provider/tcPolicy/codec";
import { ALTERED } from "../../provider/tcPolicy/report";
import { TC_PRIORITY, tcHandle, tcPolicyKind as policy, type TcPolicyState } from "../../provider/tcPolicy/lifecycle";
import { checkTcPolicy, type TcPolicyInputs } from "../../provider/tcPolicy/schema";
import { expectRevertedByHost, guardFiles, watchGuards } from "./guards";
import { createLab, type Lab, type LabClient, type LabHost, type Run } from "./lab";
import { pingReaches, tcpdumpListening } from "./traffic";

let lab: Lab;
let privateKey: string;
let h1: LabHost;
let c1: LabClient;
let c2: LabClient;
let workDir: string;
const processes: Run[] = [];

const PIN = "/sys/fs/bpf/bpfleet/tc-policy/pol";
const BASE_RULES = ["allow tcp 22", "allow tcp 8080", "allow udp 5000"];

function inputs(host: LabHost, patch: Record<string, unknown> = {}): TcPolicyInputs {
  const result = checkTcPolicy({
    host: { address: host.address, hostKey: host.hostKey, connectTimeoutMs: 3000, commandTimeoutMs: 60_000 },
    credentials: { privateKey },
    interface: "eth0",
    name: "pol",
    stateful: true,
    ingress: { default: "deny", rules: BASE_RULES },
    timeouts: { tcpTransitory: 3, other: 2 },
    ...patch,
  });
  if (!result.inputs) throw new Error(JSON.stringify(result.failures));
  return result.inputs as TcPolicyInputs;
}

const hex = (b: Uint8Array) => Array.from(b, (x) => x.toString(16).padStart(2, "0"));

async function inHostText(host: LabHost, argv: string[]): Promise<string> {
  return String((await lab.inHost(host, argv)).stdout).trim();
}

async function pinsOn(host: LabHost): Promise<string> {
  return inHostText(host, ["sh", "-c", "ls -R /sys/fs/bpf/bpfleet 2>/dev/null || true"]);
}

interface HookFilter {
  pref: number;
  handle: string;
  name?: string;
}

async function tcFiltersOn(host: LabHost, dev: string, hook: "ingress" | "egress"): Promise<HookFilter[]> {
  const out = await inHostText(host, ["tc", "-j", "filter", "show", "dev", dev, hook]);
  return (JSON.parse(out || "[]") as { pref: number; options?: { handle: string; prog?: { name?: string } } }[])
    .filter((f) => f.options)
    .map((f) => ({ pref: f.pref, handle: f.options!.handle, name: f.options!.prog?.name }));
}

async function hasClsact(host: LabHost, dev = "eth0"): Promise<boolean> {
  return (await inHostText(host, ["tc", "qdisc", "show", "dev", dev])).includes("clsact");
}

async function flowsOn(host: LabHost, pin = PIN) {
  const dump = parseMapDump(await inHostText(host, ["bpftool", "-j", "map", "dump", "pinned", `${pin}/maps/${MAPS.flows}`]));
  return dump.map((e) => ({ key: decodeFlowKey(e.key), value: decodeFlowValue(e.values[0]!) }));
}

async function mapId(host: LabHost, map: string): Promise<number> {
  return (JSON.parse(await inHostText(host, ["bpftool", "-j", "map", "show", "pinned", `${PIN}/maps/${map}`])) as { id: number }).id;
}

// ---------------------------------------------------------------- traffic

type Side = { host: LabHost } | { client: LabClient };

function runOn(side: Side, argv: string[], opts: Parameters<Lab["inHost"]>[2] = {}): Run {
  return "host" in side ? lab.inHost(side.host, argv, opts) : lab.inClient(side.client, argv, opts);
}

function socatAddress(protocol: "TCP" | "UDP", address: string, port: number): string {
  return address.includes(":") ? `${protocol}6:[${address}]:${port}` : `${protocol}4:${address}:${port}`;
}

/** One line sent over a new TCP connection; true when the echo came back. The error says why not. */
async function tcpEcho(from: Side, address: string, port: number): Promise<{ ok: boolean; error: string }> {
  const token = `tcp-${port}-${Math.random().toString(36).slice(2)}`;
  const r = await runOn(from, ["socat", "-T", "2", "-", `${socatAddress("TCP", address, port)},connect-timeout=2`], { input: `${token}\n`, reject: false, timeout: 10_000 });
  return { ok: String(r.stdout).includes(token), error: String(r.stderr) };
}

/** One UDP datagram and its echo. */
async function udpEcho(from: Side, address: string, port: number): Promise<boolean> {
  const token = `udp-${port}-${Math.random().toString(36).slice(2)}`;
  for (let attempt = 0; attempt < 2; attempt++) {
    const r = await runOn(from, ["socat", "-T", "1", "-", socatAddress("UDP", address, port)], { input: `${token}\n`, reject: false, timeout: 10_000 });
    if (String(r.stdout).includes(token)) return true;
  }
  return false;
}

function keep(run: Run): Run {
  processes.push(run);
  return run;
}

/** A long-lived TCP connection (socat with a pipe) that echoes lines. */
class LineSession {
  private received = "";
  private sent = 0;

  private constructor(private readonly proc: Run) {
    proc.stdout!.setEncoding("utf8");
    proc.stdout!.on("data", (d: string) => (this.received += d));
  }

  static async open(from: Side, address: string, port: number): Promise<LineSession> {
    const session = new LineSession(keep(runOn(from, ["socat", "-", socatAddress("TCP", address, port)], { reject: false })));
    await session.roundTrip(3000);
    return session;
  }

  /** Sends a line; resolves with the milliseconds until its echo. */
  async roundTrip(timeoutMs = 2000): Promise<number> {
    const line = `line-${++this.sent}-${Date.now()}`;
    const start = Date.now();
    this.proc.stdin!.write(`${line}\n`);
    while (!this.received.includes(`${line}\n`)) {
      if (Date.now() - start > timeoutMs) throw new Error(`no echo of ${line} within ${timeoutMs} ms`);
      await sleep(5);
    }
    return Date.now() - start;
  }

  /** Exchanges a line every `intervalMs` until the returned function is called. */
  chatter(intervalMs = 100): () => Promise<{ lines: number; slowestMs: number; failures: string[] }> {
    let running = true;
    const stats = { lines: 0, slowestMs: 0, failures: [] as string[] };
    const loop = (async () => {
      while (running) {
        try {
          stats.slowestMs = Math.max(stats.slowestMs, await this.roundTrip());
          stats.lines++;
        } catch (err) {
          stats.failures.push((err as Error).message);
        }
        await sleep(intervalMs);
      }
    })();
    return async () => {
      running = false;
      await loop;
      return stats;
    };
  }

  close(): void {
    this.proc.stdin!.end();
    this.proc.kill("SIGTERM");
  }
}

/** tcpdump on a host interface, both directions, as text lines. */
async function capture(host: LabHost, filter: string[], dev = "eth0"): Promise<() => Promise<string[]>> {
  const proc = lab.inHost(host, ["tcpdump", "-i", dev, "-Q", "inout", "-n", "-l", "--immediate-mode", ...filter], { reject: false });
  let out = "";
  proc.stdout!.on("data", (d: Buffer) => (out += d.toString()));
  const stop = await tcpdumpListening(proc, dev, 300);
  return async () => {
    await stop();
    return out.split("\n").filter(Boolean);
  };
}

// ---------------------------------------------------------------- lab

beforeAll(async () => {
  lab = await createLab("tcpol", { hosts: 1, clients: 2 });
  privateKey = readFileSync(lab.privateKeyPath, "utf8");
  h1 = lab.hosts[0]!;
  [c1, c2] = lab.clients as [LabClient, LabClient];
  workDir = mkdtempSync(join(lab.dir, "tcpol-"));
  for (const port of [8080, 8081, 9090]) keep(lab.inHost(h1, ["socat", `TCP6-LISTEN:${port},ipv6only=0,reuseaddr,fork`, "EXEC:cat"], { reject: false }));
  for (const port of [5000, 5001]) keep(lab.inHost(h1, ["socat", "-T", "1", `UDP6-RECVFROM:${port},ipv6only=0,fork`, "EXEC:cat"], { reject: false }));
  keep(lab.inClient(c1, ["socat", "TCP6-LISTEN:7000,ipv6only=0,reuseaddr,fork", "EXEC:cat"], { reject: false }));
  keep(lab.inClient(c1, ["socat", "-T", "1", "UDP6-RECVFROM:7001,ipv6only=0,fork", "EXEC:cat"], { reject: false }));
  await sleep(500);
});

afterAll(async () => {
  for (const p of processes) p.kill("SIGTERM");
  closeAllSessions();
  if (workDir) rmSync(workDir, { recursive: true, force: true });
  await lab?.destroy();
});

describe("TcPolicy on a lab host: stateful, default-deny ingress, SSH + tcp/8080 + udp/5000 allowed", () => {
  let created: { id: string; outs: TcPolicyState };

  it("before any policy, every service answers (the listeners are real)", async () => {
    for (const port of [8080, 8081, 9090]) expect((await tcpEcho({ client: c1 }, h1.address, port)).ok).toBe(true);
    for (const port of [5000, 5001]) expect(await udpEcho({ client: c1 }, h1.address, port)).toBe(true);
    expect((await tcpEcho({ host: h1 }, c1.address, 7000)).ok).toBe(true);
    expect(await pingReaches(lab, c1, h1.address)).toBe(true);
  });

  it("check refuses a policy that does not let SSH in, unless allowLockout is set", () => {
    const base = { host: { address: h1.address }, interface: "eth0", name: "pol", stateful: true };
    const refused = checkTcPolicy({ ...base, ingress: { default: "deny", rules: ["allow tcp 8080"] } });
    expect(refused.failures?.[0]?.reason).toMatch(/does not allow inbound TCP to port 22, the management SSH path.*allowLockout: true/);
    expect(checkTcPolicy({ ...base, ingress: { default: "deny", rules: ["allow tcp 8080"] }, allowLockout: true }).failures).toBeUndefined();
  });

  it("create: a client reaches 8080; its SYNs to 9090 arrive but are dropped by the policy (never answered, counted), v4 and v6", async () => {
    created = await policy.create(inputs(h1));
    expect(created.id).toBe(`root@${h1.address}/tc-policy/pol`);
    expect(created.outs.attached).toBe(true);
    expect(Object.keys(created.outs.ingress.rules)).toEqual(["allow tcp 22", "allow tcp 8080", "allow udp 5000"]);
    const handle = `0x${tcHandle("pol").toString(16)}`;
    expect(await tcFiltersOn(h1, "eth0", "ingress")).toEqual([{ pref: TC_PRIORITY, handle, name: "tc_policy_ingre" }]);
    expect(await tcFiltersOn(h1, "eth0", "egress")).toEqual([{ pref: TC_PRIORITY, handle, name: "tc_policy_egres" }]);

    expect((await tcpEcho({ client: c1 }, h1.address, 8080)).ok).toBe(true);
    expect((await tcpEcho({ client: c1 }, h1.address6, 8080)).ok).toBe(true);

    const deniedBefore = (await policy.read(created.id, created.outs))!.outs.counters.ingressDeniedPackets;
    const stop = await capture(h1, ["tcp", "port", "9090"]);
    const v4 = await tcpEcho({ client: c1 }, h1.address, 9090);
    const v6 = await tcpEcho({ client: c1 }, h1.address6, 9090);
    const frames = await stop();
    for (const attempt of [v4, v6]) {
      expect(attempt.ok).toBe(false);
      // Timed out, not refused: the listener never saw the SYN, and nothing sent a RST.
      expect(attempt.error).toMatch(/timed out/i);
      expect(attempt.error).not.toMatch(/refused/i);
    }
    // Every frame on the wire is a client SYN to 9090 (first tries and retransmissions); none came back.
    expect(frames.length).toBeGreaterThanOrEqual(2);
    for (const frame of frames) expect(frame).toMatch(/ > (10\.[\d.]+|fd00:[\w:]+)\.9090: Flags \[S\]/);
    expect(frames.filter((f) => /\.9090 > /.test(f))).toEqual([]);
    expect(await inHostText(h1, ["ss", "-Htn", "sport", "=", ":9090"])).toBe("");
    const after = (await policy.read(created.id, created.outs))!.outs.counters;
    expect(after.ingressDeniedPackets - deniedBefore).toBeGreaterThanOrEqual(frames.length);
  });

  it("the host's own outbound TCP, UDP and ping get their replies (recorded on egress); a client's ping does not get in", async () => {
    expect((await tcpEcho({ host: h1 }, c1.address, 7000)).ok).toBe(true);
    expect((await tcpEcho({ host: h1 }, c1.address6, 7000)).ok).toBe(true);
    expect(await udpEcho({ host: h1 }, c1.address, 7001)).toBe(true);
    expect((await lab.inHost(h1, ["ping", "-n", "-c", "1", "-W", "1", c1.address], { reject: false })).exitCode).toBe(0);
    expect(await pingReaches(lab, c1, h1.address)).toBe(false);
    const flows = await flowsOn(h1);
    const outbound = flows.find((f) => f.key.remote === c1.address && f.key.remotePort === 7000 && f.key.protocol === IPPROTO.TCP);
    expect(outbound?.value.flags).toBeDefined();
  });

  it("the same rules stateless: the host's outbound connections get no replies (nothing recorded them)", async () => {
    const stateless = await policy.update(created.id, created.outs, inputs(h1, { stateful: false }));
    expect(stateless.stateful).toBe(false);
    expect((await tcpEcho({ host: h1 }, c1.address, 7000)).ok).toBe(false);
    expect(await udpEcho({ host: h1 }, c1.address, 7001)).toBe(false);
    expect((await tcpEcho({ client: c1 }, h1.address, 8080)).ok).toBe(true);
    created = { id: created.id, outs: await policy.update(created.id, stateless, inputs(h1)) };
    expect((await tcpEcho({ host: h1 }, c1.address, 7000)).ok).toBe(true);
  });

  it("UDP request/response: the allowed port answers, another port with a listener stays silent, v4 and v6", async () => {
    expect(await udpEcho({ client: c1 }, h1.address, 5000)).toBe(true);
    expect(await udpEcho({ client: c1 }, h1.address6, 5000)).toBe(true);
    expect(await udpEcho({ client: c1 }, h1.address, 5001)).toBe(false);
    expect(await udpEcho({ client: c1 }, h1.address6, 5001)).toBe(false);
  });

  it("idle flows expire: a closed TCP flow after tcpTransitory (3 s), a UDP flow after other (2 s): read stops counting them, a packet on the tuple finds them gone", async () => {
    const expiredBefore = (await policy.read(created.id, created.outs))!.outs.counters.flowsExpired;
    expect((await tcpEcho({ host: h1 }, c1.address, 7000)).ok).toBe(true);
    expect(await udpEcho({ host: h1 }, c1.address, 7001)).toBe(true);
    const liveBefore = (await policy.read(created.id, created.outs))!.outs.liveFlows;
    const find = (flows: Awaited<ReturnType<typeof flowsOn>>, port: number, protocol: number) =>
      flows.filter((f) => f.key.remote === c1.address && f.key.remotePort === port && f.key.protocol === protocol);
    const live = await flowsOn(h1);
    const udpFlow = find(live, 7001, IPPROTO.UDP).sort((a, b) => Number(b.value.lastSeenNs - a.value.lastSeenNs))[0];
    expect(udpFlow).toBeDefined();
    expect(find(live, 7000, IPPROTO.TCP).some((f) => f.value.state === "closing")).toBe(true);
    await sleep(4500);
    // Expiry is lazy (no BPF timers): the entries wait for a packet or the LRU, but are no longer live.
    const liveAfter = (await policy.read(created.id, created.outs))!.outs.liveFlows;
    expect(liveBefore - liveAfter, "the UDP and the closed TCP flow left the live count").toBeGreaterThanOrEqual(2);
    // A datagram on the same tuple finds the UDP entry idle: counted as expired and replaced by a fresh flow
    // (which the echo's reply then makes established).
    await lab.inHost(h1, ["sh", "-c", `echo again | socat -u - UDP4-SENDTO:${c1.address}:7001,sourceport=${udpFlow!.key.localPort},reuseaddr`]);
    const fresh = find(await flowsOn(h1), 7001, IPPROTO.UDP).find((f) => f.key.localPort === udpFlow!.key.localPort);
    expect(fresh!.value.lastSeenNs).toBeGreaterThan(udpFlow!.value.lastSeenNs);
    const read = (await policy.read(created.id, created.outs))!.outs;
    expect(read.counters.flowsExpired).toBeGreaterThan(expiredBefore);
  });

  it("read: rules as loaded, counters, packets per rule, live flows", async () => {
    const session = await LineSession.open({ client: c1 }, h1.address, 8080);
    try {
      const read = await policy.read(created.id, created.outs);
      expect(read!.inputs.ingress).toEqual(created.outs.ingress);
      expect(read!.inputs.egress).toEqual({ default: "allow", rules: {} });
      expect(read!.inputs.timeouts).toEqual({ tcpEstablished: 21600, tcpTransitory: 3, other: 2 });
      expect(read!.inputs.attached).toBe(true);
      expect(read!.outs.ruleHits.ingress["allow tcp 8080"]).toBeGreaterThan(0);
      expect(read!.outs.ruleHits.ingress["allow udp 5000"]).toBeGreaterThan(0);
      expect(read!.outs.counters.ingressAllowedPackets).toBeGreaterThan(0);
      expect(read!.outs.counters.egressAllowedPackets).toBeGreaterThan(0);
      expect(read!.outs.counters.flowsCreated).toBeGreaterThan(0);
      expect(read!.outs.liveFlows).toBeGreaterThanOrEqual(1);
      expect(read!.outs.programs).toEqual(created.outs.programs);
    } finally {
      session.close();
    }
  });

  it("established connections keep working across an update that adds a rule, one that removes their rule, and a program upgrade against the same maps", async () => {
    const inbound = await LineSession.open({ client: c1 }, h1.address, 8080);
    // Only its flow entry lets the replies of this one in.
    const outbound = await LineSession.open({ host: h1 }, c1.address, 7000);
    try {
      const stops = [inbound.chatter(), outbound.chatter()];
      const flowsMap = await mapId(h1, MAPS.flows);

      expect((await tcpEcho({ client: c1 }, h1.address, 8081)).ok).toBe(false);
      let outs = await policy.update(created.id, created.outs, inputs(h1, { ingress: { default: "deny", rules: [...BASE_RULES, "allow tcp 8081"] } }));
      expect(outs.programs).toEqual(created.outs.programs);
      expect((await tcpEcho({ client: c1 }, h1.address, 8081)).ok).toBe(true);

      // Stateful: the live flow passes before any rule; new connections to 8080 are refused.
      outs = await policy.update(created.id, outs, inputs(h1, { ingress: { default: "deny", rules: ["allow tcp 22", "allow tcp 8081", "allow udp 5000"] } }));
      expect((await tcpEcho({ client: c1 }, h1.address, 8080)).ok).toBe(false);

      const upgraded = await policy.update(created.id, { ...outs, objectSha256: "0".repeat(64) }, inputs(h1));
      expect(upgraded.programs.ingress.id).not.toBe(outs.programs.ingress.id);
      expect(upgraded.programs.egress.id).not.toBe(outs.programs.egress.id);
      expect(upgraded.objectSha256).toBe(packagedObject("tc_policy").sha256);
      expect(await mapId(h1, MAPS.flows)).toBe(flowsMap);
      expect(await pinsOn(h1)).not.toMatch(/progs_new|progs_old|maps_staged/);
      const ids = (await tcFiltersOn(h1, "eth0", "ingress")).length;
      expect(ids).toBe(1);
      await sleep(500);

      for (const stop of stops) {
        const stats = await stop();
        expect(stats.failures).toEqual([]);
        expect(stats.lines).toBeGreaterThan(10);
        // A dropped segment would show as a retransmission, 200 ms or more.
        expect(stats.slowestMs).toBeLessThan(200);
      }
      created = { id: created.id, outs: upgraded };
    } finally {
      inbound.close();
      outbound.close();
    }
    expect((await tcpEcho({ client: c1 }, h1.address, 8080)).ok).toBe(true);
  });

  it("read: a trie entry deleted by hand and a default changed by hand show as drift; update restores both", async () => {
    const l4Key = encodeL4Key({ direction: "ingress", protocol: IPPROTO.TCP, port: 8080, prefixLength: 32 });
    await lab.inHost(h1, ["bpftool", "map", "delete", "pinned", `${PIN}/maps/${MAPS.l4}`, "key", "hex", ...hex(l4Key)]);
    expect((await tcpEcho({ client: c1 }, h1.address, 8080)).ok).toBe(false);
    let read = await policy.read(created.id, created.outs);
    expect(Object.keys(read!.inputs.ingress.rules)).toEqual(["allow tcp 22", `allow tcp 8080 ${ALTERED}`, "allow udp 5000"]);
    let outs = await policy.update(created.id, read!.outs, inputs(h1));
    expect((await tcpEcho({ client: c1 }, h1.address, 8080)).ok).toBe(true);

    const cfgPin = `${PIN}/maps/${MAPS.config}`;
    const config = decodeConfig(parseMapDump(await inHostText(h1, ["bpftool", "-j", "map", "dump", "pinned", cfgPin]))[0]!.values[0]!);
    await lab.inHost(h1, ["bpftool", "map", "update", "pinned", cfgPin, "key", "hex", "00", "00", "00", "00", "value", "hex", ...hex(encodeConfig({ ...config, ingressDefault: "allow" }))]);
    expect((await tcpEcho({ client: c1 }, h1.address, 9090)).ok).toBe(true);
    read = await policy.read(created.id, outs);
    expect(read!.inputs.ingress.default).toBe("allow");
    outs = await policy.update(created.id, read!.outs, inputs(h1));
    expect(outs.ingress.default).toBe("deny");
    expect((await tcpEcho({ client: c1 }, h1.address, 9090)).ok).toBe(false);
    expect((await policy.read(created.id, outs))!.inputs.ingress).toEqual(created.outs.ingress);
    created = { id: created.id, outs };
  });

  it("refuses rules that would drop the provider's own SSH address (check could not know it), changing nothing", async () => {
    const before = await policy.read(created.id, created.outs);
    const narrow = inputs(h1, { ingress: { default: "deny", rules: ["allow tcp 22 from 192.0.2.0/24", "allow tcp 8080"] } });
    await expect(policy.update(created.id, created.outs, narrow)).rejects.toThrow(
      new RegExp(`ingress: the default "deny".*drops the management SSH session \\(TCP from ${lab.gateway4.replace(/\./g, "\\.")}.*allowLockout: true.*Nothing was changed`),
    );
    const denyFromLab = inputs(h1, { ingress: { default: "deny", rules: [...BASE_RULES, `deny tcp 22 from ${lab.subnet4}`] } });
    await expect(policy.update(created.id, created.outs, denyFromLab)).rejects.toThrow(/rule "deny tcp 22 from 10\.200\.\d+\.0\/24" drops the management SSH session/);
    const after = await policy.read(created.id, created.outs);
    expect(after!.inputs.ingress).toEqual(before!.inputs.ingress);
    expect(after!.outs.programs).toEqual(before!.outs.programs);
  });

  it("a change that fails half way (the new object does not load) is rolled back: programs, filters and rules as before; a new policy leaves nothing", async () => {
    const before = await policy.read(created.id, created.outs);
    // A corrupt object in the host's content-addressed cache: the upload is skipped, the load fails.
    const cached = objectRemotePath(packagedObject("tc_policy"));
    await lab.inHost(h1, ["sh", "-c", 'cat > "$1"', "sh", cached], { input: "not an ELF object" });
    try {
      const upgrade = inputs(h1, { ingress: { default: "deny", rules: [...BASE_RULES, "allow tcp 9090"] } });
      await expect(policy.update(created.id, { ...created.outs, objectSha256: "0".repeat(64) }, upgrade)).rejects.toThrow(/bpftool prog loadall/);
      await expect(policy.create(inputs(h1, { name: "broken" }))).rejects.toThrow(/bpftool prog loadall/);
    } finally {
      await lab.inHost(h1, ["rm", "-f", cached]);
    }
    const after = await policy.read(created.id, created.outs);
    expect(after!.inputs.ingress).toEqual(before!.inputs.ingress);
    expect(after!.outs.programs).toEqual(before!.outs.programs);
    expect(after!.outs.attached).toBe(true);
    expect(await pinsOn(h1)).not.toMatch(/progs_new|progs_old|maps_staged|broken/);
    expect((await tcFiltersOn(h1, "eth0", "ingress")).map((f) => f.handle)).toEqual([`0x${created.outs.tcHandle.toString(16)}`]);
    expect((await tcpEcho({ client: c1 }, h1.address, 9090)).ok).toBe(false);
    expect((await tcpEcho({ client: c1 }, h1.address, 8080)).ok).toBe(true);
  });

  it("lockout guard: with allowLockout, an upgrade that also moves the filters and whose rules cut SSH is undone by the host itself within lockoutRevertSeconds (old programs, filters at their old priority, maps back), and the update fails saying so", async () => {
    const before = await policy.read(created.id, created.outs);
    const cutting = inputs(h1, { ingress: { default: "deny", rules: ["allow tcp 8080"] }, allowLockout: true, lockoutRevertSeconds: 10, priority: 9 });
    const stale = { ...created.outs, objectSha256: "0".repeat(64) };
    await expectRevertedByHost(
      lab,
      h1,
      10,
      () => policy.update(created.id, stale, cutting),
      /fresh SSH login failed.*the policy cuts the management path.*A fresh login worked again.*had fired: the change was undone/s,
    );
    const after = await policy.read(created.id, created.outs);
    expect(after!.inputs.ingress).toEqual(before!.inputs.ingress);
    expect(after!.outs.programs).toEqual(before!.outs.programs);
    expect(after!.outs.attached).toBe(true);
    const handle = `0x${tcHandle("pol").toString(16)}`;
    expect(await tcFiltersOn(h1, "eth0", "ingress")).toEqual([{ pref: TC_PRIORITY, handle, name: "tc_policy_ingre" }]);
    expect(await tcFiltersOn(h1, "eth0", "egress")).toEqual([{ pref: TC_PRIORITY, handle, name: "tc_policy_egres" }]);
    expect(await pinsOn(h1)).not.toMatch(/progs_new|progs_old/);
    expect((await tcpEcho({ client: c1 }, h1.address, 8080)).ok).toBe(true);
    expect((await tcpEcho({ client: c1 }, h1.address, 9090)).ok).toBe(false);
  }, 90_000);

  it("lockout guard: a new policy that cuts SSH is removed whole by the host", async () => {
    const cutting = inputs(h1, { name: "cut", ingress: { default: "deny", rules: ["allow tcp 8080"] }, allowLockout: true, lockoutRevertSeconds: 10 });
    await expect(policy.create(cutting)).rejects.toThrow(/fresh SSH login failed.*the change was undone/s);
    expect(await pinsOn(h1)).not.toContain("cut");
    expect((await tcFiltersOn(h1, "eth0", "ingress")).map((f) => f.handle)).toEqual([`0x${created.outs.tcHandle.toString(16)}`]);
    expect((await lab.ssh(h1, ["true"], { reject: false })).exitCode).toBe(0);
  }, 90_000);

  it("lockoutGuard: false applies a change with no revert armed; with the guard, the same kind of change arms one with the window asked for and disarms it", async () => {
    const stop = await watchGuards(lab, h1);
    const open = await policy.update(created.id, created.outs, inputs(h1, { ingress: { default: "deny", rules: [...BASE_RULES, "allow tcp 9090"] }, lockoutGuard: false }));
    expect(await stop()).toEqual([]);
    expect(open.lockoutGuard).toBe(false);
    expect((await tcpEcho({ client: c1 }, h1.address, 9090)).ok).toBe(true);

    const stopAgain = await watchGuards(lab, h1);
    const outs = await policy.update(created.id, open, inputs(h1, { lockoutRevertSeconds: 45 }));
    const armed = await stopAgain();
    expect(armed.map((g) => g.seconds)).toEqual([45]);
    // Disarmed: the revert script, its watcher's pid file and any trace of a run are gone.
    expect(await guardFiles(lab, h1, armed[0]!.token)).toEqual([]);
    expect((await tcpEcho({ client: c1 }, h1.address, 9090)).ok).toBe(false);
    created = { id: created.id, outs: await policy.update(created.id, outs, inputs(h1)) };
  });

  it("priority: the filters move to another priority in place (same programs and maps; an open connection and its flow carry on) and back", async () => {
    const handle = `0x${tcHandle("pol").toString(16)}`;
    const session = await LineSession.open({ client: c1 }, h1.address, 8080);
    try {
      const stop = session.chatter();
      const moved = await policy.update(created.id, created.outs, inputs(h1, { priority: 7 }));
      expect(moved.tcPriority).toBe(7);
      expect(moved.programs).toEqual(created.outs.programs);
      expect(await tcFiltersOn(h1, "eth0", "ingress")).toEqual([{ pref: 7, handle, name: "tc_policy_ingre" }]);
      expect(await tcFiltersOn(h1, "eth0", "egress")).toEqual([{ pref: 7, handle, name: "tc_policy_egres" }]);
      expect((await tcpEcho({ client: c1 }, h1.address, 8080)).ok).toBe(true);
      expect((await tcpEcho({ client: c1 }, h1.address, 9090)).ok).toBe(false);
      const read = await policy.read(created.id, moved);
      expect(read!.outs.attached).toBe(true);
      expect(read!.inputs.priority).toBe(7);

      const back = await policy.update(created.id, moved, inputs(h1));
      expect(back.tcPriority).toBe(TC_PRIORITY);
      expect(await tcFiltersOn(h1, "eth0", "ingress")).toEqual([{ pref: TC_PRIORITY, handle, name: "tc_policy_ingre" }]);
      expect(await tcFiltersOn(h1, "eth0", "egress")).toEqual([{ pref: TC_PRIORITY, handle, name: "tc_policy_egres" }]);
      const stats = await stop();
      expect(stats.failures).toEqual([]);
      expect(stats.lines).toBeGreaterThan(3);
      expect(stats.slowestMs).toBeLessThan(200);
      created = { id: created.id, outs: back };
    } finally {
      session.close();
    }
  });

  it("priority: one that holds a filter for another protocol is refused, naming it, and nothing changes", async () => {
    const empty = "/tmp/foreign_tc.bpf.o";
    await lab.putFile(h1, empty, packagedObject("empty_tc").bytes);
    await lab.inHost(h1, ["tc", "filter", "add", "dev", "eth0", "ingress", "prio", "9", "protocol", "ip", "handle", "0x5", "bpf", "da", "obj", empty, "sec", "tc"]);
    try {
      await expect(policy.update(created.id, created.outs, inputs(h1, { priority: 9 }))).rejects.toThrow(
        /eth0 ingress has a bpf filter for protocol ip at priority 9.*Choose another priority\. Nothing was changed/,
      );
      expect((await tcFiltersOn(h1, "eth0", "ingress")).map((f) => [f.pref, f.name])).toEqual([[TC_PRIORITY, "tc_policy_ingre"], [9, "empty_tc"]]);
    } finally {
      await lab.inHost(h1, ["tc", "filter", "del", "dev", "eth0", "ingress", "prio", "9", "handle", "0x5", "bpf"]);
    }
  });

  it("other TC filters on the hook are left alone and still see what the policy passes", async () => {
    // A filter after ours (priority 100) that drops UDP to port 7777: had the
    // policy returned TC_ACT_OK for what it passes, the filter would never run.
    const src = join(workDir, "drop7777.bpf.c");
    writeFileSync(
      src,
      `#include <linux/bpf.h>\n#include <linux/pkt_cls.h>\n#include <bpf/bpf_helpers.h>\n` +
        `SEC("tc") int drop7777(struct __sk_buff *skb) {\n` +
        `  unsigned char b[26];\n` +
        `  if (bpf_skb_load_bytes(skb, 12, b, sizeof(b))) return TC_ACT_OK;\n` +
        `  /* IPv4 without options, UDP, destination port 7777 (0x1e61) */\n` +
        `  if (b[0] == 0x08 && b[1] == 0x00 && b[2] == 0x45 && b[11] == 17 && b[24] == 0x1e && b[25] == 0x61) return TC_ACT_SHOT;\n` +
        `  return TC_ACT_OK;\n}\nchar LICENSE[] SEC("license") = "GPL";\n`,
    );
    const multiarch = execFileSync("gcc", ["-dumpmachine"]).toString().trim();
    execFileSync("clang", ["-O2", "-g", "-target", "bpf", "-I", `/usr/include/${multiarch}`, "-c", src, "-o", join(workDir, "drop7777.bpf.o")]);
    await lab.inHost(h1, ["tc", "filter", "add", "dev", "eth0", "ingress", "prio", "100", "handle", "0x7", "bpf", "da", "obj", join(workDir, "drop7777.bpf.o"), "sec", "tc"]);
    try {
      const outs = await policy.update(created.id, created.outs, inputs(h1, { ingress: { default: "deny", rules: [...BASE_RULES, "allow udp 7777-7778"] } }));
      const receivers = [7777, 7778].map((port) => lab.inHost(h1, ["timeout", "3", "socat", "-u", `UDP4-RECV:${port}`, "STDOUT"], { reject: false }));
      await sleep(300);
      for (const port of [7777, 7778]) await lab.inClient(c1, ["sh", "-c", `echo token-${port} | socat -u STDIN UDP4-SENDTO:${h1.address}:${port}`]);
      const [r7777, r7778] = await Promise.all(receivers);
      expect(String(r7777!.stdout)).not.toContain("token-7777");
      expect(String(r7778!.stdout)).toContain("token-7778");
      expect((await tcFiltersOn(h1, "eth0", "ingress")).map((f) => [f.pref, f.name])).toEqual([[TC_PRIORITY, "tc_policy_ingre"], [100, "drop7777"]]);
      created = { id: created.id, outs: await policy.update(created.id, outs, inputs(h1)) };
      expect((await tcFiltersOn(h1, "eth0", "ingress")).map((f) => f.name)).toEqual(["tc_policy_ingre", "drop7777"]);
    } catch (err) {
      await lab.inHost(h1, ["tc", "filter", "del", "dev", "eth0", "ingress", "prio", "100", "handle", "0x7", "bpf"]);
      throw err;
    }
  });

  it("a second TcPolicy on another interface of the same host: its own handle and pins, each governs only its interface", async () => {
    // pol0: a veth from h1 to c2, beside eth0.
    execFileSync("ip", ["link", "add", "pol0", "netns", h1.netns, "type", "veth", "peer", "name", "pol0", "netns", c2.netns]);
    await lab.inHost(h1, ["ip", "addr", "add", "192.168.77.1/24", "dev", "pol0"]);
    await lab.inHost(h1, ["ip", "link", "set", "pol0", "up"]);
    await lab.inClient(c2, ["ip", "addr", "add", "192.168.77.2/24", "dev", "pol0"]);
    await lab.inClient(c2, ["ip", "link", "set", "pol0", "up"]);
    expect((await tcpEcho({ client: c2 }, "192.168.77.1", 8080)).ok).toBe(true);

    // No SSH on pol0, so no rule for it: allowLockout is the documented override.
    const other = await policy.create(inputs(h1, { interface: "pol0", name: "polb", stateful: false, allowLockout: true, ingress: { default: "deny", rules: ["allow tcp 8081"] } }));
    expect(other.outs.tcHandle).not.toBe(created.outs.tcHandle);
    expect(other.outs.qdiscCreated).toBe(true);
    expect(await pinsOn(h1)).toMatch(/tc-policy\/pol:[\s\S]*tc-policy\/polb:/);
    expect((await tcFiltersOn(h1, "pol0", "ingress")).map((f) => f.handle)).toEqual([`0x${other.outs.tcHandle.toString(16)}`]);
    expect((await tcFiltersOn(h1, "eth0", "ingress")).map((f) => f.handle)).toContain(`0x${created.outs.tcHandle.toString(16)}`);

    // pol0 lets in 8081 only; eth0 keeps its own rules (8080 in, 8081 out).
    expect((await tcpEcho({ client: c2 }, "192.168.77.1", 8081)).ok).toBe(true);
    expect((await tcpEcho({ client: c2 }, "192.168.77.1", 8080)).ok).toBe(false);
    expect((await tcpEcho({ client: c1 }, h1.address, 8080)).ok).toBe(true);
    expect((await tcpEcho({ client: c1 }, h1.address, 8081)).ok).toBe(false);

    await policy.delete(other.id, other.outs);
    expect(await pinsOn(h1)).not.toContain("polb");
    expect(await hasClsact(h1, "pol0")).toBe(false);
    expect((await tcpEcho({ client: c2 }, "192.168.77.1", 8080)).ok).toBe(true);
    expect((await tcpEcho({ client: c1 }, h1.address, 9090)).ok).toBe(false);
    expect((await policy.read(created.id, created.outs))!.outs.attached).toBe(true);
  });

  it("delete removes only its filters and pins; the clsact qdisc another filter still uses stays; deleting again is a no-op", async () => {
    await policy.delete(created.id, created.outs);
    expect(await pinsOn(h1)).not.toContain("pol");
    expect(await tcFiltersOn(h1, "eth0", "ingress")).toEqual([{ pref: 100, handle: "0x7", name: "drop7777" }]);
    expect(await tcFiltersOn(h1, "eth0", "egress")).toEqual([]);
    expect(created.outs.qdiscCreated).toBe(true);
    expect(await hasClsact(h1)).toBe(true);
    expect((await tcpEcho({ client: c1 }, h1.address, 9090)).ok).toBe(true);
    expect(await pingReaches(lab, c1, h1.address)).toBe(true);
    await policy.delete(created.id, created.outs);
    expect(await policy.read(created.id, created.outs)).toBeUndefined();
    await lab.inHost(h1, ["tc", "filter", "del", "dev", "eth0", "ingress", "prio", "100", "handle", "0x7", "bpf"]);
    await lab.inHost(h1, ["tc", "qdisc", "del", "dev", "eth0", "clsact"]);
  });

  it("the clsact qdisc it created goes with its last filter; one that was there before stays", async () => {
    const made = await policy.create(inputs(h1, { name: "tmp" }));
    expect(made.outs.qdiscCreated).toBe(true);
    await policy.delete(made.id, made.outs);
    expect(await hasClsact(h1)).toBe(false);

    await lab.inHost(h1, ["tc", "qdisc", "add", "dev", "eth0", "clsact"]);
    const again = await policy.create(inputs(h1, { name: "tmp" }));
    expect(again.outs.qdiscCreated).toBe(false);
    await policy.delete(again.id, again.outs);
    expect(await hasClsact(h1)).toBe(true);
    await lab.inHost(h1, ["tc", "qdisc", "del", "dev", "eth0", "clsact"]);
    expect(await pinsOn(h1)).toBe("");
  });
});

describe("TcPolicy refuses, and leaves the host as it was", () => {
  async function expectUntouched(): Promise<void> {
    expect(await pinsOn(h1)).not.toContain("bad");
    expect(await hasClsact(h1)).toBe(false);
    expect((await tcpEcho({ client: c1 }, h1.address, 9090)).ok).toBe(true);
  }

  it.each([
    ["a non-Ethernet interface", { interface: "lo" }, /interface "lo" is not an Ethernet interface \(link type loopback\).*Nothing was changed/],
    ["an interface that does not exist", { interface: "eth9" }, /interface "eth9" does not exist on the host \(it has: .*eth0/],
  ])("%s", async (_name, patch, message) => {
    await expect(policy.create(inputs(h1, { name: "bad", ...patch }))).rejects.toThrow(message);
    await expectUntouched();
  });

  it("an old-style ingress qdisc on the interface", async () => {
    await lab.inHost(h1, ["tc", "qdisc", "add", "dev", "eth0", "ingress"]);
    try {
      await expect(policy.create(inputs(h1, { name: "bad" }))).rejects.toThrow(/has an "ingress" qdisc on its ingress hook.*Nothing was changed/);
      expect(await pinsOn(h1)).not.toContain("bad");
    } finally {
      await lab.inHost(h1, ["tc", "qdisc", "del", "dev", "eth0", "ingress"]);
    }
  });

  it("a filter it did not attach in its priority and handle", async () => {
    const empty = "/tmp/foreign_tc.bpf.o";
    await lab.putFile(h1, empty, packagedObject("empty_tc").bytes);
    await lab.inHost(h1, ["tc", "qdisc", "add", "dev", "eth0", "clsact"]);
    await lab.inHost(h1, ["tc", "filter", "add", "dev", "eth0", "egress", "prio", String(TC_PRIORITY), "handle", `0x${tcHandle("bad").toString(16)}`, "bpf", "da", "obj", empty, "sec", "tc"]);
    try {
      await expect(policy.create(inputs(h1, { name: "bad" }))).rejects.toThrow(/eth0 egress already has a bpf filter at priority 2 .*empty_tc.*did not attach/);
      expect(await pinsOn(h1)).not.toContain("bad");
      expect((await tcFiltersOn(h1, "eth0", "egress")).map((f) => f.name)).toEqual(["empty_tc"]);
      expect(await tcFiltersOn(h1, "eth0", "ingress")).toEqual([]);
    } finally {
      await lab.inHost(h1, ["tc", "qdisc", "del", "dev", "eth0", "clsact"]);
    }
  });
});
