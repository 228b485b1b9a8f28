// End to end: examples/tcPolicy through the real pulumi CLI. A stateful policy
// on the lab host's eth0 (which also carries the CLI's SSH session): inbound,
// SSH and the configured services only; the host's own connections get their
// replies. Established connections keep exchanging lines while `pulumi up`
// changes the rules; previews show rules added and removed; a hand edit shows
// on refresh; check failures come through the CLI; destroy removes only what
// the policy made.
import { readFileSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { packagedObject } from "../../provider/objects";
import { encodeL4Key, IPPROTO, MAPS } from "../../provider/tcPolicy/codec";
import { createLab, type Lab, type LabClient, type LabHost, type Run } from "../lab/lab";
import { PulumiProject } from "./pulumiProject";

let lab: Lab;
let project: PulumiProject;
let h1: LabHost;
let c1: LabClient;
const processes: Run[] = [];
const PIN = "/sys/fs/bpf/bpfleet/tc-policy/edge-policy";

type Side = { host: LabHost } | { client: LabClient };
const runOn = (side: Side, argv: string[], opts: Parameters<Lab["inHost"]>[2] = {}): Run =>
  "host" in side ? lab.inHost(side.host, argv, opts) : lab.inClient(side.client, argv, opts);

/** One line over a new TCP connection; true when its echo came back. */
async function tcpEcho(from: Side, address: string, port: number): Promise<boolean> {
  const token = `tcp-${port}-${Math.random().toString(36).slice(2)}`;
  const r = await runOn(from, ["socat", "-T", "2", "-", `TCP4:${address}:${port},connect-timeout=2`], { input: `${token}\n`, reject: false, timeout: 10_000 });
  return String(r.stdout).includes(token);
}

/** A long-lived TCP connection that echoes lines, exchanging one every 100 ms while asked to. */
async function chattyConnection(from: Side, address: string, port: number): Promise<{ stop(): Promise<{ lines: number; failures: string[] }> }> {
  const proc = runOn(from, ["socat", "-", `TCP4:${address}:${port}`], { reject: false });
  processes.push(proc);
  let received = "";
  proc.stdout!.setEncoding("utf8");
  proc.stdout!.on("data", (d: string) => (received += d));
  let sent = 0;
  const roundTrip = async () => {
    const line = `line-${++sent}`;
    const start = Date.now();
    proc.stdin!.write(`${line}\n`);
    while (!received.includes(`${line}\n`)) {
      if (Date.now() - start > 2000) throw new Error(`no echo of ${line} within 2 s`);
      await sleep(5);
    }
  };
  await roundTrip();
  let running = true;
  const stats = { lines: 0, failures: [] as string[] };
  const loop = (async () => {
    while (running) {
      await roundTrip().then(() => stats.lines++, (err: Error) => stats.failures.push(err.message));
      await sleep(100);
    }
  })();
  return {
    async stop() {
      running = false;
      await loop;
      proc.stdin!.end();
      proc.kill("SIGTERM");
      return stats;
    },
  };
}

async function hostText(argv: string[]): Promise<string> {
  return String((await lab.inHost(h1, argv, { reject: false })).stdout).trim();
}

async function filterNames(hook: "ingress" | "egress"): Promise<string[]> {
  const rows = JSON.parse((await hostText(["tc", "-j", "filter", "show", "dev", "eth0", hook])) || "[]") as { options?: { prog?: { name?: string } } }[];
  return rows.filter((r) => r.options).map((r) => r.options!.prog?.name ?? "?");
}

async function policyMaps(): Promise<string> {
  return hostText(["sh", "-c", `for m in ${PIN}/maps/*; do bpftool map dump pinned $m; done 2>&1; ls -R /sys/fs/bpf/bpfleet 2>&1`]);
}

/** The TcPolicy's outputs as the stack's state holds them. */
async function policyState(): Promise<{ counters: Record<string, number>; ruleHits: Record<string, Record<string, number>>; attached: boolean }> {
  const deployment = JSON.parse(await project.exportState()) as { deployment: { resources: { urn: string; outputs?: Record<string, unknown> }[] } };
  const resource = deployment.deployment.resources.find((r) => r.urn.endsWith("::edge-policy"));
  if (!resource?.outputs) throw new Error("no edge-policy resource in the state");
  return resource.outputs as never;
}

/** The lines of a --diff output that add or remove a rule (refresh prints its block twice). */
function ruleChanges(output: string): string[] {
  const lines = output.split("\n").map((l) => l.match(/^\s*([+-])\s+"?((?:allow|deny|rule #)[^":]*?)"?\s*:\s*"(?:allow|deny)"/)).filter((m) => m !== null);
  return [...new Set(lines.map((m) => `${m![1]} ${m![2]}`))].sort();
}

beforeAll(async () => {
  lab = await createLab("e2etp", { hosts: 1, clients: 1 });
  h1 = lab.hosts[0]!;
  c1 = lab.clients[0]!;
  for (const port of [8080, 9090]) processes.push(lab.inHost(h1, ["socat", `TCP4-LISTEN:${port},reuseaddr,fork`, "EXEC:cat"], { reject: false }));
  processes.push(lab.inClient(c1, ["socat", "TCP4-LISTEN:7000,reuseaddr,fork", "EXEC:cat"], { reject: false }));
  // Somebody else's filter on the same hook, after ours.
  await lab.inHost(h1, ["tc", "qdisc", "add", "dev", "eth0", "clsact"]);
  // (The object goes through the lab directory: a host has its own /tmp.)
  const foreign = join(lab.dir, "empty_tc.bpf.o");
  writeFileSync(foreign, packagedObject("empty_tc").bytes);
  await lab.inHost(h1, ["tc", "filter", "add", "dev", "eth0", "ingress", "prio", "100", "handle", "0x1", "bpf", "da", "obj", foreign, "sec", "tc"]);
  project = await PulumiProject.create("tcpolicy", resolve(__dirname, "../../examples/tcPolicy/index.ts"), "bpfleet-tcpolicy");
  await project.ok(["config", "set", "labFile", lab.jsonPath]);
});

afterAll(async () => {
  for (const p of processes) p.kill("SIGTERM");
  if (project) await project.pulumi(["destroy", "--yes", "--skip-preview"]);
  await lab?.destroy();
});

describe("examples/tcPolicy through the real Pulumi CLI", () => {
  it("check failures come through the CLI with the property and the reason, and nothing reaches the host", async () => {
    await project.setList("rules", ["allow tcp 8080"]);
    const noSsh = await project.pulumi(["up", "--yes"]);
    expect(noSsh.exitCode).not.toBe(0);
    expect(noSsh.stdout + noSsh.stderr).toMatch(/ingress: the policy does not allow inbound TCP to port 22, the management SSH path.*allowLockout: true/);

    await project.setList("rules", ["allow tcp 22", "allow tcp 70000", "allow tcp 9000-8000", "allow icmp 8", "allow tcp 0", "deny udp 53 from 10.0.0.0/33"]);
    const bad = await project.pulumi(["up", "--yes"]);
    expect(bad.exitCode).not.toBe(0);
    const output = bad.stdout + bad.stderr;
    expect(output).toMatch(/ingress\.rules\[1\]: port 70000 is out of range \(1-65535\)/);
    expect(output).toMatch(/ingress\.rules\[2\]: port range 9000-8000 is reversed/);
    expect(output).toMatch(/ingress\.rules\[3\]: icmp has no ports/);
    expect(output).toMatch(/ingress\.rules\[4\]: port 0 is not a port/);
    expect(output).toMatch(/ingress\.rules\[5\]: from: "10\.0\.0\.0\/33": prefix length must be a whole number from 0 to 32/);
    expect(await hostText(["sh", "-c", "ls /sys/fs/bpf/bpfleet 2>/dev/null || true"])).toBe("");
    expect(await filterNames("ingress")).toEqual(["empty_tc"]);
  });

  it("pulumi up: a client reaches 8080, its connection to 9090 (listener present) is dropped, the host's own connection gets its replies", async () => {
    expect(await tcpEcho({ client: c1 }, h1.address, 9090)).toBe(true);
    await project.setList("rules", ["allow tcp 22", "allow tcp 8080"]);
    await project.ok(["up", "--yes", "--skip-preview"]);
    expect(await tcpEcho({ client: c1 }, h1.address, 8080)).toBe(true);
    expect(await tcpEcho({ client: c1 }, h1.address, 9090)).toBe(false);
    expect(await tcpEcho({ host: h1 }, c1.address, 7000)).toBe(true);
    expect(await filterNames("ingress")).toEqual(["tc_policy_ingre", "empty_tc"]);
    const outputs = JSON.parse((await project.ok(["stack", "output", "--json"])).stdout);
    expect(outputs.ingressRules).toEqual(["allow tcp 22", "allow tcp 8080"]);
    // refresh reads the counters back into the resource's state (stack outputs change only on up).
    await project.ok(["refresh", "--yes", "--skip-preview"]);
    const state = await policyState();
    expect(state.counters.ingressDeniedPackets).toBeGreaterThan(0);
    expect(state.ruleHits.ingress?.["allow tcp 8080"]).toBeGreaterThan(0);
    expect(state.attached).toBe(true);
  });

  it("pulumi preview --diff shows the rules added; established connections keep exchanging lines through the pulumi up that adds them", async () => {
    await project.setList("rules", ["allow tcp 22", "allow tcp 8080", "allow tcp 9090", "allow udp 5000"]);
    const preview = await project.ok(["preview", "--diff"]);
    expect(ruleChanges(preview.stdout), preview.stdout).toEqual(["+ allow tcp 9090", "+ allow udp 5000"]);
    expect(preview.stdout).toMatch(/1 to update/);

    const inbound = await chattyConnection({ client: c1 }, h1.address, 8080);
    const outbound = await chattyConnection({ host: h1 }, c1.address, 7000);
    await sleep(1000);
    await project.ok(["up", "--yes", "--skip-preview"]);
    await sleep(1000);
    for (const connection of [inbound, outbound]) {
      const stats = await connection.stop();
      expect(stats.failures).toEqual([]);
      expect(stats.lines).toBeGreaterThan(20);
    }
    expect(await tcpEcho({ client: c1 }, h1.address, 9090)).toBe(true);
  });

  it("pulumi preview --diff shows a rule removed", async () => {
    await project.setList("rules", ["allow tcp 22", "allow tcp 8080", "allow udp 5000"]);
    const preview = await project.ok(["preview", "--diff"]);
    expect(ruleChanges(preview.stdout), preview.stdout).toEqual(["- allow tcp 9090"]);
    await project.ok(["up", "--yes", "--skip-preview"]);
    expect(await tcpEcho({ client: c1 }, h1.address, 9090)).toBe(false);
  });

  it("pulumi refresh shows a trie entry deleted by hand as drift on its rule, and up restores it", async () => {
    const key = Array.from(encodeL4Key({ direction: "ingress", protocol: IPPROTO.TCP, port: 8080, prefixLength: 32 }), (b) => b.toString(16).padStart(2, "0"));
    await lab.inHost(h1, ["bpftool", "map", "delete", "pinned", `${PIN}/maps/${MAPS.l4}`, "key", "hex", ...key]);
    expect(await tcpEcho({ client: c1 }, h1.address, 8080)).toBe(false);
    const refresh = await project.ok(["refresh", "--yes", "--diff"]);
    expect(refresh.stdout).toContain("allow tcp 8080 (altered on the host)");
    const preview = await project.ok(["preview", "--diff"]);
    expect(ruleChanges(preview.stdout), preview.stdout).toEqual(["+ allow tcp 8080", "- allow tcp 8080 (altered on the host)"]);
    expect(preview.stdout).toMatch(/1 to update/);
    await project.ok(["up", "--yes", "--skip-preview"]);
    expect(await tcpEcho({ client: c1 }, h1.address, 8080)).toBe(true);
  });

  it("the private key is a secret in state", async () => {
    const keyBody = readFileSync(lab.privateKeyPath, "utf8").split("\n")[1]!;
    expect(await project.exportState()).not.toContain(keyBody);
  });

  it("pulumi destroy removes only its filters and pins; the other filter and its clsact qdisc stay", async () => {
    await project.ok(["destroy", "--yes", "--skip-preview"]);
    expect(await hostText(["sh", "-c", "find /sys/fs/bpf/bpfleet -mindepth 1 2>/dev/null || true"])).toBe("");
    expect(await filterNames("ingress")).toEqual(["empty_tc"]);
    expect(await filterNames("egress")).toEqual([]);
    expect(await hostText(["tc", "qdisc", "show", "dev", "eth0"])).toContain("clsact");
    expect(await tcpEcho({ client: c1 }, h1.address, 9090)).toBe(true);
    expect(await policyMaps()).not.toContain("tcpol_");
  });
});
