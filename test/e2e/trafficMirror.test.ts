// End to end: examples/mirror through the real pulumi CLI. Copies of the matching
// packets arrive on a local target interface (counted by the kernel on the veth
// peer); non-matching traffic adds nothing; the original exchange is unchanged.
import { resolve } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createLab, type Lab, type LabHost } from "../lab/lab";
import { PulumiProject } from "./pulumiProject";

let lab: Lab;
let project: PulumiProject;
let h1: LabHost;
const servers: Promise<unknown>[] = [];

/** Packets the copy interface's peer has received so far. */
async function copiesSeen(): Promise<number> {
  const r = await lab.inHost(h1, ["ip", "-s", "-j", "link", "show", "mirtap1"]);
  return JSON.parse(String(r.stdout))[0].stats64.rx.packets;
}

/** One request/response exchange with the echo server on `port`; returns the echo. */
async function exchange(port: number): Promise<string> {
  const message = `GET /${port}/${Math.random().toString(36).slice(2)} HTTP/1.0`;
  const r = await lab.inClient(lab.clients[0]!, ["socat", "-t", "1", "-", `TCP:${h1.address}:${port}`], { input: `${message}\n` });
  expect(String(r.stdout)).toBe(message);
  return message;
}

async function copiesDuring(port: number): Promise<number> {
  const before = await copiesSeen();
  for (let i = 0; i < 3; i++) await exchange(port);
  await new Promise((r) => setTimeout(r, 300));
  return (await copiesSeen()) - before;
}

beforeAll(async () => {
  lab = await createLab("e2emir", { hosts: 1, clients: 1 });
  h1 = lab.hosts[0]!;
  await lab.inHost(h1, ["ip", "link", "add", "mirtap0", "type", "veth", "peer", "name", "mirtap1"]);
  for (const dev of ["mirtap0", "mirtap1"]) {
    // Nothing but copies crosses the pair: no IPv6 autoconfiguration chatter.
    await lab.inHost(h1, ["sysctl", "-qw", `net.ipv6.conf.${dev}.disable_ipv6=1`]);
    await lab.inHost(h1, ["ip", "link", "set", dev, "up"]);
  }
  for (const port of [80, 8080]) servers.push(lab.inHost(h1, ["socat", `TCP-LISTEN:${port},reuseaddr,fork`, "EXEC:cat"], { reject: false }));
  project = await PulumiProject.create("mirror", resolve(__dirname, "../../examples/mirror/index.ts"), "bpfleet-mirror");
  await project.ok(["config", "set", "labFile", lab.jsonPath]);
});

afterAll(async () => {
  if (project) await project.pulumi(["destroy", "--yes", "--skip-preview"]);
  await lab?.destroy();
});

describe("examples/mirror through the real Pulumi CLI", () => {
  it("before any mirror, the target sees nothing", async () => {
    expect(await copiesDuring(80)).toBe(0);
  });

  it("pulumi up: tcp/80 requests are copied to the target, tcp/8080 is not, and both exchanges are unchanged", async () => {
    await project.ok(["up", "--yes", "--skip-preview"]);
    expect(await copiesDuring(80)).toBeGreaterThanOrEqual(3 * 4); // SYN, ACK, data, FIN at least, per exchange
    expect(await copiesDuring(8080)).toBe(0);
  });

  it("pulumi preview --diff shows the filter that goes and the one that comes", async () => {
    await project.ok(["config", "set", "port", "8080"]);
    const preview = await project.ok(["preview", "--diff"]);
    expect(preview.stdout).toMatch(/-\s+"?tcp and dst port 80"?\s*:/);
    expect(preview.stdout).toMatch(/\+\s+"?tcp and dst port 8080"?\s*:/);
    expect(preview.stdout).toMatch(/1 to update/);
    await project.ok(["up", "--yes", "--skip-preview"]);
    expect(await copiesDuring(8080)).toBeGreaterThanOrEqual(12);
    expect(await copiesDuring(80)).toBe(0);
  });

  it("pulumi destroy removes its TC filter and pins, and copying stops", async () => {
    await project.ok(["destroy", "--yes", "--skip-preview"]);
    const filters = await lab.inHost(h1, ["tc", "-j", "filter", "show", "dev", "eth0", "ingress"], { reject: false });
    expect(String(filters.stdout).trim() || "[]").toBe("[]");
    const pins = await lab.inHost(h1, ["sh", "-c", "find /sys/fs/bpf/bpfleet -mindepth 1 2>/dev/null || true"]);
    expect(String(pins.stdout).trim()).toBe("");
    expect(await copiesDuring(8080)).toBe(0);
  });
});
