// End to end: the real pulumi CLI rolls examples/fleet (an XdpFirewall per host, all
// applying one DenyList; canary 1 + waves of 5 with a health gate after each) out over
// a 10-host lab.
import { existsSync, readFileSync, rmSync } from "node:fs";
import { join, resolve } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createLab, type Lab, type LabHost } from "../lab/lab";
import { tearDownLabProject, useLab } from "./labHosts";
import { PulumiProject } from "./pulumiProject";

const WAVES = [["h1"], ["h2", "h3", "h4", "h5", "h6"], ["h7", "h8", "h9", "h10"]];

let lab: Lab;
let project: PulumiProject;

interface HostStatus {
  wave: number;
  resource: string;
  version: string;
  objectSha256: string;
  programId: number;
  attachMode: string;
  denyEntries: number;
  denyListDigest: string;
  checkedAt: string;
}

/** Deny entries (decoded to hex keys) and the pinned program id of the host's firewall, read inside the host. */
async function firewallOn(host: LabHost): Promise<{ entries: string; programId: number | undefined }> {
  const dir = `/sys/fs/bpf/bpfleet/xdp-firewall/edge-${host.name}`;
  const entries = await lab.inHost(host, ["sh", "-c", `for m in ${dir}/maps/deny_*; do echo "$m"; bpftool -j map dump pinned "$m"; done 2>&1`]);
  const prog = await lab.inHost(host, ["bpftool", "-j", "prog", "show", "pinned", `${dir}/prog`], { reject: false });
  return { entries: String(entries.stdout), programId: prog.exitCode === 0 ? JSON.parse(String(prog.stdout)).id : undefined };
}

/** The exact-match IPv4 key bpftool prints for `address`. */
function v4Key(address: string): string {
  return JSON.stringify(address.split(".").map((b) => `0x${Number(b).toString(16).padStart(2, "0")}`));
}

async function rollout(): Promise<Record<string, HostStatus>> {
  return JSON.parse((await project.ok(["stack", "output", "rollout", "--json"])).stdout);
}

interface EngineEvent {
  sequence: number;
  resourcePreEvent?: { metadata: { urn: string; op: string } };
  resOutputsEvent?: { metadata: { urn: string; op: string } };
}

function readEvents(path: string): EngineEvent[] {
  return readFileSync(path, "utf8")
    .split("\n")
    .filter(Boolean)
    .map((line) => JSON.parse(line) as EngineEvent)
    .sort((a, b) => a.sequence - b.sequence);
}

const urnName = (urn: string) => urn.slice(urn.lastIndexOf("::") + 2);

/**
 * The resources a `--diff` output shows as `<type>: (update)`, by name, with the
 * deny entry lines (`+ "x": "deny"`, or `+ x` in a DenyList's text) of each block.
 */
function updatedResources(output: string, type: "XdpFirewall" | "HealthGate" | "DenyList"): Map<string, string[]> {
  const updated = new Map<string, string[]>();
  let inBlock = false;
  let current: string | undefined;
  for (const line of output.split("\n")) {
    const block = line.match(/^\s*[~+\-]*\s*\S+:(\w+): \((\w+)\)/);
    if (block) {
      inBlock = block[1] === type && block[2] === "update";
      current = undefined;
    }
    const name = line.match(/urn=.*::([\w-]+)\]/)?.[1];
    if (inBlock && name) {
      current = name;
      updated.set(name, []);
    }
    // A DenyList's entries are one sorted text, which the CLI diffs line by line (`+ x`).
    const entry = line.match(/^\s*([+-])\s+"?([0-9a-f.:]+\/\d+)"?(?:\s*:\s*"deny")?\s*$/);
    if (current && entry) updated.get(current)!.push(`${entry[1]} ${entry[2]}`);
  }
  return updated;
}

beforeAll(async () => {
  lab = await createLab("fleet", { hosts: 10, clients: 1 });
  project = await useLab(await PulumiProject.create("fleet", resolve(__dirname, "../../examples/fleet/index.ts"), "bpfleet-fleet"), lab);
  // `--event-log` (the engine's event stream, as the Automation API reads it) is listed only with debug commands on.
  project.env.PULUMI_DEBUG_COMMANDS = "true";
});

afterAll(() => tearDownLabProject(project, lab));

