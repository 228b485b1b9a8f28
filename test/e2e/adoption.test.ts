// End to end: adopting a firewall that is already on a host, through the real pulumi
// CLI. Pulumi cannot import a dynamic-provider resource (the engine's import Read
// carries no serialized provider: pulumi/pulumi#16175, #3550), which this file pins
// down; what works is declaring the firewall with the same host, interface and pin
// name: create finds the pins, reconciles the entries and swaps its program in with
// one netlink call, so the hook is never empty.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createLab, type Lab, type LabClient, type LabHost } from "../lab/lab";
import { tearDownLabProject, useLab } from "./labHosts";
import { PulumiProject } from "./pulumiProject";

const PROGRAM = `
import * as fs from "node:fs";
import * as pulumi from "@pulumi/pulumi";
import * as bpfleet from "bpfleet";

const config = new pulumi.Config();
const lab = JSON.parse(fs.readFileSync(config.require("labFile"), "utf8"));
const h1 = lab.hosts[0];
const importId = config.get("importId");
const firewall = new bpfleet.XdpFirewall(
  "adopt-fw",
  {
    host: { address: h1.address, port: h1.port, user: h1.user, hostKey: h1.hostKey, privateKey: pulumi.secret(fs.readFileSync(lab.privateKeyPath, "utf8")) },
    interface: h1.interface,
    deny: config.getObject<string[]>("deny") ?? [],
  },
  importId ? { import: importId } : undefined,
);
export const deny = firewall.deny.apply((entries) => Object.keys(entries));
export const programId = firewall.programId;
`;

const TYPE = "pulumi-nodejs:dynamic/bpfleet:XdpFirewall";
const DIR = "/sys/fs/bpf/bpfleet/xdp-firewall";

let lab: Lab;
let h1: LabHost;
let denied: LabClient;
let project: PulumiProject;
let declared: string[];
let urn: string;
let id: string;

/** What a host holds of the firewall, read inside it: pin dirs, entries (bpftool JSON), pinned program, XDP hook. */
async function onHost(): Promise<{ pinDirs: string[]; entries: string; programId: number; xdpProgramId: number | undefined; files: string[] }> {
  const dirs = await lab.inHost(h1, ["sh", "-c", `ls ${DIR}`]);
  const entries = await lab.inHost(h1, ["sh", "-c", `for m in ${DIR}/adopt-fw/maps/deny_*; do echo "$m"; bpftool -j map dump pinned "$m"; done`]);
  const prog = await lab.inHost(h1, ["bpftool", "-j", "prog", "show", "pinned", `${DIR}/adopt-fw/prog`]);
  const net = await lab.inHost(h1, ["bpftool", "-j", "net", "show", "dev", h1.interface]);
  const files = await lab.inHost(h1, ["ls", `${DIR}/adopt-fw`]);
  return {
    pinDirs: String(dirs.stdout).split("\n").filter(Boolean),
    entries: String(entries.stdout),
    programId: JSON.parse(String(prog.stdout)).id,
    xdpProgramId: JSON.parse(String(net.stdout))[0].xdp[0]?.id,
    files: String(files.stdout).split("\n").filter(Boolean).sort(),
  };
}

/** The exact-match IPv4 key bpftool prints for `address`. */
function v4Key(address: string): string {
  return JSON.stringify(address.split(".").map((b) => `0x${Number(b).toString(16).padStart(2, "0")}`));
}

/** Starts 10 ms pings from the denied client; stop() ends them and returns ping's summary line. */
function pingThroughout(): { stop(): Promise<string> } {
  const ping = lab.inClient(denied, ["ping", "-n", "-q", "-i", "0.01", "-W", "1", h1.address], { reject: false });
  return {
    async stop() {
      ping.kill("SIGINT");
      const result = await ping;
      return String(result.stdout).match(/\d+ packets transmitted, \d+ received/)?.[0] ?? String(result.stdout);
    },
  };
}

beforeAll(async () => {
  lab = await createLab("e2eadop", { hosts: 1, clients: 1 });
  h1 = lab.hosts[0]!;
  denied = lab.clients[0]!;
  declared = [`${denied.address}/32`, "203.0.113.0/24"];
  project = await useLab(await PulumiProject.fromSource("adoption", PROGRAM, "bpfleet-adopt"), lab);
  await project.setList("deny", declared);
  await project.ok(["up", "--yes", "--skip-preview"]);
  urn = `urn:pulumi:dev::bpfleet-adopt::${TYPE}::adopt-fw`;
  id = `root@${h1.address}/xdp-firewall/adopt-fw`;
  expect(await project.exportState()).toContain(urn);
  // The firewall leaves the stack's state but stays on the host, as it would after
  // a lost state file or when another stack's firewall is taken over.
  await project.ok(["state", "delete", urn, "--yes"]);
  expect(await project.exportState()).not.toContain(urn);
}, 600_000);

afterAll(() => tearDownLabProject(project, lab));

