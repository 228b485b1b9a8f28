// MaglevBackendSet (issue 10): MaglevService backends held once per fleet. The set's
// canonical text and digest, its check (bad backends named by index before anything
// touches a host, both versions registered), and a MaglevService bound to it: judged
// with the set's backends, its state carrying only the set's ref, the same tables as the
// inline form, and refresh's drift as the difference only.
import { createHash } from "node:crypto";
import { beforeEach, describe, expect, it } from "vitest";
import { boundContent, boundRefAsRead } from "../../provider/boundList";
import { diffInputs } from "../../provider/dynamicAdapter";
import { packagedObject } from "../../provider/objects";
import { backendLine, backendsOfLines, linesOnHost, parseBackendLine } from "../../provider/maglev/backendLines";
import { boundAsRead, boundOutputs, registeredBackends } from "../../provider/maglev/backendSet";
import { maglevServiceKind } from "../../provider/maglev/lifecycle";
import { tableDigest, tableImage } from "../../provider/maglev/plan";
import { checkMaglevService, type MaglevServiceInputs, type MaglevServiceOutputs } from "../../provider/maglev/schema";
import { provider as backendSetProvider } from "../../provider/maglevBackendSet/dynamic";
import { canonicalBackendSet, checkMaglevBackendSet } from "../../provider/maglevBackendSet/schema";
import { clearRegisteredContent, registeredContent } from "../../provider/sharedContent";
import { failureAt } from "../support/checkFailure";

const written = [{ address: "10.0.0.3", weight: 2 }, "10.0.0.2", "10.0.0.4 mac 02:00:00:00:00:0A", { address: "10.0.0.1" }];
/** The same backends as inline `backends` take them (objects and addresses, no lines). */
const asObjects = [{ address: "10.0.0.3", weight: 2 }, "10.0.0.2", { address: "10.0.0.4", mac: "02:00:00:00:00:0A" }, { address: "10.0.0.1" }];
const canonicalText = "10.0.0.1\n10.0.0.2\n10.0.0.3 weight 2\n10.0.0.4 mac 02:00:00:00:00:0a\n";

const host = { address: "10.200.1.2", hostKey: "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB" };
const service = (patch: Record<string, unknown>) => ({
  host,
  credentials: { privateKey: "-----BEGIN OPENSSH PRIVATE KEY-----" },
  interface: "eth0",
  name: "web",
  vips: ["198.51.100.10:80/tcp"],
  mode: "dsr",
  ...patch,
});

/** The set's check as the engine runs it first; returns the ref a service carries. */
function backendSet(backends: unknown[], olds?: string) {
  const result = checkMaglevBackendSet(olds === undefined ? undefined : { backends: olds }, { backends });
  if (!result.inputs) throw new Error(JSON.stringify(result.failures));
  const c = canonicalBackendSet(backends)!;
  return { name: "pool", digest: c.digest, count: c.count };
}

function checked(news: Record<string, unknown>): MaglevServiceInputs {
  const result = checkMaglevService(news);
  if (!result.inputs) throw new Error(JSON.stringify(result.failures));
  return result.inputs as MaglevServiceInputs;
}

beforeEach(() => clearRegisteredContent());

describe("MaglevBackendSet's canonical form", () => {
  it("is one line a backend, sorted, whatever the order and form; the digest is the text's sha256; the backends are the inline form's", () => {
    const c = canonicalBackendSet(written)!;
    expect(c.text).toBe(canonicalText);
    expect(c.count).toBe(4);
    expect(c.digest).toBe(createHash("sha256").update(canonicalText).digest("hex"));
    expect(canonicalBackendSet([...written].reverse())!.digest).toBe(c.digest);
    const inline = checked(service({ backends: asObjects })).backends;
    expect(c.items).toEqual(inline);
    expect(Object.keys(c.items)).toEqual(Object.keys(inline));
  });

  it("a line reads back as the backend it was written from, ports and IPv6 included", () => {
    for (const b of [{ address: "10.0.0.2", weight: 1 }, { address: "10.0.0.2", port: 8080, weight: 7, mac: "02:00:00:00:00:01" }, { address: "2001:db8::2", port: 443, weight: 1 }]) {
      expect(backendsOfLines([backendLine(b)])).toEqual({ [b.port ? (b.address.includes(":") ? `[${b.address}]:${b.port}` : `${b.address}:${b.port}`) : b.address]: b });
    }
    expect(parseBackendLine("10.0.0.2 colour blue")).toEqual({ problem: expect.stringContaining('write a backend as "address[:port] [weight N] [mac') });
  });

  it("the set's check holds the text in state and accepts it back, and registers both versions", () => {
    expect(checkMaglevBackendSet(undefined, { backends: written }).inputs).toEqual({ backends: canonicalText });
    expect(checkMaglevBackendSet(undefined, { backends: canonicalText }).inputs).toEqual({ backends: canonicalText });
    clearRegisteredContent();
    const old = canonicalBackendSet(["10.0.0.9"])!;
    checkMaglevBackendSet({ backends: old.text }, { backends: written });
    expect(registeredContent(canonicalBackendSet(written)!.digest)).toEqual(canonicalText.trim().split("\n"));
    expect(registeredContent(old.digest)).toEqual(["10.0.0.9"]);
  });
});

