// MirrorFilterSet (issue 10): TrafficMirror filters held once per fleet. The set's
// canonical text and digest, its check (bad filters named by index before anything
// touches a host, both versions registered), and a TrafficMirror bound to it: its state
// carrying only the set's ref, its filters resolved by digest (or from the host), and
// refresh's drift.
import { createHash } from "node:crypto";
import { beforeEach, describe, expect, it } from "vitest";
import { unknownVersionError } from "../../provider/boundList";
import { checkInputs, diffInputs } from "../../provider/dynamicAdapter";
import { provider as filterSetProvider } from "../../provider/mirrorFilterSet/dynamic";
import { canonicalFilterSet, checkMirrorFilterSet } from "../../provider/mirrorFilterSet/schema";
import { packagedObject } from "../../provider/objects";
import { HostPreconditionError } from "../../provider/remote/preflight";
import { clearRegisteredContent, contentDigest, registeredContent } from "../../provider/sharedContent";
import { boundOutputs, resolveFilterSet } from "../../provider/trafficMirror/filterSets";
import { trafficMirrorKind } from "../../provider/trafficMirror/lifecycle";
import { checkTrafficMirror, filterFields, filterKey, filterSchema, filtersOfKeys, MAX_FILTERS, trafficMirrorSchema, type TrafficMirrorInputs, type TrafficMirrorOutputs } from "../../provider/trafficMirror/schema";
import { failureAt } from "../support/checkFailure";

const written = [
  { protocol: "tcp", destinationPort: "80" },
  "udp and dst net 2001:DB8::1/32 and src portrange 1024 - 65535",
  { protocol: 6, destinationPort: 80 },
  "  PROTO 47 and src net 10.1.2.3/8 ",
  "all",
];
const lines = ["all", "proto 47 and src net 10.0.0.0/8", "tcp and dst port 80", "udp and dst net 2001:db8::/32 and src portrange 1024-65535"];

const mirror = (extra: Record<string, unknown>) => ({
  host: { address: "10.200.1.2", hostKey: "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB" },
  credentials: { privateKey: "-----BEGIN OPENSSH PRIVATE KEY-----" },
  interface: "eth0",
  name: "tap",
  direction: "ingress",
  target: { interface: "mirror0" },
  ...extra,
});

/** The set's check as the engine runs it first; returns the ref a mirror carries. */
function filterSet(filters: unknown[], olds?: string) {
  const result = checkMirrorFilterSet(olds === undefined ? undefined : { filters: olds }, { filters });
  if (!result.inputs) throw new Error(JSON.stringify(result.failures));
  const c = canonicalFilterSet(filters)!;
  return { name: "tap-filters", digest: c.digest, count: c.count };
}

const inputsOf = (extra: Record<string, unknown>) => {
  const result = checkTrafficMirror(mirror(extra));
  if (!result.inputs) throw new Error(JSON.stringify(result.failures));
  return result.inputs as TrafficMirrorInputs;
};

beforeEach(() => clearRegisteredContent());

describe("MirrorFilterSet's canonical form", () => {
  it("is the filters' texts sorted, one a line, whatever the order, form and duplicates; the digest is the text's sha256", () => {
    const c = canonicalFilterSet(written)!;
    expect(c.text).toBe(`${lines.join("\n")}\n`);
    expect(c.count).toBe(4);
    expect(c.digest).toBe(createHash("sha256").update(c.text).digest("hex"));
    expect(c.items["tcp and dst port 80"]).toEqual({ protocol: "tcp", destinationPort: 80 });
    expect(c.items["proto 47 and src net 10.0.0.0/8"]).toEqual({ protocol: 47, source: "10.0.0.0/8" });
    expect(canonicalFilterSet([...written].reverse())!.digest).toBe(c.digest);
    expect(canonicalFilterSet([{ destinationPort: 99999 }])).toBeUndefined();
  });

  it("reads every filter back from its text: filterKey(filterFields(key)) is the key", () => {
    const filters = [
      {},
      { protocol: "icmpv6", destination: "2001:db8::/48" },
      { protocol: 132, sourcePort: 9, destinationPort: "10-20" },
      { source: "192.0.2.0/24", destination: "198.51.100.7/32", destinationPort: 443 },
      { protocol: 255 },
      { sourcePort: "1-65535" },
    ];
    for (const f of filters) {
      const key = filterKey(filterSchema.parse(f));
      expect(filterKey(filterSchema.parse(filterFields(key)))).toBe(key);
    }
    expect(Object.keys(filtersOfKeys(lines))).toEqual(lines);
    expect(() => filterFields("tcp and udp")).toThrow('"tcp and udp" gives protocol twice');
    expect(() => filterFields("tcp or udp")).toThrow(/"tcp or udp" is not a filter term/);
  });

  it("the set's check holds the text in state and accepts it back, and the record a mirror's state keeps", () => {
    const text = `${lines.join("\n")}\n`;
    expect(checkMirrorFilterSet(undefined, { filters: written }).inputs).toEqual({ filters: text });
    expect(checkMirrorFilterSet(undefined, { filters: text }).inputs).toEqual({ filters: text });
    expect(checkMirrorFilterSet(undefined, { filters: canonicalFilterSet(written)!.items }).inputs).toEqual({ filters: text });
  });
});

