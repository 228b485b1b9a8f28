import { createHash } from "node:crypto";
import { beforeEach, describe, expect, it, vi } from "vitest";
import { canonicalDenyList } from "../../provider/denyList/entries";
import { provider as denyListProvider } from "../../provider/denyList/dynamic";
import { checkDenyList } from "../../provider/denyList/schema";
import { appliedText, parseAppliedText } from "../../provider/remote/appliedSets";
import { clearRegisteredContent, contentDigest, registerContent, registeredContent } from "../../provider/sharedContent";
import { checkXdpFirewall } from "../../provider/xdpFirewall/schema";

beforeEach(() => clearRegisteredContent());

describe("content held once: digest and the host's applied copy", () => {
  it("the digest is the sha256 of the host's applied file, whatever the order the keys come in", () => {
    const keys = ["203.0.113.0/24", "192.0.2.9/32", "2001:db8::/32"];
    const file = appliedText(keys);
    expect(file).toBe("192.0.2.9/32\n2001:db8::/32\n203.0.113.0/24\n");
    expect(contentDigest([...keys].reverse())).toBe(createHash("sha256").update(file).digest("hex"));
    expect(parseAppliedText(file)).toEqual([...keys].sort());
    expect(appliedText([])).toBe("");
    expect(parseAppliedText("")).toEqual([]);
  });

  it("the SDK's canonical form and digest match the provider's check, and a bad entry gives no digest", () => {
    const written = ["192.0.2.9", "203.0.113.7/24", "2001:DB8::/32", "192.0.2.9/32"];
    const sdk = canonicalDenyList(written)!;
    expect(sdk.entries).toEqual({ "192.0.2.9/32": "deny", "203.0.113.0/24": "deny", "2001:db8::/32": "deny" });
    expect(sdk.count).toBe(3);
    expect(sdk.text).toBe("192.0.2.9/32\n2001:db8::/32\n203.0.113.0/24\n");
    const checked = checkDenyList(undefined, { entries: written });
    expect(checked.inputs?.entries).toEqual(sdk.text);
    expect(registeredContent(sdk.digest)).toEqual(Object.keys(sdk.entries).sort());
    expect(canonicalDenyList(["10.0.0.0/33"])).toBeUndefined();
  });
});

describe("DenyList check and diff", () => {
  it("registers the old and the new version, so firewalls find what they applied and what they must apply", () => {
    const olds = { entries: { "192.0.2.9/32": "deny", "203.0.113.0/24": "deny" } };
    checkDenyList(olds, { entries: ["192.0.2.9", "203.0.113.0/24", "198.51.100.0/24"] });
    expect(registeredContent(contentDigest(Object.keys(olds.entries)))).toEqual(["192.0.2.9/32", "203.0.113.0/24"]);
    expect(registeredContent(contentDigest(["192.0.2.9/32", "203.0.113.0/24", "198.51.100.0/24"]))).toHaveLength(3);
  });

  it("a bad entry names its index and reason, and registers nothing", () => {
    const result = checkDenyList(undefined, { entries: ["192.0.2.9", "10.0.0.0/33"] });
    expect(result.failures?.[0]?.reason).toMatch(/^entries\[1\]: "10\.0\.0\.0\/33": prefix length must be a whole number from 0 to 32/);
    expect(registeredContent(contentDigest(["192.0.2.9/32"]))).toBeUndefined();
  });

  it("diff compares the digest in the old outputs with the new entries' digest", async () => {
    const entries = "192.0.2.9/32\n";
    const outs = (await denyListProvider.create({ entries })).outs;
    // The entries are held once, in the inputs: outputs only identify them, and a read gives
    // no inputs back, so the engine keeps the ones it has.
    expect(outs).toEqual({ digest: contentDigest(["192.0.2.9/32"]), count: 1 });
    expect(await denyListProvider.read("id", outs)).toEqual({ id: "id", props: outs });
    // Outputs of an earlier release held the entries too: a refresh drops that copy.
    expect(await denyListProvider.read("id", { ...outs, entries })).toEqual({ id: "id", props: outs });
    expect((await denyListProvider.diff("id", outs, { entries })).changes).toBe(false);
    expect((await denyListProvider.diff("id", outs, { entries: "192.0.2.10/32\n192.0.2.9/32\n" })).changes).toBe(true);
  });

  it("state holds the list as one text: the SDK's text passes through, a bad line is named, and an earlier release's keyed state is read", () => {
    const text = "192.0.2.9/32\n203.0.113.0/24\n";
    expect(checkDenyList(undefined, { entries: text }).inputs?.entries).toBe(text);
    // A text not in canonical form (hand-made) is canonicalised, not trusted.
    expect(checkDenyList(undefined, { entries: "203.0.113.7/24\n192.0.2.9\n" }).inputs?.entries).toBe(text);
    expect(checkDenyList(undefined, { entries: "192.0.2.9/32\n10.0.0.0/33\n" }).failures?.[0]?.reason).toMatch(/^entries\[1\]: "10\.0\.0\.0\/33": prefix length/);
    // The previous release kept `{ "<entry>": "deny" }` in state: as old inputs it is
    // registered (what the firewalls applied), and as inputs it becomes the text.
    const keyed = { "192.0.2.9/32": "deny", "203.0.113.0/24": "deny" };
    expect(checkDenyList(keyed, { entries: keyed }).inputs?.entries).toBe(text);
    clearRegisteredContent();
    checkDenyList({ entries: keyed }, { entries: "192.0.2.9/32\n" });
    expect(registeredContent(contentDigest(Object.keys(keyed)))).toEqual(Object.keys(keyed));
    expect(registeredContent(contentDigest(["192.0.2.9/32"]))).toEqual(["192.0.2.9/32"]);
    expect(checkDenyList(undefined, {}).inputs?.entries).toBe("");
  });
});

