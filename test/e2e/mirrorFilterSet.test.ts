// End to end (issue 10): one MirrorFilterSet bound by the TrafficMirror of three lab
// hosts, through the real Pulumi CLI, the README's MirrorFilterSet snippet as written for
// the first host. One filter added: `preview --diff` shows it once, under the set, and
// names the three mirrors; `up` applies it on every host (the live set in the mirror's
// maps, and the host's applied record); a filter slipped in by hand on one host shows on
// refresh as that host's drift only, and the next `up` removes it. The state carries the
// filters once.
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createLab, type Lab, type LabHost } from "../lab/lab";
import { liveFilters, slipFilterIn } from "../lab/mirrorByHand";
import { readmeSnippets } from "../support/readmeSnippets";
import { tearDownLabProject, useLab } from "./labHosts";
import { updatedBlocks } from "./previewOutput";
import { labProgram, stateResources } from "./labProgram";
import { PulumiProject } from "./pulumiProject";

const WORK = process.env.BPFLEET_E2E_DIR ?? "/tmp/bpfleet-e2e";
let lab: Lab;
let project: PulumiProject;

/** The README's snippet for the first host, and the same set bound by a mirror on each other host. */
function program(snippet: string): string {
  return labProgram(snippet, `new bpfleet.TrafficMirror(\`edge-tap-\${h.name}\`, { host: hostOf(h), interface: "eth0", direction: "ingress", filterSet: tapFilters, target: { tunnel: { type: "vxlan", remote: "198.51.100.50", vni: 43 } } });`);
}

const PINS: Record<string, string> = { h1: "edge-tap", h2: "edge-tap-h2", h3: "edge-tap-h3" };
const pin = (host: LabHost) => `/sys/fs/bpf/bpfleet/traffic-mirror/${PINS[host.name]}`;
const applied = async (host: LabHost) => String((await lab.inHost(host, ["cat", `/var/lib/bpfleet/applied/traffic-mirror/${PINS[host.name]}`])).stdout).split("\n").filter(Boolean);
const live = (host: LabHost) => liveFilters(lab, host, pin(host));
const FILTERS = ["src net 192.0.2.0/24", "tcp and dst port 443", "udp and dst port 53"];
const ADDED = "udp and dst port 5353";
const name = (r: { urn: string }) => r.urn.slice(r.urn.lastIndexOf("::") + 2);

const resources = () => stateResources(project);

beforeAll(async () => {
  lab = await createLab("e2emfs", { hosts: 3, clients: 0 });
  mkdirSync(WORK, { recursive: true });
  project = await PulumiProject.fromSource("mirrorfilterset", program(readmeSnippets().get("MirrorFilterSet")!));
  await useLab(project, lab);
  await project.ok(["up", "--yes", "--skip-preview"]);
}, 600_000);

afterAll(() => tearDownLabProject(project, lab));

describe("one MirrorFilterSet on three hosts, through the real Pulumi CLI", () => {
  it("the state holds the filters once: each mirror carries the set's name, digest and count; every host applies them", async () => {
    const all = await resources();
    const set = all.find((r) => r.type.endsWith(":MirrorFilterSet"))!;
    expect(set.inputs!.filters).toBe(`${FILTERS.join("\n")}\n`);
    expect(set.outputs).toMatchObject({ count: 3 });
    const mirrors = all.filter((r) => r.type.endsWith(":TrafficMirror"));
    expect(mirrors.map(name).sort()).toEqual(["edge-tap", "edge-tap-h2", "edge-tap-h3"]);
    for (const m of mirrors) {
      expect(m.outputs!.filterSet).toEqual({ name: "tap-filters", digest: set.outputs!.digest, count: 3 });
      expect(m.outputs!.filters).toEqual({});
      // No filter's text or value in the mirror's inputs or outputs: 192.0.2.0 is the source filter's net.
      expect(JSON.stringify(m)).not.toContain("192.0.2.0");
      expect(JSON.stringify(m)).not.toContain("dst port 443");
    }
    for (const host of lab.hosts) {
      expect(await applied(host)).toEqual(FILTERS);
      expect(await live(host)).toEqual(FILTERS);
    }
  });

  it("one filter added: the preview shows it once and names the three mirrors; up applies it on every host", async () => {
    const snippet = readmeSnippets().get("MirrorFilterSet")!;
    expect(snippet).toContain('"udp and dst port 53",');
    writeFileSync(join(project.dir, "index.ts"), program(snippet.replace('"udp and dst port 53",', `"udp and dst port 53", "${ADDED}",`)));
    const preview = await project.ok(["preview", "--diff"]);
    const text = preview.stdout;
    expect(text.match(/dst port 5353/g), text).toHaveLength(1);
    expect(text).toMatch(/^\s*\+\s+udp and dst port 5353$/m);
    expect(updatedBlocks(text, "TrafficMirror"), text).toEqual(["edge-tap", "edge-tap-h2", "edge-tap-h3"]);
    expect(updatedBlocks(text, "MirrorFilterSet")).toEqual(["tap-filters"]);

    await project.ok(["up", "--yes", "--skip-preview"]);
    const now = [...FILTERS, ADDED];
    for (const host of lab.hosts) {
      expect(await applied(host)).toEqual(now);
      expect(await live(host)).toEqual(now);
    }
    const digests = (await resources()).filter((r) => r.type.endsWith(":TrafficMirror")).map((r) => r.outputs!.filterSet as { digest: string; count: number });
    expect(new Set(digests.map((d) => d.digest)).size).toBe(1);
    expect(digests.map((d) => d.count)).toEqual([4, 4, 4]);
    const again = await project.ok(["preview", "--diff"]);
    expect(updatedBlocks(again.stdout, "TrafficMirror")).toEqual([]);
  });

  it("a filter slipped in by hand on h2 shows on refresh as h2's drift only; the next up removes it", async () => {
    const h2 = lab.hosts[1]!;
    await slipFilterIn(lab, h2, pin(h2), { protocol: "icmp" });
    expect(await live(h2)).toEqual([...FILTERS, ADDED, "icmp"].sort());
    await project.ok(["refresh", "--yes", "--skip-preview"]);
    const drifted = (await resources()).filter((r) => r.type.endsWith(":TrafficMirror") && r.outputs!.filterDrift);
    expect(drifted.map(name)).toEqual(["edge-tap-h2"]);
    expect(drifted[0]!.outputs!.filterDrift).toEqual({ icmp: "stray" });

    const preview = await project.ok(["preview", "--diff"]);
    expect(updatedBlocks(preview.stdout, "TrafficMirror"), preview.stdout).toEqual(["edge-tap-h2"]);
    await project.ok(["up", "--yes", "--skip-preview"]);
    expect(await live(h2)).toEqual([...FILTERS, ADDED]);
    expect(await applied(h2)).toEqual([...FILTERS, ADDED]);
    const state = (await resources()).find((r) => r.urn.endsWith("::edge-tap-h2"))!;
    expect(state.outputs!.filterDrift).toBeUndefined();
  });
});
