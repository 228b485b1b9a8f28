// End to end (issue 15, finding 4): replacing one XDP resource with another on the
// same interface, through the real pulumi CLI. Pulumi creates a resource under a new
// name before it deletes the one the program dropped (a new logical name is a new
// resource, deleteBeforeReplace does not apply: pulumi/pulumi#2625, #11259), so the
// new program finds the old one on the hook and bpfleet refuses it. Each `up` of such
// a program fails the same way; this file proves the refusal names the resource that
// holds the hook and the ways out, and that each way out converges:
//
//   firewall "a" -> load balancer "web"  refused; both chained (web dependsOn a), then a removed
//   load balancer "web" -> firewall "b"  refused; `pulumi destroy --target` web, then up
//   firewall "b" renamed "c"             refused; aliases + pinName: the host is left as it is
//
// h1 carries the XDP programs, h2 is the balancer's backend (no traffic reaches it: the
// balancer only has to attach), c1 is the client the firewalls deny.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createLab, type Lab, type LabClient, type LabHost } from "../lab/lab";
import { tearDownLabProject, useLab } from "./labHosts";
import { PulumiProject, type PulumiRun } from "./pulumiProject";

// The program as a user would edit it, one `step` at a time.
const PROGRAM = `
import * as fs from "node:fs";
import * as pulumi from "@pulumi/pulumi";
import * as bpfleet from "bpfleet";

const config = new pulumi.Config();
const lab = JSON.parse(fs.readFileSync(config.require("labFile"), "utf8"));
const [edge, backend] = lab.hosts;
const host = { address: edge.address, port: edge.port, user: edge.user, hostKey: edge.hostKey, privateKey: pulumi.secret(fs.readFileSync(lab.privateKeyPath, "utf8")) };
const deny = [lab.clients[0].address];
const firewall = (name: string, args: { chainPriority?: number; pinName?: string } = {}, opts: pulumi.CustomResourceOptions = {}) =>
  new bpfleet.XdpFirewall(name, { host, interface: edge.interface, deny, ...args }, opts);
const balancer = (args: { chainPriority?: number } = {}, opts: pulumi.CustomResourceOptions = {}) =>
  new bpfleet.MaglevService("web", { host, interface: edge.interface, vips: ["198.51.100.10:80/tcp"], backends: [backend.address], mode: "dsr", ...args }, opts);

switch (config.require("step")) {
  case "a": firewall("a"); break;
  case "web": balancer(); break;
  case "a+web": { const a = firewall("a", { chainPriority: 0 }); balancer({ chainPriority: 1 }, { dependsOn: [a] }); break; }
  case "web chained": balancer({ chainPriority: 1 }); break;
  case "b": firewall("b"); break;
  case "c": firewall("c"); break;
  case "c aliased": firewall("c", { pinName: "b" }, { aliases: [{ name: "b" }] }); break;
  default: throw new Error("unknown step");
}
`;

const PINS = "/sys/fs/bpf/bpfleet";
const DISPATCHER = `${PINS}/xdp-dispatcher/eth0`;
const FIREWALL_TYPE = "pulumi-nodejs:dynamic/bpfleet:XdpFirewall";
const BALANCER_TYPE = "pulumi-nodejs:dynamic/bpfleet:MaglevService";

let lab: Lab;
let h1: LabHost;
let denied: LabClient;
let project: PulumiProject;

async function inHost(argv: string[]): Promise<string> {
  return String((await lab.inHost(h1, argv, { reject: false })).stdout).trim();
}

/** The id of the program on h1's XDP hook, or undefined. */
async function hookId(): Promise<number | undefined> {
  return JSON.parse(await inHost(["bpftool", "-j", "net", "show", "dev", "eth0"]))[0].xdp[0]?.id;
}

/** The id of a pinned program ("xdp-firewall/a"), or undefined. */
async function pinnedId(pin: string): Promise<number | undefined> {
  const out = await inHost(["bpftool", "-j", "prog", "show", "pinned", `${PINS}/${pin}/prog`]);
  return out.startsWith("{") ? JSON.parse(out).id : undefined;
}

