// End to end (issue 10): one MaglevBackendSet bound by the MaglevService of three lab
// hosts, through the real Pulumi CLI, the README's MaglevBackendSet snippet as written for
// the first host. One backend added: `preview --diff` shows it once, under the set, and
// names the three services; `up` applies it on every host; a backend record made by hand
// on one host shows on refresh as that host's drift only, and the next `up` removes it.
// The state carries the backends once.
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { encodeBackend, encodeIndex, MAPS } from "../../provider/maglev/codec";
import { createLab, type Lab, type LabHost } from "../lab/lab";
import { readmeSnippets } from "../support/readmeSnippets";
import { tearDownLabProject, useLab } from "./labHosts";
import { updatedBlocks } from "./previewOutput";
import { labProgram, stateResources } from "./labProgram";
import { PulumiProject } from "./pulumiProject";

const WORK = process.env.BPFLEET_E2E_DIR ?? "/tmp/bpfleet-e2e";
let lab: Lab;
let project: PulumiProject;

/** The README's snippet for the first host, and the same set bound by a service on each other host. */
function program(snippet: string): string {
  return labProgram(snippet, `new bpfleet.MaglevService(\`web-\${h.name}\`, { host: hostOf(h), interface: "eth0", vips: ["198.51.100.10:80/tcp"], backendSet: pool });`);
}

const PINS: Record<string, string> = { h1: "web-shared", h2: "web-h2", h3: "web-h3" };
const applied = async (host: LabHost) => String((await lab.inHost(host, ["cat", `/var/lib/bpfleet/applied/maglev/${PINS[host.name]}`])).stdout).split("\n").filter(Boolean);
const LINES = ["10.0.0.21 mac 02:00:00:00:00:21", "10.0.0.22 weight 2 mac 02:00:00:00:00:22"];

const resources = () => stateResources(project);

beforeAll(async () => {
  lab = await createLab("e2embs", { hosts: 3, clients: 0 });
  mkdirSync(WORK, { recursive: true });
  project = await PulumiProject.fromSource("maglevbackendset", program(readmeSnippets().get("MaglevBackendSet")!));
  await useLab(project, lab);
  await project.ok(["config", "set", "lbAddress", lab.hosts[0]!.address]);
  await project.ok(["config", "set", "lbHostKey", lab.hosts[0]!.hostKey]);
  await project.ok(["up", "--yes", "--skip-preview"]);
}, 600_000);

afterAll(() => tearDownLabProject(project, lab));

describe("one MaglevBackendSet on three hosts, through the real Pulumi CLI", () => {
  it("the state holds the backends once: each service carries the set's digest and count", async () => {
    const all = await resources();
    const set = all.find((r) => r.type.endsWith(":MaglevBackendSet"))!;
    expect(set.inputs!.backends).toBe(`${LINES.join("\n")}\n`);
    expect(set.outputs).toMatchObject({ count: 2 });
    const services = all.filter((r) => r.type.endsWith(":MaglevService"));
    expect(services).toHaveLength(3);
    for (const s of services) {
      expect(s.outputs!.backendSet).toEqual({ name: "web-pool", digest: set.outputs!.digest, count: 2 });
      expect(s.outputs!.backends).toEqual({});
      expect(JSON.stringify(s)).not.toContain("02:00:00:00:00:22");
    }
    for (const host of lab.hosts) expect(await applied(host)).toEqual(LINES);
  });

  it("one backend added: the preview shows it once and names the three services; up applies it on every host", async () => {
    const snippet = readmeSnippets().get("MaglevBackendSet")!;
    writeFileSync(join(project.dir, "index.ts"), program(snippet.replace('"10.0.0.21 mac 02:00:00:00:00:21",', '"10.0.0.21 mac 02:00:00:00:00:21", "10.0.0.24 mac 02:00:00:00:00:24",')));
    const preview = await project.ok(["preview", "--diff"]);
    const text = preview.stdout;
    expect(text.match(/10\.0\.0\.24/g), text).toHaveLength(1);
    expect(text).toMatch(/^\s*\+\s+10\.0\.0\.24 mac 02:00:00:00:00:24$/m);
    expect(updatedBlocks(text, "MaglevService"), text).toEqual(["web-h2", "web-h3", "web-shared"]);
    expect(updatedBlocks(text, "MaglevBackendSet")).toEqual(["web-pool"]);

    await project.ok(["up", "--yes", "--skip-preview"]);
    for (const host of lab.hosts) expect(await applied(host)).toEqual([LINES[0], "10.0.0.22 weight 2 mac 02:00:00:00:00:22", "10.0.0.24 mac 02:00:00:00:00:24"]);
    const tables = (await resources()).filter((r) => r.type.endsWith(":MaglevService")).map((r) => r.outputs!.tableDigest);
    expect(new Set(tables).size).toBe(1);
    const again = await project.ok(["preview", "--diff"]);
    expect(updatedBlocks(again.stdout, "MaglevService")).toEqual([]);
  });

  it("a backend record made by hand on h2 shows on refresh as h2's drift only; the next up removes it", async () => {
    const h2 = lab.hosts[1]!;
    const bytes = (b: Uint8Array) => Buffer.from(b).toString("hex").match(/../g)!;
    const pin = `/sys/fs/bpf/bpfleet/maglev/${PINS.h2}/maps/${MAPS.backends}`;
    await lab.inHost(h2, ["bpftool", "map", "update", "pinned", pin, "key", "hex", ...bytes(encodeIndex(300)), "value", "hex", ...bytes(encodeBackend({ address: "10.0.0.99", port: 0, mac: "02:00:00:00:00:99" }))]);
    await project.ok(["refresh", "--yes", "--skip-preview"]);
    const drifted = (await resources()).filter((r) => r.type.endsWith(":MaglevService") && r.outputs!.backendDrift);
    expect(drifted.map((r) => r.urn.slice(r.urn.lastIndexOf("::") + 2))).toEqual(["web-h2"]);
    expect(drifted[0]!.outputs!.backendDrift).toEqual({ "10.0.0.99": "stray" });

    const preview = await project.ok(["preview", "--diff"]);
    expect(updatedBlocks(preview.stdout, "MaglevService")).toEqual(["web-h2"]);
    await project.ok(["up", "--yes", "--skip-preview"]);
    const state = (await resources()).find((r) => r.urn.endsWith("::web-h2"))!;
    expect(state.outputs!.backendDrift).toBeUndefined();
    expect(Object.keys(state.outputs!.backendIndexes as object)).not.toContain("10.0.0.99");
  });
});
