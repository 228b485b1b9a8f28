// End to end (issue 10): one TcRuleSet bound by the TcPolicy of three lab hosts, through
// the real Pulumi CLI, the README's TcRuleSet snippet as written for the first host. One
// rule changed: `preview --diff` shows it once, under the set, and names the three
// policies; `up` applies it on every host; a rule broken by hand on one host shows on
// refresh as that host's drift only, and the next `up` repairs it. The state carries the
// rules once.
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { encodeL4Key, IPPROTO, MAPS } from "../../provider/tcPolicy/codec";
import { createLab, type Lab, type LabHost } from "../lab/lab";
import { readmeSnippets } from "../support/readmeSnippets";
import { tearDownLabProject, useLab } from "./labHosts";
import { updatedBlocks } from "./previewOutput";
import { labProgram, stateResources } from "./labProgram";
import { PulumiProject } from "./pulumiProject";

const WORK = process.env.BPFLEET_E2E_DIR ?? "/tmp/bpfleet-e2e";
let lab: Lab;
let project: PulumiProject;

/** The README's snippet for the first host, and the same set bound by a policy on each other host. */
function program(snippet: string): string {
  return labProgram(snippet, `new bpfleet.TcPolicy(\`edge-policy-\${h.name}\`, { host: hostOf(h), interface: "eth0", stateful: true, ingress: { default: "deny", ruleSet: edgeRules } });`);
}

const PINS: Record<string, string> = { h1: "edge-policy-shared", h2: "edge-policy-h2", h3: "edge-policy-h3" };
const applied = async (host: LabHost) => String((await lab.inHost(host, ["cat", `/var/lib/bpfleet/applied/tc-policy/${PINS[host.name]}`])).stdout).split("\n").filter(Boolean);

const resources = () => stateResources(project);

beforeAll(async () => {
  lab = await createLab("e2erset", { hosts: 3, clients: 0 });
  mkdirSync(WORK, { recursive: true });
  const snippet = readmeSnippets().get("TcRuleSet")!;
  project = await PulumiProject.fromSource("tcruleset", program(snippet));
  await useLab(project, lab);
  await project.ok(["up", "--yes", "--skip-preview"]);
}, 600_000);

afterAll(() => tearDownLabProject(project, lab));

describe("one TcRuleSet on three hosts, through the real Pulumi CLI", () => {
  it("the state holds the rules once: each policy carries the set's digest and count", async () => {
    const all = await resources();
    const set = all.find((r) => r.type.endsWith(":TcRuleSet"))!;
    // Once: in the set's inputs; its outputs only identify the rules (digest and count).
    expect(set.inputs!.rules).toBe("allow tcp 22\nallow tcp 443\nallow udp 53\n");
    expect(set.outputs).toMatchObject({ count: 3 });
    expect(JSON.stringify(set.outputs)).not.toContain("allow tcp 443");
    const policies = all.filter((r) => r.type.endsWith(":TcPolicy"));
    expect(policies).toHaveLength(3);
    for (const p of policies) {
      expect(p.outputs!.ingress).toEqual({ default: "deny", rules: {}, ruleSet: { name: "edge-rules", digest: set.outputs!.digest, count: 3 } });
      expect(JSON.stringify(p.outputs)).not.toContain("allow tcp 443");
    }
    for (const host of lab.hosts) expect(await applied(host)).toEqual(["ingress allow tcp 22", "ingress allow tcp 443", "ingress allow udp 53"]);
  });

  it("one rule changed: the preview shows it once and names the three policies; up applies it on every host", async () => {
    const snippet = readmeSnippets().get("TcRuleSet")!;
    expect(snippet).toContain('"allow tcp 443"');
    writeFileSync(join(project.dir, "index.ts"), program(snippet.replace('"allow tcp 443"', '"allow tcp 8443"')));
    const preview = await project.ok(["preview", "--diff"]);
    const text = preview.stdout;
    expect(text.match(/allow tcp 8443/g), text).toHaveLength(1);
    expect(text.match(/allow tcp 443\b/g), text).toHaveLength(1);
    expect(text).toMatch(/^\s*\+\s+allow tcp 8443$/m);
    expect(text).toMatch(/^\s*-\s+allow tcp 443$/m);
    expect(updatedBlocks(text, "TcPolicy"), text).toEqual(["edge-policy-h2", "edge-policy-h3", "edge-policy-shared"]);
    expect(updatedBlocks(text, "TcRuleSet")).toEqual(["edge-rules"]);

    await project.ok(["up", "--yes", "--skip-preview"]);
    for (const host of lab.hosts) expect(await applied(host)).toEqual(["ingress allow tcp 22", "ingress allow tcp 8443", "ingress allow udp 53"]);
    const again = await project.ok(["preview", "--diff"]);
    expect(updatedBlocks(again.stdout, "TcPolicy")).toEqual([]);
  });

  it("a rule broken by hand on h2 shows on refresh as h2's drift only; the next up repairs it", async () => {
    const h2 = lab.hosts[1]!;
    const l4Key = encodeL4Key({ direction: "ingress", protocol: IPPROTO.TCP, port: 8443, prefixLength: 32 });
    const l4Pin = `/sys/fs/bpf/bpfleet/tc-policy/${PINS.h2}/maps/${MAPS.l4}`;
    await lab.inHost(h2, ["bpftool", "map", "delete", "pinned", l4Pin, "key", "hex", ...Buffer.from(l4Key).toString("hex").match(/../g)!]);
    await project.ok(["refresh", "--yes", "--skip-preview"]);
    const drifted = (await resources()).filter((r) => r.type.endsWith(":TcPolicy") && (r.outputs!.ingress as { drift?: unknown }).drift);
    expect(drifted.map((r) => r.urn.slice(r.urn.lastIndexOf("::") + 2))).toEqual(["edge-policy-h2"]);
    expect((drifted[0]!.outputs!.ingress as { drift: unknown }).drift).toEqual({ "allow tcp 8443": "missing", "allow tcp 8443 (altered on the host)": "stray" });

    const preview = await project.ok(["preview", "--diff"]);
    expect(updatedBlocks(preview.stdout, "TcPolicy")).toEqual(["edge-policy-h2"]);
    await project.ok(["up", "--yes", "--skip-preview"]);
    const lookup = await lab.inHost(h2, ["bpftool", "map", "lookup", "pinned", l4Pin, "key", "hex", ...Buffer.from(l4Key).toString("hex").match(/../g)!], { reject: false });
    expect(lookup.exitCode).toBe(0);
    const state = (await resources()).find((r) => r.urn.endsWith("::edge-policy-h2"))!;
    expect((state.outputs!.ingress as { drift?: unknown }).drift).toBeUndefined();
  });
});