describe("adopting a firewall already on a host, through the real Pulumi CLI", () => {
  it("the import resource option and `pulumi import` fail for a dynamic resource (pulumi/pulumi#16175), changing nothing on the host", async () => {
    const before = await onHost();

    await project.ok(["config", "set", "importId", id]);
    const viaOption = await project.pulumi(["up", "--yes", "--skip-preview"]);
    await project.ok(["config", "rm", "importId"]);
    const optionOutput = `${viaOption.stdout}\n${viaOption.stderr}`;
    console.log(`opts.import on a dynamic resource:\n${optionOutput}`);
    expect(viaOption.exitCode, optionOutput).not.toBe(0);
    // The engine's import Read sends no properties, so the SDK's dynamic provider host fails
    // before any bpfleet code runs (older SDKs: "code must be a string, not undefined").
    expect(optionOutput).toMatch(/adopt-fw\s+\*\*importing failed\*\*/);
    expect(optionOutput).toMatch(/Cannot read properties of undefined \(reading 'toJavaScript'\)|code must be a string, not undefined/);
    expect(optionOutput).toMatch(/ResourceProviderService\.read \(.*\/cmd\/dynamic-provider\//);

    const viaCommand = await project.pulumi(["import", TYPE, "adopt-fw", id, "--yes"]);
    const commandOutput = `${viaCommand.stdout}\n${viaCommand.stderr}`;
    console.log(`pulumi import of a dynamic resource:\n${commandOutput}`);
    expect(viaCommand.exitCode, commandOutput).not.toBe(0);

    expect(await project.exportState()).not.toContain(urn);
    expect(await onHost()).toEqual(before);
  });

  it("pulumi up adopts the pins: entries reconciled to the declared ones, the hook never empty, still one pin dir", async () => {
    // The host drifts while nobody manages it: one entry added by hand, one declared entry removed.
    await lab.inHost(h1, ["bpftool", "map", "update", "pinned", `${DIR}/adopt-fw/maps/deny_v4_exact`, "key", "192", "0", "2", "77", "value", "1"]);
    await lab.inHost(h1, ["bpftool", "map", "delete", "pinned", `${DIR}/adopt-fw/maps/deny_v4_prefix`, "key", "24", "0", "0", "0", "203", "0", "113", "0"]);
    const before = await onHost();
    expect(before.entries).toContain(v4Key("192.0.2.77"));
    expect(before.xdpProgramId).toBe(before.programId);

    const pings = pingThroughout();
    await new Promise((r) => setTimeout(r, 500));
    const up = await project.ok(["up", "--yes", "--skip-preview"]);
    await new Promise((r) => setTimeout(r, 500));
    const summary = await pings.stop();
    console.log(`pulumi up adopting the pins, a denied client pinging every 10 ms throughout: ${summary}`);
    expect(up.stdout).toMatch(/1 created/);

    // The denied client's pings never got through: the hook held a firewall throughout.
    expect(summary).toMatch(/^(\d+) packets transmitted, 0 received$/);
    expect(Number(summary.split(" ")[0])).toBeGreaterThan(100);

    const after = await onHost();
    expect(after.pinDirs).toEqual(["adopt-fw"]);
    expect(after.files).toEqual(["maps", "prog"]);
    // A fresh program from this package, swapped in over the old one on the same maps.
    expect(after.xdpProgramId).toBe(after.programId);
    expect(after.programId).not.toBe(before.programId);
    expect(after.entries).not.toContain(v4Key("192.0.2.77"));
    expect(after.entries).toContain(v4Key(denied.address));
    expect(after.entries).toMatch(/"0x18","0x00","0x00","0x00","0xcb","0x00","0x71","0x00"|0x18 0x00 0x00 0x00 0xcb 0x00 0x71 0x00/);

    // Managed from here on: state and host agree.
    const outputs = JSON.parse((await project.ok(["stack", "output", "--json"])).stdout);
    expect(outputs.deny.sort()).toEqual(declared.sort());
    expect(outputs.programId).toBe(after.programId);
    expect(await project.exportState()).toContain(urn);
    const refresh = await project.ok(["refresh", "--preview-only", "--diff"]);
    expect(refresh.stdout).not.toMatch(/^\s*[+-]\s+"?[0-9a-f.:]+\/\d+"?\s*:\s*"deny"/m);
    await project.ok(["preview", "--expect-no-changes"]);
  }, 300_000);

  it("pulumi destroy of the adopted firewall leaves the host clean", async () => {
    await project.ok(["destroy", "--yes", "--skip-preview"]);
    const pins = await lab.inHost(h1, ["sh", "-c", "find /sys/fs/bpf/bpfleet -mindepth 1 2>/dev/null || true"]);
    expect(String(pins.stdout).trim()).toBe("");
    const net = await lab.inHost(h1, ["bpftool", "-j", "net", "show", "dev", h1.interface]);
    expect(JSON.parse(String(net.stdout))[0].xdp).toEqual([]);
  });
});