/** bpfleet's pin directories on h1 ("maglev/web", "xdp-dispatcher/eth0", ...). */
async function pinDirs(): Promise<string[]> {
  const out = await inHost(["sh", "-c", `cd ${PINS} 2>/dev/null && ls -d */* || true`]);
  return out.split("\n").filter(Boolean).sort();
}

/** Chain slot -> program id on h1. */
async function chainSlots(): Promise<Record<number, number>> {
  const out = await inHost(["bpftool", "-j", "map", "dump", "pinned", `${DISPATCHER}/maps/xdp_chain`]);
  if (!out.startsWith("[")) return {};
  return Object.fromEntries((JSON.parse(out) as { formatted: { key: number; value: number } }[]).map((e) => [e.formatted.key, e.formatted.value]));
}

/** What h1 holds: pins, the hook's program, the chain. */
async function onHost(): Promise<{ pins: string[]; hook: number | undefined; slots: Record<number, number> }> {
  return { pins: await pinDirs(), hook: await hookId(), slots: await chainSlots() };
}

/** The bpfleet resources in the stack's state, as "Type::name". */
async function stateResources(): Promise<string[]> {
  const { deployment } = JSON.parse(await project.exportState()) as { deployment: { resources: { urn: string; type: string }[] } };
  return deployment.resources.filter((r) => /\/bpfleet:/.test(r.type)).map((r) => `${r.type.split(":").pop()}::${r.urn.split("::").pop()}`).sort();
}

async function up(step: string): Promise<PulumiRun> {
  await project.ok(["config", "set", "step", step]);
  return project.pulumi(["up", "--yes", "--skip-preview"]);
}

/** `up` must fail; returns its output with the CLI's line wrapping and indentation undone. */
async function refused(step: string): Promise<string> {
  const run = await up(step);
  const output = `${run.stdout}\n${run.stderr}`;
  console.log(`step "${step}":\n${output}`);
  expect(run.exitCode, output).not.toBe(0);
  return output.replace(/\s+/g, " ");
}

/** `up` must succeed, and a second one must find nothing to do. */
async function converges(step: string): Promise<PulumiRun> {
  const run = await up(step);
  expect(run.exitCode, `${run.stdout}\n${run.stderr}`).toBe(0);
  await project.ok(["preview", "--expect-no-changes"]);
  return run;
}

/** 10 ms pings from the denied client to h1 while `during` runs; ping's summary afterwards. */
async function pingsDuring<T>(during: () => Promise<T>): Promise<{ result: T; summary: string }> {
  const ping = lab.inClient(denied, ["ping", "-n", "-q", "-i", "0.01", "-W", "1", h1.address], { reject: false });
  await new Promise((r) => setTimeout(r, 300));
  const result = await during();
  ping.kill("SIGINT");
  const out = String((await ping).stdout);
  return { result, summary: out.match(/\d+ packets transmitted, \d+ received/)?.[0] ?? out };
}

beforeAll(async () => {
  lab = await createLab("e2eswp", { hosts: 2, clients: 1 });
  [h1] = lab.hosts as [LabHost];
  denied = lab.clients[0]!;
  project = await useLab(await PulumiProject.fromSource("swap", PROGRAM, "bpfleet-swap"), lab);
}, 600_000);

afterAll(() => tearDownLabProject(project, lab));

