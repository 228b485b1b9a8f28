// End to end: the provider's processes do not outlive a killed `pulumi` (issue 15,
// finding 7). The CLI starts each plugin in a process group of its own, so killing
// the CLI's group leaves them; they must notice and exit by themselves.
import { readdirSync, readFileSync, readlinkSync, writeFileSync } from "node:fs";
import { createServer, type Socket } from "node:net";
import { join, resolve } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { execa } from "execa";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { PulumiProject } from "./pulumiProject";

let project: PulumiProject;
const leftovers: number[] = [];

/** Processes whose working directory is the project and whose command line runs the dynamic provider (or its launcher). */
function providerProcesses(dir: string): number[] {
  const pids: number[] = [];
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const cmdline = readFileSync(`/proc/${entry}/cmdline`, "utf8").replaceAll("\0", " ");
      if (!/dynamic-provider|pulumi-resource-pulumi-nodejs/.test(cmdline)) continue;
      if (readlinkSync(`/proc/${entry}/cwd`) !== dir) continue;
      pids.push(Number(entry));
    } catch {
      // gone meanwhile
    }
  }
  return pids;
}

function alive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    return stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3) !== "Z";
  } catch {
    return false;
  }
}

// No lab: the "host" is a listener in this process that accepts the provider's
// connection and never speaks SSH, so the provider is busy (bpfleet's code loaded,
// waiting for the handshake) when the CLI is killed.
const sockets: Socket[] = [];
const silentHost = createServer((socket) => void sockets.push(socket));

beforeAll(async () => {
  await new Promise<void>((done) => silentHost.listen(0, "127.0.0.1", done));
  const port = (silentHost.address() as { port: number }).port;
  project = await PulumiProject.create("processes", resolve(__dirname, "../../examples/quickstart/index.ts"));
  const key = join(project.dir, "id_ed25519");
  await execa("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-f", key]);
  const hostKey = readFileSync(`${key}.pub`, "utf8").split(" ").slice(0, 2).join(" ");
  const labFile = join(project.dir, "silent.json");
  writeFileSync(labFile, JSON.stringify({ privateKeyPath: key, hosts: [{ name: "h1", address: "127.0.0.1", port, hostKey, interface: "eth0" }], clients: [{ name: "c1", address: "192.0.2.201", address6: "2001:db8::201" }] }));
  await project.ok(["config", "set", "labFile", labFile]);
}, 600_000);

afterAll(async () => {
  for (const pid of leftovers) if (alive(pid)) process.kill(pid, "SIGKILL");
  // The killed run left its stack with a pending operation: the directory goes whole.
  for (const socket of sockets) socket.destroy();
  silentHost.close();
  project?.remove();
}, 120_000);

describe("a killed pulumi", () => {
  it("SIGKILL of the pulumi process group: the provider's processes exit by themselves within seconds", async () => {
    // Its own process group (setsid), as a terminal or CI job would have it.
    const up = execa("pulumi", ["up", "--yes", "--skip-preview", "--non-interactive"], { cwd: project.dir, env: project.env, detached: true, reject: false });
    let pids: number[] = [];
    for (let i = 0; i < 600 && pids.length < 2; i++) {
      await sleep(100);
      pids = providerProcesses(project.dir);
    }
    expect(pids.length, "the dynamic provider (launcher and node) never started").toBeGreaterThanOrEqual(2);
    // Busy: bpfleet's code runs in the provider once the engine sent it the resource
    // (nothing of ours is loaded before the first call), and it connected to the "host".
    for (let i = 0; i < 300 && sockets.length === 0; i++) await sleep(100);
    expect(sockets.length, "the provider never connected to the host").toBeGreaterThan(0);
    process.kill(-up.pid!, "SIGKILL");
    await up;
    leftovers.push(...pids);
    const started = Date.now();
    while (pids.some(alive) && Date.now() - started < 15_000) await sleep(100);
    expect(pids.filter(alive), "provider processes still running 15 s after the CLI was killed").toEqual([]);
  }, 300_000);
});
