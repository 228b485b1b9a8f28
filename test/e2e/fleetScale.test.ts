// End to end (issue 10): a deny list held once for a fleet of 10 lab hosts, through the
// real Pulumi CLI running examples/quickstart. The stack is created by main's release
// (entries in every firewall's state; built from git history by packRelease) and upgraded by one `up`
// while a denied client pings a host; then one entry added and one removed: the preview
// shows each once and names the 10 firewalls; drift made by hand on one host is
// reported there only and repaired; a `--target` of one firewall alone refuses; destroy
// leaves nothing. It prints exported state bytes and one-entry `up` times before and
// after the upgrade, measured in the same run.
import { copyFileSync, existsSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createLab, type Lab, type LabHost } from "../lab/lab";
import { pingReaches } from "../lab/traffic";
import { packBpfleet, packRelease, PulumiProject } from "./pulumiProject";
import { updatedBlocks } from "./previewOutput";

const HOSTS = Number(process.env.BPFLEET_FLEET_HOSTS ?? 10);
const ENTRIES = Number(process.env.BPFLEET_FLEET_ENTRIES ?? 10_000);
// The release before DenyList (entries in every firewall's state): its package and its
// quickstart program, built from this repository's history (packRelease), or given.
const RELEASE = process.env.BPFLEET_MAIN_RELEASE ?? "0bb6617";
let MAIN_TARBALL = process.env.BPFLEET_MAIN_TARBALL ?? "";
let MAIN_QUICKSTART = process.env.BPFLEET_MAIN_QUICKSTART ?? "";
const QUICKSTART = resolve(__dirname, "../../examples/quickstart/index.ts");
const WORK = process.env.BPFLEET_E2E_DIR ?? "/tmp/bpfleet-e2e";

let lab: Lab;
let project: PulumiProject;
const denyFile = join(WORK, "fleet-scale-deny.txt");

/** ENTRIES addresses from 100.64.0.0 on (never a lab address), plus the denied client and a /24. */
function denyList(extra: string[] = [], without: string[] = []): string[] {
  const list = Array.from({ length: ENTRIES }, (_, i) => `100.${64 + (i >>> 16)}.${(i >>> 8) & 0xff}.${i & 0xff}/32`);
  return [...list, `${lab.clients[0]!.address}/32`, "203.0.113.0/24", ...extra].filter((e) => !without.includes(e));
}

function writeDeny(list: string[]): void {
  writeFileSync(denyFile, `${list.join("\n")}\n`);
}

const v4Key = (address: string) => address.split(".");
async function hasExact(host: LabHost, address: string): Promise<boolean> {
  const r = await lab.inHost(host, ["bpftool", "map", "lookup", "pinned", `/sys/fs/bpf/bpfleet/xdp-firewall/edge-fw-${host.name}/maps/deny_v4_exact`, "key", ...v4Key(address)], { reject: false });
  return r.exitCode === 0;
}

async function timed<T>(what: string, run: () => Promise<T>): Promise<{ result: T; seconds: number }> {
  const started = Date.now();
  const result = await run();
  const seconds = (Date.now() - started) / 1000;
  console.log(`${what}: ${seconds.toFixed(1)} s`);
  return { result, seconds };
}

/** Per resource block of a --diff output: the lines of keyed entries (`+ "x": "deny"`, `- "x": "stray"`). */
function entryLines(output: string): Map<string, string[]> {
  const byResource = new Map<string, string[]>();
  let current: string | undefined;
  for (const line of output.split("\n")) {
    if (/: \((update|create|delete|replace|refresh|same)\)/.test(line)) current = undefined;
    const name = line.match(/urn=.*::([\w-]+)\]/)?.[1];
    if (name) current = name;
    // A DenyList's entries are one sorted text, which the CLI diffs line by line (`+ x`).
    const entry = line.match(/^\s*([+-])\s+"?([0-9a-f.:]+\/\d+)"?(?:\s*:\s*"(deny|stray|missing)")?\s*$/);
    if (current && entry) byResource.set(current, [...new Set([...(byResource.get(current) ?? []), `${entry[1]} ${entry[2]} ${entry[3] ?? "deny"}`])]);
  }
  return byResource;
}

const stateBytes = async () => (await project.exportState()).length;