describe("replacing an XDP resource with another on one interface, through the real Pulumi CLI", () => {
  it("firewall a -> load balancer web is refused naming XdpFirewall a; chaining both, then removing a, converges with a enforcing throughout", async () => {
    await converges("a");
    const a = await pinnedId("xdp-firewall/a");
    expect(await hookId()).toBe(a);
    const before = await onHost();

    const message = await refused("web");
    expect(message).toContain(`interface eth0 already runs the XDP program of bpfleet's XdpFirewall "a" (id ${a}, `);
    expect(message).toContain(`pins ${PINS}/xdp-firewall/a), attached alone; this load balancer would displace it`);
    expect(message).toContain(`give XdpFirewall "a" chainPriority 0 and this load balancer chainPriority 1, and give this load balancer the resource option \`dependsOn\` naming XdpFirewall "a"`);
    expect(message).toContain(`\`pulumi destroy --target '**${FIREWALL_TYPE}::a'\``);
    expect(message).toContain("Nothing was changed.");
    // A rename would keep the kind: a load balancer is no renamed firewall.
    expect(message).not.toContain("aliases");
    expect(await onHost()).toEqual(before);
    expect(await stateResources()).toEqual(["XdpFirewall::a"]);

    // The first way out: both in the chain for one up (the denied client gets no answer meanwhile), then a removed.
    const { summary } = await pingsDuring(() => converges("a+web"));
    expect(summary).toMatch(/^([1-9]\d+) packets transmitted, 0 received$/);
    const chained = { a: await pinnedId("xdp-firewall/a"), web: await pinnedId("maglev/web") };
    expect(await hookId()).toBe(await pinnedId("xdp-dispatcher/eth0"));
    expect(await chainSlots()).toEqual({ 0: chained.a, 1: chained.web });

    await converges("web chained");
    expect(await pinDirs()).toEqual(["maglev/web", "xdp-dispatcher/eth0"]);
    expect(await chainSlots()).toEqual({ 1: chained.web });
    expect(await stateResources()).toEqual(["MaglevService::web"]);
  }, 180_000);

  it("load balancer web -> firewall b is refused naming MaglevService web; `pulumi destroy --target` as given, then up, converges", async () => {
    const before = await onHost();
    const message = await refused("b");
    expect(message).toContain(`interface eth0 runs bpfleet's XDP dispatcher for one program, that of bpfleet's MaglevService "web" (chainPriority 1, pins ${PINS}/maglev/web)`);
    expect(message).toContain("give this firewall a free chainPriority (0, 2, 3, 4, 5, 6, 7; lower runs first)");
    expect(message).toContain("Nothing was changed.");
    expect(message).not.toContain("aliases");
    expect(await onHost()).toEqual(before);

    // The second way out, with the target exactly as the message spells it.
    const target = message.match(/`pulumi destroy --target '([^']+)'`/)?.[1];
    expect(target).toBe(`**${BALANCER_TYPE}::web`);
    const destroyed = await project.pulumi(["destroy", "--target", target!, "--yes", "--skip-preview"]);
    expect(destroyed.exitCode, `${destroyed.stdout}\n${destroyed.stderr}`).toBe(0);
    expect(destroyed.stdout).toMatch(/1 deleted/);
    expect(await onHost()).toEqual({ pins: [], hook: undefined, slots: {} });

    await converges("b");
    expect(await pinDirs()).toEqual(["xdp-firewall/b"]);
    expect(await hookId()).toBe(await pinnedId("xdp-firewall/b"));
    expect(await stateResources()).toEqual(["XdpFirewall::b"]);
  }, 120_000);

  it("firewall b renamed c is refused naming XdpFirewall b; with the alias and pin name given, up leaves the host as it is and c keeps denying", async () => {
    const b = await pinnedId("xdp-firewall/b");
    const before = await onHost();
    const message = await refused("c");
    expect(message).toContain(`interface eth0 already runs the XDP program of bpfleet's XdpFirewall "b" (id ${b}, `);
    expect(message).toContain(`If this firewall is XdpFirewall "b" renamed, make them one resource: add the resource option \`aliases: [{ name: "b" }]\``);
    expect(message).toContain(`and the input \`pinName: "b"\``);
    expect(message).toContain(`\`pulumi destroy --target '**${FIREWALL_TYPE}::b'\``);
    expect(message).toContain("Nothing was changed.");
    expect(await onHost()).toEqual(before);

    const { result, summary } = await pingsDuring(() => converges("c aliased"));
    expect(summary).toMatch(/^([1-9]\d+) packets transmitted, 0 received$/);
    expect(result.stdout).not.toMatch(/\b(created|deleted|replaced|updated)\b/);
    // The same program, untouched, now under the new name.
    expect(await onHost()).toEqual(before);
    expect(await pinnedId("xdp-firewall/b")).toBe(b);
    expect(await stateResources()).toEqual(["XdpFirewall::c"]);
  }, 120_000);
});