describe("fleet rollout through the real Pulumi CLI", () => {
  it("a good rollout reaches all 10 hosts, wave after wave, each wave after the previous gate passed", async () => {
    await project.setList("deny", ["203.0.113.0/24"]);
    const eventLog = join(project.dir, "up-events.jsonl");
    rmSync(eventLog, { force: true });
    const started = Date.now();
    await project.ok(["up", "--yes", "--skip-preview", "--event-log", eventLog]);
    console.log(`pulumi up, first rollout to 10 hosts (3 waves, 3 gates): ${((Date.now() - started) / 1000).toFixed(1)} s`);

    const outputs = JSON.parse((await project.ok(["stack", "output", "--json"])).stdout);
    expect(outputs.waves).toEqual(WAVES);
    const hosts = outputs.rollout as Record<string, HostStatus>;
    expect(Object.keys(hosts).sort()).toEqual(lab.hosts.map((h) => h.name).sort());
    for (const [wave, names] of WAVES.entries()) {
      for (const name of names) {
        expect(hosts[name]).toMatchObject({ wave, resource: `edge-${name}`, attachMode: expect.stringMatching(/^(driver|generic)$/), denyEntries: 1 });
        expect(hosts[name]!.version).toMatch(/^[0-9a-f]{64}$/);
        expect(hosts[name]!.programId).toBe((await firewallOn(lab.host(name))).programId);
      }
    }

    // The engine's own record of the update: every firewall of wave k finished, then
    // gate k finished, before any firewall of wave k+1 started.
    expect(existsSync(eventLog)).toBe(true);
    const events = readEvents(eventLog);
    const seq = (kind: "resourcePreEvent" | "resOutputsEvent", name: string) => {
      const event = events.find((e) => e[kind] && urnName(e[kind]!.metadata.urn) === name);
      expect(event, `${kind} of ${name}`).toBeDefined();
      return event!.sequence;
    };
    for (const [wave, names] of WAVES.entries()) {
      const gateDone = seq("resOutputsEvent", `edge-wave${wave}`);
      for (const name of names) expect(seq("resOutputsEvent", `edge-${name}`)).toBeLessThan(gateDone);
      for (const later of WAVES[wave + 1] ?? []) expect(seq("resourcePreEvent", `edge-${later}`)).toBeGreaterThan(gateDone);
    }
  });

  it("a spec that breaks the canary's health probe stops the rollout: pulumi up fails naming the canary, the other 9 hosts are untouched", async () => {
    const client = lab.clients[0]!;
    const canary = lab.host("h1");
    const before = Object.fromEntries(await Promise.all(lab.hosts.map(async (h) => [h.name, await firewallOn(h)] as const)));
    const outputsBefore = await rollout();

    // Denying the client the probe pings drops the echo replies on every host that gets this spec.
    await project.setList("deny", ["203.0.113.0/24", client.address]);
    const started = Date.now();
    const up = await project.pulumi(["up", "--yes", "--skip-preview"]);
    console.log(`pulumi up, broken canary: failed after ${((Date.now() - started) / 1000).toFixed(1)} s`);
    const output = `${up.stdout}\n${up.stderr}`;
    expect(up.exitCode, output).not.toBe(0);
    expect(output).toMatch(/health gate of wave 0 \(canary\) of fleet "edge" failed on 1 of 1 host\(s\)/);
    expect(output).toContain(`h1 (root@${canary.address}): probe \`ping -c 1 -W 1 ${client.address}\` failed 2 time(s)`);
    expect(output).toMatch(/not touched and keep their previous version: h2, h3, h4, h5, h6, h7, h8, h9, h10\./);

    // The canary got the new spec; nobody else was touched.
    const canaryAfter = await firewallOn(canary);
    expect(canaryAfter.entries).toContain(v4Key(client.address));
    expect(canaryAfter.programId).toBe(before.h1!.programId);
    for (const host of lab.hosts.filter((h) => h.name !== "h1")) {
      const after = await firewallOn(host);
      expect(after, host.name).toEqual(before[host.name]);
      expect(after.entries).not.toContain(v4Key(client.address));
    }
    // A failed update does not rewrite the stack's outputs.
    expect(await rollout()).toEqual(outputsBefore);

    // Reverting the spec brings the canary back; its gate runs again and passes.
    await project.setList("deny", ["203.0.113.0/24"]);
    await project.ok(["up", "--yes", "--skip-preview"]);
    expect((await firewallOn(canary)).entries).not.toContain(v4Key(client.address));
    const after = await rollout();
    for (const host of lab.hosts) expect(after[host.name]!.version, host.name).toBe(outputsBefore[host.name]!.version);
  });

  it("pulumi preview --diff for an entry added to the fleet's list shows it once, under the list, and names all 10 firewalls; up moves every host to it in place", async () => {
    const before = await rollout();
    await project.setList("deny", ["203.0.113.0/24", "198.51.100.0/24"]);

    const preview = await project.ok(["preview", "--diff"]);
    // The entry is held once, by the DenyList: shown there, never under a firewall.
    expect([...updatedResources(preview.stdout, "DenyList").entries()], preview.stdout).toEqual([["edge-deny", ["+ 198.51.100.0/24"]]]);
    const updated = updatedResources(preview.stdout, "XdpFirewall");
    expect([...updated.keys()].sort(), preview.stdout).toEqual(lab.hosts.map((h) => `edge-${h.name}`).sort());
    for (const [name, lines] of updated) expect(lines, name).toEqual([]);
    // Every host changes, so every wave's gate runs again.
    expect([...updatedResources(preview.stdout, "HealthGate").keys()].sort()).toEqual(["edge-wave0", "edge-wave1", "edge-wave2"]);
    expect(preview.stdout).toMatch(/~ 14 to update\s+2 unchanged/);

    const started = Date.now();
    await project.ok(["up", "--yes", "--skip-preview"]);
    console.log(`pulumi up, one entry on 10 hosts: ${((Date.now() - started) / 1000).toFixed(1)} s`);
    const after = await rollout();
    const digests = new Set(lab.hosts.map((h) => after[h.name]!.denyListDigest));
    expect(digests.size).toBe(1);
    expect([...digests][0]).not.toBe(before.h1!.denyListDigest);
    for (const host of lab.hosts) {
      expect(after[host.name]!.version, host.name).not.toBe(before[host.name]!.version);
      expect(after[host.name]!.denyEntries).toBe(2);
      // Map entries change in place: the program is the same everywhere.
      expect(after[host.name]!.programId, host.name).toBe(before[host.name]!.programId);
      expect((await firewallOn(host)).entries, host.name).toMatch(/"0xc6",\s*"0x33",\s*"0x64",\s*"0x00"/);
    }
  });
});
