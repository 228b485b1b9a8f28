// End to end: deny entries that cover the address the provider's SSH session comes
// from, through the real pulumi CLI. Refused up front by default; with
// allowManagementDeny the lockout guard lets the host undo the change by itself and
// `pulumi up` fails saying what would have locked it out; with the guard off the
// lockout really happens (and the test cleans up from inside the host).
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createLab, type Lab, type LabHost } from "../lab/lab";
import { tearDownLabProject, useLab } from "./labHosts";
import { PulumiProject } from "./pulumiProject";
import { batchText } from "../../provider/remote/mapOperations";
import { denyOperations, planDeny } from "../../provider/xdpFirewall/plan";

const PROGRAM = `
import * as fs from "node:fs";
import * as pulumi from "@pulumi/pulumi";
import * as bpfleet from "bpfleet";

const config = new pulumi.Config();
const lab = JSON.parse(fs.readFileSync(config.require("labFile"), "utf8"));
const h1 = lab.hosts[0];
const firewall = new bpfleet.XdpFirewall("mgmt-fw", {
  host: {
    address: h1.address, port: h1.port, user: h1.user, hostKey: h1.hostKey,
    privateKey: pulumi.secret(fs.readFileSync(lab.privateKeyPath, "utf8")),
    // Short timeouts: with the guard off, the commands after the cut wait this long.
    connectTimeoutMs: 3000, commandTimeoutMs: 15000,
  },
  interface: h1.interface,
  deny: config.getObject<string[]>("deny") ?? [],
  allowManagementDeny: config.getBoolean("allowManagementDeny"),
  lockoutGuard: config.getBoolean("lockoutGuard"),
  lockoutRevertSeconds: config.getNumber("lockoutRevertSeconds"),
});
export const deny = firewall.deny.apply((entries) => Object.keys(entries));
`;

const PIN = "/sys/fs/bpf/bpfleet/xdp-firewall/mgmt-fw";
const REVERT_SECONDS = 10;

let lab: Lab;
let h1: LabHost;
let project: PulumiProject;
/** The address the host sees the provider's SSH session come from: the lab bridge's. */
let peer: string;

/** Whether the host's exact-match map holds `address`, read inside the host (not over SSH). */
async function denies(address: string): Promise<boolean> {
  const r = await lab.inHost(h1, ["bpftool", "map", "lookup", "pinned", `${PIN}/maps/deny_v4_exact`, "key", ...address.split(".")], { reject: false });
  return r.exitCode === 0;
}

async function sshWorks(): Promise<boolean> {
  return (await lab.ssh(h1, ["true"], { reject: false, timeout: 20_000 })).exitCode === 0;
}

async function declaredDeny(): Promise<string[]> {
  return JSON.parse((await project.ok(["stack", "output", "deny", "--json"])).stdout);
}

beforeAll(async () => {
  lab = await createLab("e2elock", { hosts: 1 });
  h1 = lab.hosts[0]!;
  peer = lab.gateway4;
  project = await useLab(await PulumiProject.fromSource("lockout", PROGRAM, "bpfleet-lockout"), lab);
  await project.setList("deny", ["203.0.113.0/24"]);
  await project.ok(["up", "--yes", "--skip-preview"]);
}, 300_000);

afterAll(() => tearDownLabProject(project, lab));