beforeAll(async () => {
  if (!MAIN_TARBALL || !MAIN_QUICKSTART) {
    const release = await packRelease(RELEASE);
    MAIN_TARBALL ||= release.tarball;
    MAIN_QUICKSTART ||= join(release.dir, "examples/quickstart/index.ts");
  }
  for (const file of [MAIN_TARBALL, MAIN_QUICKSTART]) if (!existsSync(file)) throw new Error(`the release is missing: ${file}`);
  lab = await createLab("fleetsc", { hosts: HOSTS, clients: 2 });
  project = await PulumiProject.create("fleet-scale", MAIN_QUICKSTART, "bpfleet-quickstart", MAIN_TARBALL);
  await project.ok(["config", "set", "labFile", lab.jsonPath]);
  await project.ok(["config", "set", "denyFile", denyFile]);
}, 600_000);

afterAll(async () => {
  if (project) await project.pulumi(["destroy", "--yes", "--skip-preview"]);
  await lab?.destroy();
});

describe(`a deny list held once on ${HOSTS} hosts × ${ENTRIES} entries, through the real Pulumi CLI`, () => {
  it("a stack made by main's release upgrades with one `up`, a denied client dropped throughout; state shrinks", async () => {
    const [c1, c2] = lab.clients as [(typeof lab.clients)[0], (typeof lab.clients)[0]];
    const h1 = lab.hosts[0]!;
    writeDeny(denyList());
    await timed("main: first up", () => project.ok(["up", "--yes", "--skip-preview"]));
    writeDeny(denyList(["192.0.2.1/32"]));
    const before = await timed("main: one-entry up", () => project.ok(["up", "--yes", "--skip-preview"]));
    const bytesBefore = await stateBytes();

    // The upgrade: this checkout's package and its quickstart (the list as one DenyList).
    await project.installBpfleet(await packBpfleet());
    copyFileSync(QUICKSTART, join(project.dir, "index.ts"));
    // A denied client pings h1 every 20 ms for the whole upgrade: no reply may come back.
    const pings = lab.inClient(c1, ["ping", "-n", "-i", "0.02", "-w", "900", h1.address], { reject: false });
    const upgrade = await timed("upgrade up", () => project.ok(["up", "--yes", "--skip-preview"]));
    pings.kill("SIGINT");
    const pinged = String((await pings).stdout);
    const [, sent, received] = pinged.match(/(\d+) packets transmitted, (\d+) received/) ?? [];
    expect(Number(sent), pinged).toBeGreaterThan(50);
    expect(Number(received), pinged).toBe(0);
    expect(upgrade.result.stdout).toMatch(/1 created/); // the DenyList
    for (const host of lab.hosts) {
      expect(await pingReaches(lab, c1, host.address), host.name).toBe(false);
      expect(await hasExact(host, "192.0.2.1"), host.name).toBe(true);
    }
    expect(await pingReaches(lab, c2, h1.address)).toBe(true);

    writeDeny(denyList(["192.0.2.1/32", "192.0.2.2/32"]));
    const after = await timed("branch: one-entry up", () => project.ok(["up", "--yes", "--skip-preview"]));
    const bytesAfter = await stateBytes();
    console.log(
      `${HOSTS} hosts × ${ENTRIES} entries: exported state ${bytesBefore} -> ${bytesAfter} bytes (${(bytesBefore / bytesAfter).toFixed(1)}×); ` +
        `one-entry up ${before.seconds.toFixed(1)} -> ${after.seconds.toFixed(1)} s`,
    );
    // Held once per fleet: the list's state holds its entries twice (inputs and outputs; the
    // export indents each entry's line: under 3× its compact JSON), plus a few KB per host.
    const entryBytes = JSON.stringify(Object.fromEntries(denyList().map((e) => [e, "deny"]))).length;
    expect(bytesAfter).toBeLessThan(2 * entryBytes * 3 + HOSTS * 8_000 + 50_000);
    expect(bytesAfter * 3).toBeLessThan(bytesBefore);
    const outputs = JSON.parse((await project.ok(["stack", "output", "--json"])).stdout);
    expect(outputs.denied).toHaveLength(HOSTS);
    for (const d of outputs.denied) expect(d).toMatchObject({ entries: ENTRIES + 4, drift: 0 });
  }, 1_800_000);

  it("one entry added and one removed: the preview shows each once and names every firewall; up applies it", async () => {
    writeDeny(denyList(["192.0.2.1/32", "192.0.2.2/32", "192.0.2.9/32"], ["100.64.0.5/32"]));
    const preview = await project.ok(["preview", "--diff"]);
    const out = preview.stdout;
    // The list's text is diffed line by line: `+ 192.0.2.9/32`, once for the fleet.
    expect(out.match(/^\s*\+\s+192\.0\.2\.9\/32\s*$/gm), out.slice(0, 5000)).toHaveLength(1);
    expect(out.match(/^\s*-\s+100\.64\.0\.5\/32\s*$/gm)).toHaveLength(1);
    const updated = updatedBlocks(out, "XdpFirewall");
    expect(updated).toEqual(lab.hosts.map((h) => `edge-fw-${h.name}`).sort());
    expect(out).toMatch(new RegExp(`${HOSTS + 1} to update`));
    // Whatever the engine prints of the list, it prints it once, not per host.
    expect((out.match(/\b100\.64\.0\.1\/32\b/g) ?? []).length).toBeLessThanOrEqual(1);
    await timed("one entry added, one removed", () => project.ok(["up", "--yes", "--skip-preview"]));
    for (const host of lab.hosts) {
      expect(await hasExact(host, "192.0.2.9"), host.name).toBe(true);
      expect(await hasExact(host, "100.64.0.5"), host.name).toBe(false);
    }
  }, 900_000);

  it("refresh reports a hand-made entry on one host only, as that entry; the next up removes it", async () => {
    const h3 = lab.hosts[2]!;
    await lab.inHost(h3, ["bpftool", "map", "update", "pinned", `/sys/fs/bpf/bpfleet/xdp-firewall/edge-fw-${h3.name}/maps/deny_v4_exact`, "key", "192", "0", "2", "77", "value", "1"]);
    const refresh = await project.ok(["refresh", "--yes", "--diff"]);
    const drift = entryLines(refresh.stdout);
    expect([...drift.keys()], refresh.stdout).toEqual([`edge-fw-${h3.name}`]);
    expect(drift.get(`edge-fw-${h3.name}`)).toEqual(["+ 192.0.2.77/32 stray"]);
    const preview = await project.ok(["preview", "--diff"]);
    expect([...entryLines(preview.stdout).entries()]).toEqual([[`edge-fw-${h3.name}`, ["- 192.0.2.77/32 stray"]]]);
    expect(preview.stdout).toMatch(/1 to update/);
    await project.ok(["up", "--yes", "--skip-preview"]);
    expect(await hasExact(h3, "192.0.2.77")).toBe(false);
    expect(await hasExact(h3, "192.0.2.9")).toBe(true);
    const again = await project.ok(["refresh", "--yes", "--diff"]);
    expect([...entryLines(again.stdout).keys()], again.stdout).toEqual([]);
  }, 900_000);

  it("`up --target` of one firewall without its list refuses, naming the list, and changes nothing", async () => {
    const h1 = lab.hosts[0]!;
    const urn = JSON.parse(await project.exportState()).deployment.resources.find((r: { urn: string }) => r.urn.endsWith(`::edge-fw-${h1.name}`)).urn;
    writeDeny(denyList(["192.0.2.1/32", "192.0.2.2/32", "192.0.2.9/32", "192.0.2.10/32"], ["100.64.0.5/32"]));
    const up = await project.pulumi(["up", "--yes", "--skip-preview", "--target", urn]);
    expect(up.exitCode).not.toBe(0);
    expect(up.stdout + up.stderr).toMatch(/DenyList 'edge-deny'.*not part of this deployment.*target the DenyList resource 'edge-deny' too\. Nothing was changed\./s);
    expect(await hasExact(h1, "192.0.2.10")).toBe(false);
    // With the list targeted too, the same change applies to that host alone.
    const listUrn = JSON.parse(await project.exportState()).deployment.resources.find((r: { urn: string }) => r.urn.endsWith("::edge-deny")).urn;
    await project.ok(["up", "--yes", "--skip-preview", "--target", urn, "--target", listUrn]);
    expect(await hasExact(h1, "192.0.2.10")).toBe(true);
    expect(await hasExact(lab.hosts[1]!, "192.0.2.10")).toBe(false);
    // The others, which still hold the previous version, converge on the next up.
    await project.ok(["up", "--yes", "--skip-preview"]);
    for (const host of lab.hosts) expect(await hasExact(host, "192.0.2.10"), host.name).toBe(true);
  }, 900_000);

  it("destroy leaves no pins, no hook and no applied copy on any host", async () => {
    await project.ok(["destroy", "--yes", "--skip-preview"]);
    for (const host of lab.hosts) {
      const left = await lab.inHost(host, ["sh", "-c", "find /sys/fs/bpf/bpfleet /var/lib/bpfleet/applied -type f 2>/dev/null; ip -j link show dev eth0 | grep -c '\"xdp\"' || true"]);
      expect(String(left.stdout).trim(), host.name).toBe("0");
    }
  }, 900_000);
});
