// The lab itself: hosts come up with their own sshd, host key and bpffs;
// clients reach hosts; `down` leaves nothing behind.  Run as root:
//   npx vitest run test/lab/lab.test.ts
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import * as path from "node:path";
import { execa } from "execa";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createLab, LAB_SH, type Lab, type LabHost } from "./lab";

const NAME = "labt";
const PREFIX = `bfl${NAME}-`;

/** Alive = exists and not a zombie (orphans are reaped by PID 1 at its own pace). */
function alive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    return stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3) !== "Z";
  } catch {
    return false;
  }
}

describe("lab", () => {
  let lab: Lab;
  let scratch: string;

  beforeAll(async () => {
    scratch = mkdtempSync(path.join(tmpdir(), "bpfleet-labtest-"));
    const t0 = Date.now();
    lab = await createLab(NAME, { hosts: 2, clients: 1 });
    console.log(`lab up (2 hosts, 1 client) in ${Date.now() - t0} ms`);
  }, 300_000);

  afterAll(async () => {
    await lab?.destroy();
    rmSync(scratch, { recursive: true, force: true });
  }, 120_000);

  it("comes up with 2 hosts and 1 client described in lab.json", async () => {
    expect(lab.jsonPath).toBe(`/run/bpfleet-lab/${NAME}/lab.json`);
    expect(lab.hosts.map((h) => h.netns)).toEqual([`${PREFIX}h1`, `${PREFIX}h2`]);
    expect(lab.clients.map((c) => c.netns)).toEqual([`${PREFIX}c1`]);
    expect(lab.bridge).toBe(`${PREFIX}br`);
    expect(existsSync(lab.knownHostsPath)).toBe(true);
    const k = lab.gateway4.split(".")[2];
    for (const h of lab.hosts) {
      expect(h).toMatchObject({ port: 22, user: "root", interface: "eth0" });
      expect(h.address).toMatch(new RegExp(`^10\\.200\\.${k}\\.\\d+$`));
      expect(h.address6).toMatch(new RegExp(`^fd00:bf:${k}::`));
      expect(h.hostKey).toMatch(/^ssh-ed25519 AAAA\S+$/);
      expect(alive(h.sshdPid)).toBe(true);
    }
    expect(new Set(lab.hosts.map((h) => h.hostKey)).size).toBe(2); // one key per host
    const netns = (await execa("ip", ["netns", "list"])).stdout;
    for (const n of [...lab.hosts, ...lab.clients]) expect(netns).toContain(n.netns);
    // Inside a host: eth0 with both addresses, its own hostname.
    const h1 = lab.hosts[0]!;
    const addrs = (await lab.inHost(h1, ["ip", "-br", "addr", "show", "eth0"])).stdout;
    expect(addrs).toContain(`${h1.address}/24`);
    expect(addrs).toContain(`${h1.address6}/64`);
    expect((await lab.inHost(h1, ["hostname"])).stdout).toBe(h1.netns);
  });

  it("accepts SSH with the pinned host keys, over IPv4 and IPv6", async () => {
    for (const h of lab.hosts) {
      expect((await lab.ssh(h, ["hostname"])).stdout).toBe(h.netns);
      expect((await lab.ssh(h, ["cat", "/proc/sys/kernel/hostname"], { ipv6: true })).stdout).toBe(h.netns);
    }
  }, 60_000);

  it("rejects a host presenting another host's key (StrictHostKeyChecking=yes)", async () => {
    const [h1, h2] = lab.hosts as [LabHost, LabHost];
    const wrong = path.join(scratch, "known_hosts_wrong");
    writeFileSync(wrong, `${h1.address} ${h2.hostKey}\n`);
    const r = await lab.ssh(h1, ["true"], { knownHosts: wrong, reject: false });
    expect(r.exitCode).toBe(255);
    expect(r.stderr).toMatch(/host key verification failed|REMOTE HOST IDENTIFICATION HAS CHANGED/i);
  }, 30_000);

  it("refuses a client key it was not given, and has no password login", async () => {
    const key = path.join(scratch, "wrong_key");
    await execa("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-f", key]);
    const r = await lab.ssh(lab.hosts[0]!, ["true"], { identity: key, reject: false });
    expect(r.exitCode).toBe(255);
    expect(r.stderr).toMatch(/Permission denied \(publickey\)/);
  }, 30_000);

  it("lets the non-root lab user in, with passwordless sudo", async () => {
    const h = lab.hosts[0]!;
    const r = await lab.ssh(h, ["sh", "-c", "id -un; sudo -n id -u"], { user: lab.sudoUser });
    expect(r.stdout.split("\n")).toEqual([lab.sudoUser, "0"]);
    expect(r.stderr).toBe("");
  }, 30_000);

  it("keeps bpffs pins per host, across SSH sessions", async () => {
    const [a, b] = lab.hosts as [LabHost, LabHost];
    const pin = `/sys/fs/bpf/labtest_${process.pid}`;
    await lab.ssh(a, ["bpftool", "map", "create", pin, "type", "array", "key", "4", "value", "4", "entries", "1", "name", "labtest"]);
    // Another SSH session (a new sshd child) to A sees it...
    const shown = await lab.ssh(a, ["bpftool", "-j", "map", "show", "pinned", pin]);
    expect(JSON.parse(shown.stdout)).toMatchObject({ name: "labtest", type: "array" });
    // ...and so does inHost (the same mount namespace as A's sshd).
    await lab.inHost(a, ["test", "-e", pin]);
    // B, the root namespace and a client do not.
    expect((await lab.ssh(b, ["test", "-e", pin], { reject: false })).exitCode).toBe(1);
    expect((await lab.inHost(b, ["test", "-e", pin], { reject: false })).exitCode).toBe(1);
    expect(existsSync(pin)).toBe(false);
    expect((await lab.inClient(lab.clients[0]!, ["test", "-e", pin], { reject: false })).exitCode).toBe(1);
  }, 60_000);

  it("gives each host its own /run, as a real machine has (locks and guards never collide)", async () => {
    const [a, b] = lab.hosts as [LabHost, LabHost];
    const file = `/run/bpfleet/labtest_${process.pid}.lock`;
    await lab.ssh(a, ["sh", "-c", 'mkdir -p /run/bpfleet && echo a > "$0"', file]);
    expect((await lab.ssh(a, ["cat", file])).stdout).toBe("a");
    expect((await lab.inHost(a, ["cat", file])).stdout).toBe("a");
    // B and the machine's own /run do not see it; B writing the same path makes its own.
    expect((await lab.ssh(b, ["test", "-e", file], { reject: false })).exitCode).toBe(1);
    expect(existsSync(file)).toBe(false);
    await lab.ssh(b, ["sh", "-c", 'mkdir -p /run/bpfleet && echo b > "$0"', file]);
    expect((await lab.ssh(a, ["cat", file])).stdout).toBe("a");
    // The lab's bookkeeping stays in the machine's /run (sshd writes its log there).
    expect(readFileSync(path.join(lab.dir, "h1", "sshd.log"), "utf8")).toMatch(/Accepted publickey/);
    expect((await lab.inHost(a, ["stat", "-c", "%a %U", "/run/sshd"])).stdout).toBe("755 root");
  }, 60_000);

  it("lets a client ping every host over IPv4 and IPv6, and the root namespace too", async () => {
    const c = lab.clients[0]!;
    for (const h of lab.hosts) {
      await lab.inClient(c, ["ping", "-c", "1", "-W", "2", h.address]);
      await lab.inClient(c, ["ping", "-c", "1", "-W", "2", h.address6]);
      await execa("ping", ["-c", "1", "-W", "2", h.address6]);
    }
    // A host reaches the gateway (the root namespace) over both families.
    await lab.inHost(lab.hosts[1]!, ["ping", "-c", "1", "-W", "2", lab.gateway4]);
    await lab.inHost(lab.hosts[1]!, ["ping", "-c", "1", "-W", "2", lab.gateway6]);
  }, 60_000);

  it("`down` leaves no namespaces, links, processes or files, and is idempotent", async () => {
    const pids = lab.hosts.map((h) => h.sshdPid);
    // A long-running process inside a host must not survive either.
    const sleeper = lab.inHost(lab.hosts[0]!, ["sleep", "600"], { reject: false });
    await new Promise((r) => setTimeout(r, 200));

    await lab.destroy();
    await sleeper;
    expect((await execa("ip", ["netns", "list"])).stdout).not.toContain(PREFIX);
    expect((await execa("ip", ["-o", "link", "show"])).stdout).not.toContain(PREFIX);
    const pg = await execa("pgrep", ["-f", `/run/bpfleet-lab/${NAME}/`], { reject: false });
    expect(pg.exitCode, pg.stdout).toBe(1);
    for (const pid of pids) expect(alive(pid)).toBe(false);
    expect(existsSync(lab.dir)).toBe(false);

    await execa(LAB_SH, ["down", NAME]); // nothing left: still succeeds
  }, 60_000);
});
