// A Debian 11 host in a qemu guest (its 5.10 kernel, its own bpftool 5.10, the
// machine's sshd from the shared root), reached over SSH through qemu's forwarded
// port and driven by the provider exactly like a lab host.
import { spawn, execFileSync, type ChildProcess } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { checkInputs } from "../../provider/dynamicAdapter";
import { closeAllSessions, sessionFor, type SshSession } from "../../provider/remote/ssh";
import { xdpFirewallKind as firewall } from "../../provider/xdpFirewall/lifecycle";
import { xdpFirewallSchema, type XdpFirewallInputs, type XdpFirewallOutputs } from "../../provider/xdpFirewall/schema";
import { tcPolicyKind as policy, type TcPolicyState } from "../../provider/tcPolicy/lifecycle";
import { checkTcPolicy, type TcPolicyInputs } from "../../provider/tcPolicy/schema";

const CACHE = process.env.KERNEL_CACHE ?? "/var/cache/bpfleet/kernels";
let out: string;
let guest: ChildProcess;
let guestExit: Promise<number | null>;
let port: number;
let privateKey: string;
let hostKey: string;
let session: SshSession;

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.listen(0, "127.0.0.1", () => {
      const address = server.address();
      server.close(() => (typeof address === "object" && address ? resolve(address.port) : reject(new Error("no port"))));
    });
  });
}

const host = () => ({ address: "127.0.0.1", port, user: "root", insecureSkipHostKeyCheck: false, hostKey, connectTimeoutMs: 60_000, commandTimeoutMs: 600_000 });

function firewallInputs(patch: Record<string, unknown> = {}): XdpFirewallInputs {
  const result = checkInputs(xdpFirewallSchema, { host: host(), credentials: { privateKey }, interface: "kmxa", name: "fw", deny: [], ...patch });
  if (!result.inputs) throw new Error(JSON.stringify(result.failures));
  return result.inputs as XdpFirewallInputs;
}

async function sh(command: string): Promise<string> {
  return (await session.run(["sh", "-c", command], { allowFailure: true })).stdout.trim();
}

/** Whether the peer namespace, from source `from`, gets an answer from 192.0.2.1. */
async function pingFrom(from: string): Promise<boolean> {
  const r = await session.run(["ip", "netns", "exec", "peer", "ping", "-c", "1", "-W", "5", "-I", from, "192.0.2.1"], { allowFailure: true });
  return r.code === 0;
}

beforeAll(async () => {
  if (process.getuid?.() !== 0) throw new Error("boots a qemu guest and runs sshd: run as root");
  execFileSync("bash", [join(__dirname, "fetch.sh")], { env: { ...process.env, SUITES: "bullseye" }, stdio: ["ignore", "ignore", "inherit"] });
  out = mkdtempSync(join(tmpdir(), "kmx-debian11-"));
  execFileSync("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-f", join(out, "hostkey")]);
  execFileSync("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-f", join(out, "client")]);
  privateKey = readFileSync(join(out, "client"), "utf8");
  hostKey = readFileSync(join(out, "hostkey.pub"), "utf8").trim().split(" ").slice(0, 2).join(" ");
  port = await freePort();
  const job = join(out, "job-src.sh");
  writeFileSync(job, `exec sh '${join(__dirname, "sshhost.sh")}' '${CACHE}/bpftool-bullseye/bpftool'\n`);
  guest = spawn("bash", [join(__dirname, "boot.sh"), "bullseye", out, job], { env: { ...process.env, KERNEL_SSH_PORT: String(port) }, stdio: "inherit" });
  guestExit = new Promise((resolve) => guest.on("exit", (code) => resolve(code)));
  const deadline = Date.now() + 900_000;
  while (!existsSync(join(out, "ready"))) {
    if (guest.exitCode !== null || Date.now() > deadline) throw new Error(`the Debian 11 guest did not come up; console: ${existsSync(join(out, "console")) ? readFileSync(join(out, "console"), "utf8").slice(-2000) : "none"}`);
    await sleep(1000);
  }
  session = await sessionFor(host(), { privateKey });
}, 1_000_000);

afterAll(async () => {
  closeAllSessions();
  if (out) writeFileSync(join(out, "stop"), "");
  if (guest && guest.exitCode === null) {
    const timer = setTimeout(() => guest.kill("SIGTERM"), 120_000);
    await guestExit;
    clearTimeout(timer);
  }
  if (out && existsSync(join(out, "sshd.log"))) console.log(`guest sshd log:\n${readFileSync(join(out, "sshd.log"), "utf8").slice(-3000)}`);
  if (out) rmSync(out, { recursive: true, force: true });
}, 200_000);