describe("XdpFirewall with a DenyList", () => {
  const base = {
    host: { address: "10.200.1.2", hostKey: "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB" },
    credentials: { privateKey: "k" },
    interface: "eth0",
    name: "edge-fw",
  };
  const denyList = { name: "feed", digest: contentDigest(["192.0.2.9/32"]), count: 1 };

  it("accepts the list's reference alone, keeping no entries of its own", () => {
    const result = checkXdpFirewall({ ...base, denyList });
    expect(result.failures).toBeUndefined();
    expect(result.inputs).toMatchObject({ denyList, deny: {} });
  });

  it("refuses entries given both ways, and a digest that is not one", () => {
    expect(checkXdpFirewall({ ...base, denyList, deny: ["192.0.2.9"] }).failures?.[0]?.reason).toMatch(/either as `deny` or as a `denyList`, not both/);
    expect(checkXdpFirewall({ ...base, denyList: { ...denyList, digest: "invalid" } }).failures?.[0]?.reason).toMatch(/denyList\.digest: must be the list's sha256 digest/);
  });
});

describe("drift against the host's applied list", () => {
  it("names stray and missing entries only, in canonical order; nothing when the maps agree", async () => {
    const { driftOf } = await import("../../provider/xdpFirewall/plan");
    const applied = ["203.0.113.0/24", "10.0.0.0/8", "2001:db8::/32"];
    expect(driftOf(applied, [...applied].reverse())).toBeUndefined();
    const drift = driftOf(applied, ["10.0.0.0/8", "2001:db8::/32", "192.0.2.77/32"]);
    expect(drift).toEqual({ "192.0.2.77/32": "stray", "203.0.113.0/24": "missing" });
    expect(Object.keys(drift!)).toEqual(["192.0.2.77/32", "203.0.113.0/24"]);
  });
});

describe("the registry of shared content", () => {
  it("is one per process, even when the module is loaded twice (a package reached by a symlink and by its real path)", async () => {
    clearRegisteredContent();
    const first = await import("../../provider/sharedContent");
    const digest = first.registerContent(["192.0.2.1/32"]);
    vi.resetModules();
    const second = await import("../../provider/sharedContent");
    expect(second).not.toBe(first);
    expect(second.registeredContent(digest)).toEqual(["192.0.2.1/32"]);
    clearRegisteredContent();
  });

  it("hands out frozen versions, whose digest is remembered and stays the digest of their keys", () => {
    clearRegisteredContent();
    const digest = registerContent(["203.0.113.0/24", "192.0.2.1/32"]);
    const held = registeredContent(digest)!;
    expect(Object.isFrozen(held)).toBe(true);
    expect(() => (held as string[]).push("198.51.100.1/32")).toThrow(TypeError);
    expect(contentDigest(held)).toBe(digest);
    expect(contentDigest(held)).toBe(contentDigest(["192.0.2.1/32", "203.0.113.0/24"]));
    // An array that is not frozen may change, so its digest is computed anew each time.
    const open = ["192.0.2.1/32"];
    const before = contentDigest(open);
    open.push("198.51.100.1/32");
    expect(contentDigest(open)).not.toBe(before);
    expect(contentDigest(open)).toBe(contentDigest(["198.51.100.1/32", "192.0.2.1/32"]));
    clearRegisteredContent();
  });
});