describe("a deny entry covering the lab's SSH client address, through the real Pulumi CLI", () => {
  it("is refused before anything changes unless allowManagementDeny is set", async () => {
    await project.setList("deny", ["203.0.113.0/24", `${peer}/24`]);
    const up = await project.pulumi(["up", "--yes", "--skip-preview"]);
    const output = `${up.stdout}\n${up.stderr}`;
    expect(up.exitCode, output).not.toBe(0);
    const subnet = peer.replace(/\.\d+$/, ".0/24");
    expect(output).toContain(`deny entry ${subnet} would drop ${peer}, the address this provider's SSH session comes from, and lock the host out of management.`);
    expect(output).toContain("set allowManagementDeny: true if another path manages this host. Nothing was changed.");
    expect(await denies(peer)).toBe(false);
    expect(await declaredDeny()).toEqual(["203.0.113.0/24"]);
  });

  it("with the guard on, the host reverts within the window, stays reachable, and pulumi up fails saying what would have locked it out", async () => {
    await project.setList("deny", ["203.0.113.0/24", peer]);
    await project.ok(["config", "set", "allowManagementDeny", "true"]);
    await project.ok(["config", "set", "lockoutRevertSeconds", String(REVERT_SECONDS)]);

    // Watch the entry from inside the host while pulumi runs: when it appears and when the host removes it.
    let appeared: number | undefined;
    let reverted: number | undefined;
    let running = true;
    const watcher = (async () => {
      while (running) {
        const present = await denies(peer);
        if (present && appeared === undefined) appeared = Date.now();
        if (!present && appeared !== undefined && reverted === undefined) reverted = Date.now();
        await new Promise((r) => setTimeout(r, 100));
      }
    })();
    const started = Date.now();
    const up = await project.pulumi(["up", "--yes", "--skip-preview"]);
    running = false;
    await watcher;
    const output = `${up.stdout}\n${up.stderr}`;
    console.log(`pulumi up with a management-cutting entry, guard on: failed after ${((Date.now() - started) / 1000).toFixed(1)} s; the entry was live ${(((reverted ?? 0) - (appeared ?? 0)) / 1000).toFixed(1)} s`);

    expect(up.exitCode, output).not.toBe(0);
    expect(output).toMatch(/after the change, a fresh SSH login failed \(.*\): either the change cuts the management path/);
    expect(output).toContain(`(SSH from ${peer} over ${h1.interface}) or the host became unreachable for another reason at the same time.`);
    expect(output).toMatch(/A fresh login worked again \d+ s later, and the host's revert timer had fired: the change was undone\./);
    expect(output).toContain("Check the deny entries against the addresses this host is managed from.");

    // The entry really was written, and the host itself took it out within the window.
    expect(appeared, "the entry never appeared in the host's map").toBeDefined();
    expect(reverted, "the entry was never removed").toBeDefined();
    expect(reverted! - appeared!).toBeLessThan((REVERT_SECONDS + 3) * 1000);
    expect(await denies(peer)).toBe(false);
    expect(await sshWorks()).toBe(true);
    // The failed update recorded nothing: state still holds the previous entries, and the change is still pending.
    expect(await declaredDeny()).toEqual(["203.0.113.0/24"]);
    const preview = await project.ok(["preview", "--diff"]);
    expect(preview.stdout).toMatch(new RegExp(`\\+\\s+"?${peer.replace(/\./g, "\\.")}/32"?\\s*:\\s*"deny"`));
  }, 180_000);

  it("with the guard off, the lockout happens: a fresh SSH login fails while the entry is there", async () => {
    await project.ok(["config", "set", "lockoutGuard", "false"]);
    try {
      const up = await project.pulumi(["up", "--yes", "--skip-preview"], { timeoutMs: 180_000 });
      const output = `${up.stdout}\n${up.stderr}`;
      // The provider's own session is cut mid-update: its next command times out.
      expect(up.exitCode, output).not.toBe(0);
      console.log(`pulumi up with a management-cutting entry, guard off: ${output.match(/XdpFirewall \(mgmt-fw\):\s*\n\s*error: (.*)/)?.[1] ?? "(no resource error)"}`);
      expect(await denies(peer)).toBe(true);
      expect(await sshWorks()).toBe(false);
    } finally {
      // Cleanup by other means: from inside the host, as a console would. Deleting the
      // record alone no longer lifts the deny (the program reads the address's slot
      // first): the provider's own writes from the cutting list back to the old one.
      const back = denyOperations(planDeny(["203.0.113.0/24"], ["203.0.113.0/24", `${peer}/32`]), (m) => `${PIN}/maps/${m}`);
      await lab.inHost(h1, ["bpftool", "batch", "file", "-"], { input: batchText(back), reject: false });
    }
    expect(await sshWorks()).toBe(true);

    // Back to a safe spec: refresh reads the host as it is, up converges on it.
    await project.setList("deny", ["203.0.113.0/24"]);
    await project.ok(["config", "rm", "lockoutGuard"]);
    await project.ok(["refresh", "--yes"]);
    await project.ok(["up", "--yes", "--skip-preview"]);
    expect(await declaredDeny()).toEqual(["203.0.113.0/24"]);
    expect(await denies(peer)).toBe(false);
  }, 300_000);
});