describe("MaglevBackendSet's check names a bad backend by its index", () => {
  it.each([
    [["10.0.0.1", { address: "10.0.0.2", weight: 0 }], "backends[1].weight", /must be from 1 to 65535/],
    [["10.0.0.1", "10.0.0.0/24"], "backends[1].address", /not an IPv4 or IPv6 address/],
    [["10.0.0.1", "10.0.0.1 weight 3"], "backends[1]", /10\.0\.0\.1 is listed twice \(also at backends\[0\]\)/],
    [["10.0.0.1", "10.0.0.2 weight"], "backends[1]", /write a backend as/],
    [["10.0.0.1", { address: "10.0.0.2", mac: "zz" }], "backends[1].mac", /must be a MAC address/],
  ])("%j -> %s", (backends, path, reason) => {
    const news = { backends };
    const result = checkMaglevBackendSet(undefined, news);
    expect(result.inputs).toBeUndefined();
    expect(failureAt(result, path, news).reason).toMatch(reason);
  });

  it("the set's provider keeps only digest and count as outputs, and diffs by digest", async () => {
    const inputs = checkMaglevBackendSet(undefined, { backends: written }).inputs as { backends: string };
    const created = await backendSetProvider.create(inputs);
    expect(created.outs).toEqual({ digest: canonicalBackendSet(written)!.digest, count: 4 });
    expect((await backendSetProvider.diff("id", created.outs, inputs)).changes).toBe(false);
    expect((await backendSetProvider.diff("id", created.outs, { backends: "10.0.0.1\n" })).changes).toBe(true);
  });
});

