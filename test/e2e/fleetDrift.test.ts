// End to end: drift on one host of a Fleet (examples/fleet on a 3-host lab, one
// DenyList applied by every host), through the real pulumi CLI. Entries changed by
// hand on one host show up in a preview-only `pulumi refresh --diff` for that host's
// firewall alone, as the difference from the list it applied, and `pulumi up
// --refresh` puts the host's maps back as declared without touching the others.
import { resolve } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createLab, type Lab, type LabHost } from "../lab/lab";
import { tearDownLabProject, useLab } from "./labHosts";
import { PulumiProject } from "./pulumiProject";

const DECLARED = ["198.51.100.0/24", "203.0.113.0/24"];

let lab: Lab;
let project: PulumiProject;

const mapsOf = (host: LabHost) => `/sys/fs/bpf/bpfleet/xdp-firewall/edge-${host.name}/maps`;

/** The deny entries in the host's maps, decoded from bpftool's JSON, read inside the host. */
async function entriesOn(host: LabHost): Promise<string[]> {
  const entries: string[] = [];
  for (const map of ["deny_v4_exact", "deny_v4_prefix"]) {
    const r = await lab.inHost(host, ["bpftool", "-j", "map", "dump", "pinned", `${mapsOf(host)}/${map}`]);
    for (const { key } of JSON.parse(String(r.stdout)) as { key: string[] }[]) {
      const bytes = key.map((b) => Number.parseInt(b, 16));
      entries.push(map === "deny_v4_exact" ? `${bytes.join(".")}/32` : `${bytes.slice(4).join(".")}/${bytes[0]! | (bytes[1]! << 8)}`);
    }
  }
  return entries.sort();
}

async function programIdOn(host: LabHost): Promise<number> {
  const r = await lab.inHost(host, ["bpftool", "-j", "prog", "show", "pinned", `/sys/fs/bpf/bpfleet/xdp-firewall/edge-${host.name}/prog`]);
  return JSON.parse(String(r.stdout)).id;
}

/**
 * Per XdpFirewall block of a --diff output that shows a change, the entry lines: the
 * firewalls apply the fleet's DenyList, so what refresh finds on a host is its
 * `denyDrift` (`+ "x": "stray"`, `+ "y": "missing"`), and what `up` changes is that
 * drift going away (`- "x": "stray"`); refresh prints each block twice (preview, then
 * result), so lines are deduplicated.
 */
function firewallChanges(output: string): Map<string, string[]> {
  const changes = new Map<string, string[]>();
  let current: string | undefined;
  let inFirewall = false;
  for (const line of output.split("\n")) {
    const block = line.match(/^\s*[~+\-=<>]*\s*\S+:(\w+): \((\w[\w-]*)\)/);
    if (block) {
      inFirewall = block[1] === "XdpFirewall";
      current = undefined;
    }
    const name = line.match(/urn=.*::([\w-]+)\]/)?.[1];
    if (inFirewall && name) current = name;
    const entry = line.match(/^\s*([+-])\s+"?([0-9a-f.:]+\/\d+)"?\s*:\s*"(deny|stray|missing)"/);
    if (current && entry) changes.set(current, [...new Set([...(changes.get(current) ?? []), `${entry[1]} ${entry[2]} ${entry[3]}`])]);
  }
  return changes;
}

beforeAll(async () => {
  lab = await createLab("e2edrft", { hosts: 3, clients: 1 });
  project = await useLab(await PulumiProject.create("fleetdrift", resolve(__dirname, "../../examples/fleet/index.ts"), "bpfleet-fleet"), lab);
  // Canary h1, then h2 and h3 in one wave.
  await project.ok(["config", "set", "waveSize", "2"]);
  await project.setList("deny", DECLARED);
  await project.ok(["up", "--yes", "--skip-preview"]);
});

afterAll(() => tearDownLabProject(project, lab));

describe("drift on one host of a fleet, through the real Pulumi CLI", () => {
  it("entries changed by hand on one host: refresh --preview-only --diff reports that host's firewall only, and up --refresh restores its maps", async () => {
    const [h1, h2, h3] = lab.hosts as [LabHost, LabHost, LabHost];
    const outputs = JSON.parse((await project.ok(["stack", "output", "waves", "--json"])).stdout);
    expect(outputs).toEqual([["h1"], ["h2", "h3"]]);
    for (const host of lab.hosts) expect(await entriesOn(host), host.name).toEqual(DECLARED);
    const programs = Object.fromEntries(await Promise.all(lab.hosts.map(async (h) => [h.name, await programIdOn(h)] as const)));

    // By hand on h2: one entry added, one declared entry removed.
    await lab.inHost(h2, ["bpftool", "map", "update", "pinned", `${mapsOf(h2)}/deny_v4_exact`, "key", "192", "0", "2", "77", "value", "1"]);
    await lab.inHost(h2, ["bpftool", "map", "delete", "pinned", `${mapsOf(h2)}/deny_v4_prefix`, "key", "24", "0", "0", "0", "203", "0", "113", "0"]);
    expect(await entriesOn(h2)).toEqual(["192.0.2.77/32", "198.51.100.0/24"]);

    const refresh = await project.ok(["refresh", "--preview-only", "--diff"]);
    const drift = firewallChanges(refresh.stdout);
    expect([...drift.keys()], refresh.stdout).toEqual([`edge-${h2.name}`]);
    // The difference from the list h2 applied, and only that: a stray entry and a missing one.
    expect(drift.get(`edge-${h2.name}`)!.sort(), refresh.stdout).toEqual(["+ 192.0.2.77/32 stray", "+ 203.0.113.0/24 missing"]);

    // A preview-only refresh writes nothing: the drift is still on h2, the state still as declared.
    expect(await entriesOn(h2)).toEqual(["192.0.2.77/32", "198.51.100.0/24"]);
    const again = await project.ok(["refresh", "--preview-only", "--diff"]);
    expect([...firewallChanges(again.stdout).keys()]).toEqual([`edge-${h2.name}`]);

    const started = Date.now();
    const up = await project.ok(["up", "--refresh", "--yes", "--skip-preview", "--diff"]);
    console.log(`pulumi up --refresh repairing one host of 3: ${((Date.now() - started) / 1000).toFixed(1)} s`);
    const updated = firewallChanges(up.stdout.slice(up.stdout.search(/^Updating/m)));
    expect([...updated.keys()], up.stdout).toEqual([`edge-${h2.name}`]);
    // The update takes away the drift its refresh found (printed first, as `+`).
    expect(updated.get(`edge-${h2.name}`)!.filter((line) => line.startsWith("-")).sort(), up.stdout).toEqual(["- 192.0.2.77/32 stray", "- 203.0.113.0/24 missing"]);
    for (const host of [h1, h2, h3]) {
      expect(await entriesOn(host), host.name).toEqual(DECLARED);
      // Repaired in place: map writes only, the same program everywhere.
      expect(await programIdOn(host), host.name).toBe(programs[host.name]);
    }
    const after = await project.ok(["refresh", "--preview-only", "--diff"]);
    expect([...firewallChanges(after.stdout).keys()], after.stdout).toEqual([]);
  }, 300_000);
});
