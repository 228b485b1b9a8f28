// MaglevBackendSet + MaglevService on two lab hosts, driving the provider directly (issue
// 10): both balancers bind one backend set, registered by the set's check; their states
// carry only the set's digest and count; each host records the backends it applied and
// holds the tables the set's backends give (read back from the maps: the same digest on
// both, the one the set's backends compute to); a set change reaches both; a backend
// record made by hand on one host is found by read on that host only, as the stray
// backend, and the next update removes it; an inline service moves to the set with the
// same tables; a set version this deployment does not hold comes from the host's own
// record when it is that version, and is refused otherwise before anything changes.
import { readFileSync } from "node:fs";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { encodeBackend, encodeIndex, MAPS } from "../../provider/maglev/codec";
import { maglevServiceKind } from "../../provider/maglev/lifecycle";
import { tableDigest, tableImage } from "../../provider/maglev/plan";
import { checkMaglevService, type MaglevServiceInputs, type MaglevServiceOutputs } from "../../provider/maglev/schema";
import { canonicalBackendSet, checkMaglevBackendSet } from "../../provider/maglevBackendSet/schema";
import { operations } from "../../provider/operations";
import { closeAllSessions } from "../../provider/remote/ssh";
import { clearRegisteredContent } from "../../provider/sharedContent";
import { createLab, type Lab, type LabHost } from "./lab";

let lab: Lab;
let privateKey: string;
let hosts: LabHost[];
const lb = operations(maglevServiceKind, () => {});
const PIN = "/sys/fs/bpf/bpfleet/maglev/web";
const hex = (n: number) => n.toString(16).padStart(2, "0");
/** Backends with static MACs (no neighbour resolution), as a fleet's shared pool would list them. */
const pool = (n: number) => Array.from({ length: n }, (_, i) => ({ address: `10.9.0.${i + 1}`, mac: `02:00:00:00:09:${hex(i + 1)}`, ...(i === 0 ? { weight: 3 } : {}) }));
const BACKENDS = pool(4);

/** The set's check, as the engine runs it before any service that binds it: registers `backends` (and `olds`). */
function backendSet(backends: unknown[], olds?: unknown[]) {
  const result = checkMaglevBackendSet(olds && { backends: canonicalBackendSet(olds)!.text }, { backends });
  if (!result.inputs) throw new Error(JSON.stringify(result.failures));
  const c = canonicalBackendSet(backends)!;
  return { name: "pool", digest: c.digest, count: c.count };
}

function inputs(host: LabHost, patch: Record<string, unknown>): MaglevServiceInputs {
  const result = checkMaglevService({
    host: { address: host.address, hostKey: host.hostKey, connectTimeoutMs: 5000, commandTimeoutMs: 120_000 },
    credentials: { privateKey },
    interface: "eth0",
    name: "web",
    vips: ["198.51.100.10:80/tcp", "198.51.100.11:443/tcp"],
    mode: "dsr",
    ...patch,
  });
  if (!result.inputs) throw new Error(JSON.stringify(result.failures));
  return result.inputs as MaglevServiceInputs;
}

const text = async (host: LabHost, argv: string[]) => String((await lab.inHost(host, argv, { reject: false })).stdout);
const applied = (host: LabHost) => text(host, ["cat", "/var/lib/bpfleet/applied/maglev/web"]);
const backendRecords = (host: LabHost) => text(host, ["bpftool", "-j", "map", "dump", "pinned", `${PIN}/maps/${MAPS.backends}`]);

/** The digest of the tables `backends` give at the host's own indexes: what the host must hold. */
function expectedTables(outs: MaglevServiceOutputs, backends: unknown[]): string {
  return tableDigest(tableImage({ mode: outs.mode, vips: outs.vips, tableSize: outs.tableSize, backends: canonicalBackendSet(backends)!.items }, outs.backendIndexes).image);
}

beforeAll(async () => {
  lab = await createLab("mbset", { hosts: 2, clients: 0 });
  privateKey = readFileSync(lab.privateKeyPath, "utf8");
  hosts = lab.hosts;
}, 300_000);

afterAll(async () => {
  closeAllSessions();
  await lab?.destroy();
});

