// End to end (issue 14): a Fleet's HealthGate runs its wave's packet expectations,
// so a canary that fails them stops the rollout; the hosts of later waves keep
// their previous entries. Real Pulumi CLI, lab hosts h1 (canary), h2, h3 (one
// wave each), client c1 the health checker the fleet declares.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createLab, type Lab, type LabHost } from "../lab/lab";
import { tearDownLabProject, useLab } from "./labHosts";
import { PulumiProject } from "./pulumiProject";

const PROGRAM = `
import * as fs from "node:fs";
import * as pulumi from "@pulumi/pulumi";
import * as bpfleet from "bpfleet";

const config = new pulumi.Config();
const lab = JSON.parse(fs.readFileSync(config.require("labFile"), "utf8"));
const checker = lab.clients[0].address;
const fleet = new bpfleet.Fleet<any, bpfleet.XdpFirewall>("expf", {
  hosts: lab.hosts.map(({ name, address, port, user, hostKey, interface: iface }: any) => ({ name, address, port, user, hostKey, interface: iface })),
  hostDefaults: { privateKey: pulumi.secret(fs.readFileSync(lab.privateKeyPath, "utf8")) },
  canary: 1,
  waveSize: 1,
  health: { expect: (h) => [\`tcp \${checker}:40000 > \${h.address}:80 syn: pass\`] },
  resource: (host, member) => new bpfleet.XdpFirewall(member.name, { host: member.host, interface: host.interface, deny: config.getObject<string[]>("deny") ?? [] }, member.opts),
});
export const waves = fleet.waves;
export const reports = pulumi.all(fleet.gates.map((g) => g.reports));
`;

let lab: Lab;
let project: PulumiProject;

/** The host's IPv4 exact deny records, read inside it (not over SSH). */
async function exactOn(host: LabHost): Promise<string> {
  const r = await lab.inHost(host, ["bpftool", "-j", "map", "dump", "pinned", `/sys/fs/bpf/bpfleet/xdp-firewall/expf-${host.name}/maps/deny_v4_exact`]);
  return String(r.stdout);
}
const v4Key = (address: string) => JSON.stringify(address.split(".").map((b) => `0x${Number(b).toString(16).padStart(2, "0")}`));

beforeAll(async () => {
  lab = await createLab("expectf", { hosts: 3, clients: 1 });
  project = await useLab(await PulumiProject.fromSource("expectfleet", PROGRAM, "bpfleet-expectfleet"), lab);
  await project.setList("deny", ["203.0.113.9"]);
}, 600_000);

afterAll(() => tearDownLabProject(project, lab));

describe("a Fleet's health gates run the wave's packet expectations", () => {
  it("a good rollout: every gate reports each host's expectation met", async () => {
    await project.ok(["up", "--yes", "--skip-preview"]);
    const out = JSON.parse((await project.ok(["stack", "output", "--json"])).stdout);
    expect(out.waves).toEqual([["h1"], ["h2"], ["h3"]]);
    const c1 = lab.clients[0]!.address;
    for (const [wave, [report]] of (out.reports as { host: string; expectResults: Record<string, unknown> }[][]).entries()) {
      const host = lab.hosts[wave]!;
      expect(report!.expectResults).toEqual({ [`tcp ${c1}:40000 > ${host.address}:80 syn: pass`]: { wanted: "pass", got: "pass", met: true } });
    }
  }, 600_000);

  it("a deny entry dropping the checker fails the canary's gate; h2 and h3 are untouched", async () => {
    const c1 = lab.clients[0]!.address;
    const [h1, h2, h3] = lab.hosts as [LabHost, LabHost, LabHost];
    const before = { h2: await exactOn(h2), h3: await exactOn(h3) };
    await project.setList("deny", ["203.0.113.9", c1]);
    const up = await project.pulumi(["up", "--yes", "--skip-preview"]);
    const output = `${up.stdout}\n${up.stderr}`;
    expect(up.exitCode, output).not.toBe(0);
    expect(output).toContain('health gate of wave 0 (canary) of fleet "expf" failed on 1 of 1 host(s)');
    expect(output).toContain(`packet expectations missed: expectation "tcp ${c1}:40000 > ${h1.address}:80 syn: pass" wanted pass, got drop`);
    expect(output).toContain("Hosts of later waves were not touched and keep their previous version: h2, h3.");
    // The canary took the change (a gate stops the rollout; it reverts nothing); the others did not.
    expect(await exactOn(h1)).toContain(v4Key(c1));
    expect(await exactOn(h2)).toBe(before.h2);
    expect(await exactOn(h3)).toBe(before.h3);
    expect(before.h2).not.toContain(v4Key(c1));
  }, 600_000);
});