describe("MirrorFilterSet's check", () => {
  it("names a bad filter by its index, with the reason, before anything touches a host", () => {
    const news = { filters: [{ protocol: "tcp" }, { destinationPort: 70000 }, "tcp and dst port 0", "tcp or udp", { protocol: "icmp", destinationPort: 80 }] };
    const result = checkMirrorFilterSet(undefined, news);
    expect(result.inputs).toBeUndefined();
    expect(failureAt(result, "filters[1].destinationPort", news).reason).toBe('filters[1].destinationPort: "70000": ports go from 0 to 65535');
    expect(failureAt(result, "filters[2].destinationPort", news).reason).toContain("port 0 is not a port traffic is addressed to");
    expect(failureAt(result, "filters[3]", news).reason).toContain('"tcp or udp" is not a filter term');
    expect(failureAt(result, "filters[4].destinationPort", news).reason).toContain("icmp has no ports");
    expect(registeredContent(canonicalFilterSet([{ protocol: "tcp" }])!.digest)).toBeUndefined();
  });

  it(`refuses more than ${MAX_FILTERS} distinct filters with the inline error`, () => {
    const filters = Array.from({ length: MAX_FILTERS + 1 }, (_, i) => ({ protocol: "tcp", destinationPort: i + 1 }));
    const set = checkMirrorFilterSet(undefined, { filters });
    const inline = checkInputs(trafficMirrorSchema, mirror({ filters }));
    expect(set.failures?.[0]?.reason).toContain(`has ${MAX_FILTERS + 1} distinct filters; the program holds at most ${MAX_FILTERS}`);
    expect(set.failures?.[0]?.reason).toBe(inline.failures?.[0]?.reason);
    // 64 distinct (and a duplicate) fit.
    expect(checkMirrorFilterSet(undefined, { filters: [...filters.slice(0, MAX_FILTERS), filters[0]] }).failures).toBeUndefined();
  });

  it("registers the new version and the old one by digest, for the mirrors of the deployment", () => {
    const old = canonicalFilterSet(["tcp"])!;
    const ref = filterSet(written, old.text);
    expect(registeredContent(ref.digest)).toEqual(lines);
    expect(registeredContent(old.digest)).toEqual(["tcp"]);
  });

  it("its provider ids the set by digest, holds the filters only in its inputs, and reports a change only when the digest changes", async () => {
    const text = canonicalFilterSet(written)!.text;
    const created = await filterSetProvider.create({ filters: text });
    expect(created.id).toBe(`mirror-filter-set/${contentDigest(lines).slice(0, 16)}`);
    expect(created.outs).toEqual({ digest: canonicalFilterSet(written)!.digest, count: 4 });
    expect((await filterSetProvider.diff(created.id, created.outs, { filters: text })).changes).toBe(false);
    expect((await filterSetProvider.diff(created.id, created.outs, { filters: "tcp\n" })).changes).toBe(true);
    expect(await filterSetProvider.read(created.id, created.outs)).toEqual({ id: created.id, props: created.outs });
  });
});