describe("MaglevService bound to a MaglevBackendSet", () => {
  it("its checked inputs carry the set's ref, not the backends, and are judged with the set's backends", () => {
    const ref = backendSet(written);
    const inputs = checked(service({ backendSet: ref }));
    expect(inputs.backendSet).toEqual(ref);
    expect(inputs.backends).toEqual({});
    // A port is nat's alone: named in the set, before anything touches a host.
    const withPort = backendSet(["10.0.0.1", "10.0.0.2:8080"]);
    const news = service({ backendSet: withPort });
    const result = checkMaglevService(news);
    expect(failureAt(result, "backendSet", news).reason).toMatch(/backendSet 'pool': backends\["10\.0\.0\.2:8080"\]\.port: dsr keeps the VIP's destination port/);
  });

  it("refuses both `backends` and `backendSet`, and neither, naming the property", () => {
    const both = service({ backends: ["10.0.0.1"], backendSet: backendSet(written) });
    expect(failureAt(checkMaglevService(both), "backendSet", both).reason).toBe("backendSet: give the backends either as `backends` or as a `backendSet`, not both");
    const neither = service({});
    expect(failureAt(checkMaglevService(neither), "backends", neither).reason).toMatch(/^backends: required: give the backends as `backends` or as a `backendSet`/);
  });

  it("refuses a ref whose digest is not a sha256, naming it", () => {
    const news = service({ backendSet: { name: "pool", digest: "abc", count: 1 } });
    expect(failureAt(checkMaglevService(news), "backendSet.digest", news).reason).toMatch(/must be the list's sha256 digest/);
  });

  it("a version this deployment did not register passes check (the lifecycle resolves it from the host, or refuses)", () => {
    const unknown = { name: "pool", digest: "b".repeat(64), count: 3 };
    expect(checkMaglevService(service({ backendSet: unknown })).inputs).toMatchObject({ backendSet: unknown, backends: {} });
    expect(boundContent(unknown, () => ["10.0.0.1"])).toBeUndefined();
    expect(boundContent(unknown, () => undefined)).toBeUndefined();
    const held = canonicalBackendSet(written)!;
    expect(boundContent({ ...unknown, digest: held.digest }, () => held.text.trim().split("\n"))).toEqual(held.text.trim().split("\n"));
  });

  it("one backend added to the set changes only the ref (digest, count); the tables are the inline form's for the same backends", () => {
    const ref = backendSet(written);
    const inputs = checked(service({ backendSet: ref }));
    const indexes = Object.fromEntries(Object.keys(registeredBackends(inputs)!).map((id, i) => [id, i + 1]));
    const inline = checked(service({ backends: asObjects }));
    const digest = tableDigest(tableImage(inline, indexes).image);
    const olds = { ...inputs, objectSha256: packagedObject("xdp_maglev").sha256, backendIndexes: indexes, nextBackendIndex: 5, vipIndexes: {}, backendMacs: {}, tableDigest: digest, reverseNat: false, attachMode: "driver" } as unknown as MaglevServiceOutputs;
    // No change: the bound state's tables are the set's (no perpetual pending table rewrite).
    expect(diffInputs(maglevServiceKind, olds, inputs).changes).toBe(false);
    // A table changed on the host (as refresh saw it) is still a pending change of a bound service.
    expect(maglevServiceKind.pendingChanges!({ ...olds, tableDigest: "0".repeat(64) }, inputs)).toEqual(["maglev_table does not hold the tables these backends give (changed on the host)"]);
    const added = backendSet([...written, "10.0.0.5"], canonicalText);
    const news = checked(service({ backendSet: added }));
    const diff = diffInputs(maglevServiceKind, olds, news);
    expect(diff).toMatchObject({ changes: true, replaces: [] });
    const changed = Object.keys(news).filter((k) => JSON.stringify((olds as unknown as Record<string, unknown>)[k]) !== JSON.stringify((news as unknown as Record<string, unknown>)[k]));
    expect(changed).toEqual(["backendSet"]);
    expect(news.backendSet).toEqual({ name: "pool", digest: added.digest, count: 5 });
  });

  it("its outputs keep the ref and the host's own indexes, not the backends, their MACs or idle counters", () => {
    const ref = backendSet(written);
    const declared = checked(service({ backendSet: ref }));
    const backends = registeredBackends(declared)!;
    const full = {
      ...declared,
      backends,
      backendIndexes: { "10.0.0.1": 1 },
      backendMacs: { "10.0.0.1": "02:00:00:00:00:01" },
      counters: { vips: {}, backends: { "10.0.0.1": { packets: 0, bytes: 0 }, "10.0.0.2": { packets: 3, bytes: 180 } }, totals: {} },
    } as unknown as MaglevServiceOutputs;
    const outs = boundOutputs(full, declared);
    expect(outs.backends).toEqual({});
    expect(outs.backendMacs).toEqual({});
    expect(outs.backendIndexes).toEqual({ "10.0.0.1": 1 });
    expect(outs.counters.backends).toEqual({ "10.0.0.2": { packets: 3, bytes: 180 } });
  });

  it("refresh reports only the stray and missing backends against the host's record, and the recorded version's ref", () => {
    const ref = backendSet(written);
    const recorded = canonicalText.trim().split("\n");
    const declared = { ...checked(service({ backendSet: ref })), backendIndexes: {}, counters: { vips: {}, backends: {}, totals: {} } } as unknown as MaglevServiceOutputs;
    const observed = (keys: string[]) => ({ ...declared, backends: Object.fromEntries(keys.map((k) => [k, { address: k, weight: 1 }])) }) as MaglevServiceOutputs;
    const clean = boundAsRead(observed(["10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4"]), declared, recorded);
    expect(clean.backendSet).toEqual(ref);
    expect(clean.backendDrift).toBeUndefined();
    expect(clean.backends).toEqual({});
    const drifted = boundAsRead(observed(["10.0.0.1", "10.0.0.2", "10.0.0.4", "10.0.0.99"]), declared, recorded);
    expect(drifted.backendDrift).toEqual({ "10.0.0.3 weight 2": "missing", "10.0.0.99": "stray" });
    expect(drifted.backendSet).toEqual(ref);
    // A host that recorded another version reports that version's ref, so the next `up` converges it.
    const older = boundAsRead(observed(["10.0.0.1"]), declared, ["10.0.0.1"]);
    expect(older.backendSet).toEqual({ ...ref, digest: boundRefAsRead(ref, ["10.0.0.1"], ["10.0.0.1"]).ref.digest, count: 1 });
    expect(linesOnHost(["10.0.0.3", "10.0.0.3"], recorded)).toEqual(["10.0.0.3 weight 2"]);
  });
});