describe("MaglevService bound to a MaglevBackendSet, on two lab hosts", () => {
  const outs: MaglevServiceOutputs[] = [];

  it("an inline service moves to the set holding the same backends with the same tables; its state then carries the set's ref, not the backends", async () => {
    for (const host of hosts) outs.push((await lb.create(inputs(host, { backends: BACKENDS }))).outs);
    const inlineTables = outs.map((o) => o.tableDigest);
    const inlineSize = JSON.stringify(outs[0]).length;
    clearRegisteredContent();
    const ref = backendSet(BACKENDS);
    for (const [i, host] of hosts.entries()) {
      outs[i] = await lb.update("id", outs[i]!, inputs(host, { backendSet: ref }));
      expect(outs[i]!.backendSet).toEqual(ref);
      expect(outs[i]!.backends).toEqual({});
      expect(outs[i]!.backendMacs).toEqual({});
      expect(JSON.stringify(outs[i])).not.toContain("02:00:00:00:09");
      expect(outs[i]!.tableDigest).toBe(inlineTables[i]);
      expect(await applied(host)).toBe(canonicalBackendSet(BACKENDS)!.text.trimEnd());
      // Read back from the host's maps: the tables are the ones the set's backends give.
      const read = await lb.read("id", outs[i]!);
      expect(read!.outs.tableDigest).toBe(expectedTables(outs[i]!, BACKENDS));
      expect(read!.inputs.backendDrift).toBeUndefined();
    }
    expect(JSON.stringify(outs[0]).length).toBeLessThan(inlineSize);
  }, 240_000);

  it("one backend added to the set reaches both hosts: each holds the tables the new backends give, the same on both", async () => {
    clearRegisteredContent();
    const grown = pool(5);
    const ref = backendSet(grown, BACKENDS);
    for (const [i, host] of hosts.entries()) {
      outs[i] = await lb.update("id", outs[i]!, inputs(host, { backendSet: ref }));
      expect(outs[i]!.backendSet).toEqual(ref);
      expect(Object.keys(outs[i]!.backendIndexes).sort()).toEqual(grown.map((b) => b.address).sort());
      expect(await applied(host)).toBe(canonicalBackendSet(grown)!.text.trimEnd());
    }
    const reads = await Promise.all(outs.map((o) => lb.read("id", o)));
    expect(reads[0]!.outs.tableDigest).toBe(expectedTables(outs[0]!, grown));
    expect(reads[1]!.outs.tableDigest).toBe(expectedTables(outs[1]!, grown));
    expect(reads[0]!.outs.tableDigest).toBe(reads[1]!.outs.tableDigest);
    for (const [i, host] of hosts.entries()) {
      const records = JSON.parse(await backendRecords(host)) as unknown[];
      expect(records.length).toBeGreaterThanOrEqual(5);
      expect(reads[i]!.inputs.backendDrift).toBeUndefined();
    }
  }, 240_000);

  it("a backend record made by hand on one host is reported by read on that host only, as the stray backend; the next update removes it", async () => {
    const [h1, h2] = hosts as [LabHost, LabHost];
    const bytes = (b: Uint8Array) => Buffer.from(b).toString("hex").match(/../g)!;
    await lab.inHost(h2, ["bpftool", "map", "update", "pinned", `${PIN}/maps/${MAPS.backends}`, "key", "hex", ...bytes(encodeIndex(200)), "value", "hex", ...bytes(encodeBackend({ address: "10.9.0.99", port: 0, mac: "02:00:00:00:09:99" }))]);

    const read1 = await lb.read("id", outs[0]!);
    expect(read1!.inputs.backendDrift).toBeUndefined();
    expect(read1!.inputs.backendSet).toEqual(outs[0]!.backendSet);
    const read2 = await lb.read("id", outs[1]!);
    expect(read2!.inputs.backendSet).toEqual(outs[1]!.backendSet);
    expect(read2!.inputs.backends).toEqual({});
    expect(read2!.inputs.backendDrift).toEqual({ "10.9.0.99": "stray" });

    const ref = outs[1]!.backendSet!;
    clearRegisteredContent();
    backendSet(pool(5));
    outs[1] = await lb.update("id", read2!.outs, inputs(h2, { backendSet: ref }));
    const again = await lb.read("id", outs[1]!);
    expect(again!.inputs.backendDrift).toBeUndefined();
    expect(Object.keys(again!.outs.backendIndexes)).not.toContain("10.9.0.99");
  }, 240_000);

  it("`up --target` without the set: the version the host recorded is taken from its record; one it does not hold is refused, nothing changed", async () => {
    const h1 = hosts[0]!;
    clearRegisteredContent();
    const same = outs[0]!.backendSet!;
    const again = await lb.update("id", { ...outs[0]!, backendDrift: { "10.9.0.98": "stray" } }, inputs(h1, { backendSet: same }));
    expect(again.backendSet).toEqual(same);
    expect(again.tableDigest).toBe(outs[0]!.tableDigest);
    const unknown = { ...same, digest: "b".repeat(64) };
    const before = await backendRecords(h1);
    await expect(lb.update("id", outs[0]!, inputs(h1, { backendSet: unknown }))).rejects.toThrow(
      /must apply version bbbbbbbbbbbb of MaglevBackendSet 'pool'.*target the MaglevBackendSet resource 'pool' too\. Nothing was changed\./,
    );
    expect(await backendRecords(h1)).toBe(before);
  }, 120_000);

  it("delete removes the service and the host's record of what it applied", async () => {
    for (const [i, host] of hosts.entries()) {
      await lb.delete("id", outs[i]!);
      expect(await text(host, ["ls", "/var/lib/bpfleet/applied/maglev"])).toBe("");
      expect(await text(host, ["ls", PIN])).toBe("");
    }
  }, 120_000);
});
