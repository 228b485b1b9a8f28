// End to end (issue 10): a Fleet whose hosts share one DenyList (examples/fleet), and a
// wave that fails. Real Pulumi CLI on a lab: h1 (canary), then h2 and h3; h4 joins
// later. A list change that breaks the canary's health probe fails its gate: h2 and h3
// keep the old list (their maps and the applied copy each host records); refresh reads
// every host's real version; the next preview names exactly the hosts still on the old
// list; once the cause is fixed, the next `up` converges every host from what it holds;
// a host added afterwards gets the current list.
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { contentDigest } from "../../provider/sharedContent";
import { createLab, type Lab, type LabHost } from "../lab/lab";
import { tearDownLabProject, useLab } from "./labHosts";
import { PulumiProject } from "./pulumiProject";
import { updatedBlocks } from "./previewOutput";

const WORK = process.env.BPFLEET_E2E_DIR ?? "/tmp/bpfleet-e2e";
const OLD = ["203.0.113.0/24"];

let lab: Lab;
let project: PulumiProject;
/** The lab's lab.json with only the fleet's hosts (the program reads its hosts from `labFile`). */
const fleetLabFile = join(WORK, "fleet-list-lab.json");

function useHosts(names: string[]): void {
  const info = JSON.parse(readFileSync(lab.jsonPath, "utf8"));
  writeFileSync(fleetLabFile, JSON.stringify({ ...info, hosts: info.hosts.filter((h: { name: string }) => names.includes(h.name)) }));
}

/** What the host records as the list its firewall applied, one entry per line. */
async function appliedOn(host: LabHost): Promise<string[]> {
  const r = await lab.inHost(host, ["cat", `/var/lib/bpfleet/applied/xdp-firewall/edge-${host.name}`]);
  return String(r.stdout).split("\n").filter(Boolean);
}

/** Whether the host's exact-match IPv4 map holds `address`, read inside the host. */
async function denies(host: LabHost, address: string): Promise<boolean> {
  const map = `/sys/fs/bpf/bpfleet/xdp-firewall/edge-${host.name}/maps/deny_v4_exact`;
  return (await lab.inHost(host, ["bpftool", "map", "lookup", "pinned", map, "key", ...address.split(".")], { reject: false })).exitCode === 0;
}

/** Per firewall in the stack's state: the list it reports it applied. */
async function listsInState(): Promise<Record<string, { digest: string; count: number }>> {
  const resources = JSON.parse(await project.exportState()).deployment.resources as { type: string; urn: string; outputs?: { denyList?: { digest: string; count: number } } }[];
  return Object.fromEntries(resources.filter((r) => r.type.endsWith(":XdpFirewall")).map((r) => [r.urn.slice(r.urn.lastIndexOf("::") + 2), r.outputs!.denyList!]));
}

beforeAll(async () => {
  lab = await createLab("lsfleet", { hosts: 4, clients: 1 });
  mkdirSync(WORK, { recursive: true });
  useHosts(["h1", "h2", "h3"]);
  project = await PulumiProject.create("fleetlist", resolve(__dirname, "../../examples/fleet/index.ts"), "bpfleet-fleet");
  await useLab(project, lab);
  await project.ok(["config", "set", "labFile", fleetLabFile]);
  // Canary h1, then h2 and h3 in one wave.
  await project.ok(["config", "set", "waveSize", "2"]);
  await project.setList("deny", OLD);
  await project.ok(["up", "--yes", "--skip-preview"]);
}, 600_000);

afterAll(() => tearDownLabProject(project, lab));

describe("a fleet sharing one DenyList, through a failed wave", () => {
  it("a failed canary leaves h2 and h3 on the old list; refresh reads each host's version; the next up converges them; a host added later gets the current list", async () => {
    const [h1, h2, h3, h4] = lab.hosts as [LabHost, LabHost, LabHost, LabHost];
    const client = lab.clients[0]!.address;
    const oldCanonical = [...OLD];
    expect(await appliedOn(h2)).toEqual(oldCanonical);

    // Denying the client the health probe pings from each host: the canary's gate fails.
    const broken = [...OLD, client];
    await project.setList("deny", broken);
    const up = await project.pulumi(["up", "--yes", "--skip-preview"]);
    const output = `${up.stdout}\n${up.stderr}`;
    expect(up.exitCode, output).not.toBe(0);
    expect(output).toContain('health gate of wave 0 (canary) of fleet "edge" failed on 1 of 1 host(s)');
    expect(output).toContain("Hosts of later waves were not touched and keep their previous version: h2, h3.");
    const brokenCanonical = [`${client}/32`, ...OLD].sort();
    expect(await appliedOn(h1)).toEqual(brokenCanonical);
    expect(await denies(h1, client)).toBe(true);
    for (const host of [h2, h3]) {
      expect(await appliedOn(host), host.name).toEqual(oldCanonical);
      expect(await denies(host, client), host.name).toBe(false);
    }

    // Refresh reads each host's applied list: its digest is the host's real version.
    await project.ok(["refresh", "--yes"]);
    const lists = await listsInState();
    expect(lists["edge-h1"]).toMatchObject({ digest: contentDigest(brokenCanonical), count: 2 });
    for (const name of ["edge-h2", "edge-h3"]) expect(lists[name], name).toMatchObject({ digest: contentDigest(oldCanonical), count: 1 });

    // With the list unchanged, the next rollout would touch only the hosts still on the old list.
    const preview = await project.ok(["preview", "--diff"]);
    expect(updatedBlocks(preview.stdout, "XdpFirewall"), preview.stdout).toEqual(["edge-h2", "edge-h3"]);

    // The cause fixed (the client no longer denied; another entry added): every host
    // converges to the new list, h2 and h3 straight from the list they held.
    const fixed = [...OLD, "192.0.2.9/32"];
    await project.setList("deny", fixed);
    await project.ok(["up", "--yes", "--skip-preview"]);
    const fixedCanonical = [...fixed].sort();
    for (const host of [h1, h2, h3]) {
      expect(await appliedOn(host), host.name).toEqual(fixedCanonical);
      expect(await denies(host, "192.0.2.9"), host.name).toBe(true);
      expect(await denies(host, client), host.name).toBe(false);
    }
    const rollout = JSON.parse((await project.ok(["stack", "output", "rollout", "--json"])).stdout);
    for (const name of ["h1", "h2", "h3"]) expect(rollout[name], name).toMatchObject({ denyEntries: 2, denyListDigest: contentDigest(fixedCanonical) });

    // h4 joins the fleet (a wave of its own): it gets the current list.
    useHosts(["h1", "h2", "h3", "h4"]);
    await project.ok(["up", "--yes", "--skip-preview"]);
    expect(JSON.parse((await project.ok(["stack", "output", "waves", "--json"])).stdout)).toEqual([["h1"], ["h2", "h3"], ["h4"]]);
    expect(await appliedOn(h4)).toEqual(fixedCanonical);
    expect(await denies(h4, "192.0.2.9")).toBe(true);
    expect(JSON.parse((await project.ok(["stack", "output", "rollout", "--json"])).stdout).h4).toMatchObject({ wave: 2, denyEntries: 2, denyListDigest: contentDigest(fixedCanonical) });
  }, 600_000);
});