describe("a Debian 11 host (5.10, bpftool 5.10) driven over SSH", () => {
  it("is what it says: kernel 5.10 and Debian 11's bpftool", async () => {
    expect(await sh("uname -r")).toMatch(/^5\.10\./);
    expect(await sh("bpftool version | head -n 1")).toMatch(/bpftool v5\.10\./);
  });

  let created: { id: string; outs: XdpFirewallOutputs };
  it("XdpFirewall: create drops the denied source and passes the other", async () => {
    expect(await pingFrom("192.0.2.2")).toBe(true);
    created = await firewall.create(firewallInputs({ deny: ["192.0.2.2", "198.51.100.0/24"] }));
    expect(created.outs.attachMode).not.toBe("detached");
    expect(await pingFrom("192.0.2.2")).toBe(false);
    expect(await pingFrom("192.0.2.3")).toBe(true);
  }, 600_000);

  it("XdpFirewall: read gives the entries back, and counters that moved", async () => {
    const read = await firewall.read(created.id, created.outs);
    expect(Object.keys(read!.outs.deny).sort()).toEqual(["192.0.2.2/32", "198.51.100.0/24"]);
    expect(read!.outs.programId).toBe(created.outs.programId);
    expect(read!.outs.counters.dropPackets).toBeGreaterThan(0);
    expect(read!.outs.counters.passPackets).toBeGreaterThan(0);
  }, 600_000);

  it("XdpFirewall: destroy leaves nothing (no XDP program, no pins, no object cache)", async () => {
    await firewall.delete(created.id, created.outs);
    expect(await pingFrom("192.0.2.2")).toBe(true);
    expect(JSON.parse(await sh("bpftool -j net show dev kmxa"))[0].xdp).toEqual([]);
    expect(await sh("ls -A /sys/fs/bpf; ls -A /var/lib")).toBe("");
  }, 600_000);

  // The policy keeps no per-flow BPF timer (5.15+): flows expire when a packet or the
  // provider's read finds them idle past their timeout, so 5.10 runs it whole.
  let policyCreated: { id: string; outs: TcPolicyState };
  it("stateful TcPolicy: replies to the host's own pings pass, new inbound pings are denied", async () => {
    const result = checkTcPolicy({
      host: host(), credentials: { privateKey }, interface: "kmxa", name: "pol", stateful: true,
      ingress: { default: "deny", rules: [] },
      timeouts: { other: 10 },
      // kmxa is not the management path (SSH arrives on eth0 from qemu's forwarder).
      allowLockout: true,
    });
    if (!result.inputs) throw new Error(JSON.stringify(result.failures));
    policyCreated = await policy.create(result.inputs as TcPolicyInputs);
    expect(policyCreated.outs.attached).toBe(true);
    // Out through egress (the flow is recorded), the reply in through ingress (the flow passes it).
    const out = await session.run(["ping", "-c", "1", "-W", "5", "192.0.2.2"], { allowFailure: true });
    expect(out.code, "the host's own ping is answered through a default-deny ingress").toBe(0);
    // Read before the flow can idle out (timeouts.other).
    expect((await policy.read(policyCreated.id, policyCreated.outs))!.outs.liveFlows).toBeGreaterThanOrEqual(1);
    expect(await pingFrom("192.0.2.2"), "a new inbound ping is denied").toBe(false);
    const read = await policy.read(policyCreated.id, policyCreated.outs);
    expect(read!.outs.counters.ingressDeniedPackets).toBeGreaterThan(0);
  }, 600_000);

  it("stateful TcPolicy: an idle flow expires (it leaves the live count), and destroy leaves nothing", async () => {
    const again = await session.run(["ping", "-c", "1", "-W", "5", "192.0.2.2"], { allowFailure: true });
    expect(again.code).toBe(0);
    let live = (await policy.read(policyCreated.id, policyCreated.outs))!.outs.liveFlows;
    expect(live).toBeGreaterThanOrEqual(1);
    for (const deadline = Date.now() + 60_000; live > 0 && Date.now() < deadline; ) {
      await sleep(2_000);
      live = (await policy.read(policyCreated.id, policyCreated.outs))!.outs.liveFlows;
    }
    expect(live, "flows idle past timeouts.other (10 s) are no longer live").toBe(0);
    await policy.delete(policyCreated.id, policyCreated.outs);
    expect(await sh("tc filter show dev kmxa ingress; tc filter show dev kmxa egress")).toBe("");
    expect(await sh("ls -A /sys/fs/bpf/bpfleet 2>/dev/null")).toBe("");
  }, 600_000);
});
