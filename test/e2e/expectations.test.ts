// End to end (issue 14): packet expectations through the real Pulumi CLI on lab
// hosts. After each change, while the revert timer is armed, every expectation's
// packet runs through a probe copy of what is attached on the host; a miss reverts
// the host at once and fails `up` with a table. The topology:
//
//   c1 (health checker) ─┐
//   c2 (denied client)  ─┤ bridge
//   h1 firewall + LB    ─┤  eth0: dispatcher, slot 0 XdpFirewall, slot 1 MaglevService (DSR)
//   h2 firewall         ─┤  eth0: XdpFirewall alone; also a backend of h1's balancer
//   h3 backend          ─┘
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { evaluateMaglev } from "../../provider/expect/evaluate";
import { parseExpectationText } from "../../provider/expect/grammar";
import { maglevServiceSchema } from "../../provider/maglev/schema";
import { createLab, type Lab, type LabClient, type LabHost } from "../lab/lab";
import { tearDownLabProject, useLab } from "./labHosts";
import { PulumiProject } from "./pulumiProject";

const VIP = "198.51.100.10";

const PROGRAM = `
import * as fs from "node:fs";
import * as pulumi from "@pulumi/pulumi";
import * as bpfleet from "bpfleet";

const config = new pulumi.Config();
const lab = JSON.parse(fs.readFileSync(config.require("labFile"), "utf8"));
const privateKey = pulumi.secret(fs.readFileSync(lab.privateKeyPath, "utf8"));
const [h1, h2, h3] = lab.hosts;
const host = (h: any) => ({ address: h.address, port: h.port, user: h.user, hostKey: h.hostKey, privateKey });

const fw = new bpfleet.XdpFirewall("exp-fw", {
  host: host(h2),
  interface: h2.interface,
  deny: config.getObject<string[]>("deny") ?? [],
  expect: config.getObject<string[]>("expect") ?? [],
});
export const fwDeny = fw.deny.apply((entries) => Object.keys(entries));
export const fwResults = fw.expectResults;

const edge = new bpfleet.XdpFirewall("exp-edge-fw", { host: host(h1), interface: h1.interface, deny: [lab.clients[1].address], chainPriority: 0 });
const web = new bpfleet.MaglevService("exp-web", {
  host: host(h1),
  interface: h1.interface,
  vips: ["${VIP}:80/tcp"],
  backends: [h2.address, h3.address],
  mode: "dsr",
  chainPriority: 1,
  expect: config.getObject<string[]>("webExpect") ?? [],
}, { dependsOn: [edge] });
export const webResults = web.expectResults;
`;

let lab: Lab;
let h1: LabHost;
let h2: LabHost;
let c1: LabClient;
let c2: LabClient;
let project: PulumiProject;

const FW_PIN = "/sys/fs/bpf/bpfleet/xdp-firewall/exp-fw";

/** The deny records on h2, read inside the host (not over SSH): exact addresses and prefixes. */
async function denyRecords(): Promise<string> {
  const r = await lab.inHost(h2, ["sh", "-c", `for m in ${FW_PIN}/maps/deny_v4_exact ${FW_PIN}/maps/deny_v4_prefix; do bpftool -j map dump pinned $m; done`]);
  return String(r.stdout);
}

const outputs = async () => JSON.parse((await project.ok(["stack", "output", "--json"])).stdout) as Record<string, any>;

/** The backend h1's balancer must pick for a flow, from the planned table (the preview's evaluator). */
function plannedBackend(client: string, sport: number): string {
  const service = maglevServiceSchema.parse({
    host: { address: h1.address }, interface: "eth0", name: "exp-web", mode: "dsr", vips: [`${VIP}:80/tcp`], backends: [h2.address, lab.hosts[2]!.address],
  });
  const e = parseExpectationText("maglevService", `tcp ${client}:${sport} > ${VIP}:80 syn: backend ${h2.address}`);
  return evaluateMaglev(service, e).got.replace(/^backend /, "");
}