describe("a TrafficMirror bound to a MirrorFilterSet", () => {
  it("keeps the set's ref in its inputs, not the filters", () => {
    const ref = filterSet(written);
    const inputs = inputsOf({ filterSet: ref });
    expect(inputs.filterSet).toEqual(ref);
    expect(inputs.filters).toEqual({});
  });

  it("refuses filters and a filter set together, naming filterSet", () => {
    const ref = filterSet(written);
    const news = mirror({ filters: [{ protocol: "udp" }], filterSet: ref });
    const result = checkTrafficMirror(news);
    expect(result.inputs).toBeUndefined();
    expect(failureAt(result, "filterSet", news).reason).toBe("filterSet: give the filters either as `filters` or as a `filterSet` (a MirrorFilterSet), not both");
  });

  it("refuses a ref whose digest is not a sha256, naming the property", () => {
    for (const digest of ["invalid", "A".repeat(64), "a".repeat(63)]) {
      const news = mirror({ filterSet: { name: "tap-filters", digest, count: 4 } });
      expect(failureAt(checkTrafficMirror(news), "filterSet.digest", news).reason).toBe("filterSet.digest: must be the list's sha256 digest (64 hex digits)");
    }
  });

  it("with a set version this deployment does not hold, check lets it through for the host to judge", () => {
    expect(checkTrafficMirror(mirror({ filterSet: { name: "elsewhere", digest: "a".repeat(64), count: 3 } })).failures).toBeUndefined();
  });

  it("a changed set version changes the mirror; the same one does not; drift found by refresh does", () => {
    const a = filterSet(written);
    const b = filterSet([...written, { protocol: "udp", destinationPort: 53 }]);
    const olds = { ...inputsOf({ filterSet: a }), objectSha256: packagedObject("tc_mirror").sha256 } as TrafficMirrorOutputs;
    expect(diffInputs(trafficMirrorKind, olds, inputsOf({ filterSet: a })).changes).toBe(false);
    expect(diffInputs(trafficMirrorKind, olds, inputsOf({ filterSet: b }))).toEqual({ changes: true, replaces: [], deleteBeforeReplace: false });
    const drifted = { ...olds, filterDrift: { "udp and dst port 53": "stray" as const } };
    expect(diffInputs(trafficMirrorKind, drifted, inputsOf({ filterSet: a })).changes).toBe(true);
  });

  it("gets its filters from the registered version, else the host's live set, else its applied copy, when that is the version", async () => {
    const ref = filterSet(written);
    const declared = inputsOf({ filterSet: ref });
    const never = async (): Promise<string[]> => expect.fail("the applied copy was read");
    const resolved = await resolveFilterSet("h", declared, undefined, never);
    expect(resolved.filters).toEqual(canonicalFilterSet(written)!.items);
    expect(resolved.filterSet).toEqual(ref);
    // `up --target` without the set: the host's live set is that version.
    clearRegisteredContent();
    expect((await resolveFilterSet("h", declared, canonicalFilterSet(written)!.items, never)).filters).toEqual(canonicalFilterSet(written)!.items);
    // The live set drifted, the applied copy is that version.
    let reads = 0;
    const copy = async () => (reads++, lines);
    expect((await resolveFilterSet("h", declared, { tcp: { protocol: "tcp" } }, copy)).filters).toEqual(canonicalFilterSet(written)!.items);
    expect(reads).toBe(1);
    // Inline filters are left as they are.
    const inline = inputsOf({ filters: [{ protocol: "udp" }] });
    expect(await resolveFilterSet("h", inline, undefined, never)).toBe(inline);
  });

  it("is refused, before anything changes, when no one holds the version", async () => {
    const ref = filterSet(written);
    const declared = inputsOf({ filterSet: ref });
    clearRegisteredContent();
    const refusal = resolveFilterSet("root@10.200.1.2", declared, { tcp: { protocol: "tcp" } }, async () => ["udp"]);
    await expect(refusal).rejects.toBeInstanceOf(HostPreconditionError);
    await expect(refusal).rejects.toThrow(
      `root@10.200.1.2: mirror tap must apply version ${ref.digest.slice(0, 12)} of MirrorFilterSet 'tap-filters' (4 filters), which is not part of this deployment, and the host holds other filters. ` +
        "With `pulumi up --target`, target the MirrorFilterSet resource 'tap-filters' too. Nothing was changed.",
    );
    // A fresh mirror has no live set and no copy to read.
    await expect(resolveFilterSet("h", declared, undefined, async () => expect.fail("read"))).rejects.toThrow(/not part of this deployment/);
  });

  it("the refusal keeps TcPolicy's text", () => {
    const ref = { name: "edge-rules", digest: "b".repeat(64), count: 3 };
    expect(unknownVersionError("h", { subject: "policy edge", listKind: "TcRuleSet", ref, items: "rules", where: " on ingress", holder: "the hook" }).message).toBe(
      `h: policy edge must apply version ${"b".repeat(12)} of TcRuleSet 'edge-rules' (3 rules) on ingress, which is not part of this deployment, and the hook holds other rules. ` +
        "With `pulumi up --target`, target the TcRuleSet resource 'edge-rules' too. Nothing was changed.",
    );
  });

  it("reports no filters of its own, the recorded version, and only the stray and missing filters as drift", () => {
    const ref = filterSet(written);
    const outputs = { ...inputsOf({ filterSet: ref }), filters: canonicalFilterSet(written)!.items } as TrafficMirrorOutputs;
    const live = { ...canonicalFilterSet(written)!.items, "udp and dst port 53": { protocol: "udp" as const, destinationPort: 53 } };
    delete (live as Record<string, unknown>)["all"];
    const read = boundOutputs(outputs, live, lines);
    expect(read.filters).toEqual({});
    expect(read.filterSet).toEqual(ref);
    expect(read.filterDrift).toEqual({ all: "missing", "udp and dst port 53": "stray" });
    // No drift: no drift key at all (the engine refuses undefined values), and an earlier drift goes.
    const clean = boundOutputs({ ...outputs, filterDrift: { tcp: "stray" } }, canonicalFilterSet(written)!.items, lines);
    expect("filterDrift" in clean).toBe(false);
    // A host that holds another version (a failed wave) reports that version's digest and count.
    expect(boundOutputs(outputs, { tcp: { protocol: "tcp" } }, ["tcp"]).filterSet).toEqual({ ...ref, digest: contentDigest(["tcp"]), count: 1 });
    // Without a record, the live set stands in for it.
    expect(boundOutputs(outputs, { tcp: { protocol: "tcp" } }, undefined).filterSet!.digest).toBe(contentDigest(["tcp"]));
    // An inline mirror keeps its filters and never carries drift.
    const inline = { ...inputsOf({ filters: [{ protocol: "udp" }] }), filterDrift: { x: "stray" } } as unknown as TrafficMirrorOutputs;
    expect(boundOutputs(inline, {}, undefined)).toEqual({ ...inputsOf({ filters: [{ protocol: "udp" }] }) });
  });
});