let healthCheck: string;
let documentation: string;
let backendExpectation: string;
let deniedThroughChain: string;

beforeAll(async () => {
  lab = await createLab("expecte", { hosts: 3, clients: 2 });
  [h1, h2] = lab.hosts as [LabHost, LabHost];
  [c1, c2] = lab.clients as [LabClient, LabClient];
  project = await useLab(await PulumiProject.fromSource("expectations", PROGRAM, "bpfleet-expect"), lab);
  healthCheck = `tcp ${c1.address}:40000 > ${h2.address}:80 syn: pass`;
  documentation = `udp 203.0.113.5:1000 > ${h2.address}:53: drop`;
  backendExpectation = `tcp ${c1.address}:40001 > ${VIP}:80 syn: backend ${plannedBackend(c1.address, 40001)}`;
  deniedThroughChain = `tcp ${c2.address}:40002 > ${VIP}:80 syn: drop`;
  await project.setList("deny", ["203.0.113.0/24"]);
  await project.setList("expect", [healthCheck, documentation]);
  await project.setList("webExpect", [backendExpectation, deniedThroughChain]);
}, 600_000);

afterAll(() => tearDownLabProject(project, lab));

describe("packet expectations through the real Pulumi CLI", () => {
  it("a good change passes; the outputs list each expectation's result; through the chain the backend is named and a denied client is dropped", async () => {
    await project.ok(["up", "--yes", "--skip-preview"]);
    const out = await outputs();
    expect(out.fwDeny).toEqual(["203.0.113.0/24"]);
    expect(out.fwResults).toEqual({
      [documentation]: { wanted: "drop", got: "drop", met: true },
      [healthCheck]: { wanted: "pass", got: "pass", met: true },
    });
    const backend = backendExpectation.replace(/.*: backend /, "");
    expect(out.webResults[backendExpectation]).toEqual({ wanted: `backend ${backend}`, got: `backend ${backend}`, met: true });
    // The firewall in slot 0 drops it before the balancer: every member's verdict counts.
    expect(out.webResults[deniedThroughChain]).toEqual({ wanted: "drop", got: "drop", met: true });
  }, 600_000);

  it("pulumi preview judges the expectations against the planned entries and says which the plan would miss", async () => {
    await project.setList("deny", ["203.0.113.0/24", `${c1.address}/32`]);
    const preview = await project.ok(["preview", "--diff"]);
    const output = `${preview.stdout}\n${preview.stderr}`;
    expect(output).toContain("1 packet expectation(s) would be missed by the planned entries");
    expect(output).toContain(`${healthCheck}: wanted pass, the plan gives drop (deny entry ${c1.address}/32 covers the source)`);
    await project.setList("deny", ["203.0.113.0/24"]);
  }, 600_000);

  it("a deny entry that drops the declared health-check source fails up with the table, and the host keeps its previous entries", async () => {
    const before = await denyRecords();
    expect(before).not.toContain(c1.address.split(".").map((n) => `"0x${Number(n).toString(16).padStart(2, "0")}"`).join(","));
    await project.setList("deny", ["203.0.113.0/24", `${c1.address}/32`]);
    const up = await project.pulumi(["up", "--yes", "--skip-preview"]);
    const output = `${up.stdout}\n${up.stderr}`;
    expect(up.exitCode, output).not.toBe(0);
    expect(output).toContain("1 of 2 packet expectations missed after the change, so the host reverted it at once");
    expect(output).toMatch(/expectation\s+wanted\s+got\s+host/);
    expect(output).toMatch(new RegExp(`${healthCheck.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}\\s+pass\\s+drop\\s+\\S*${h2.address.replace(/\./g, "\\.")}\\s+MISSED`));
    // Back to the previous entries on the host (read inside it), and in the stack.
    expect(await denyRecords()).toBe(before);
    expect((await outputs()).fwDeny).toEqual(["203.0.113.0/24"]);
  }, 600_000);
});
