/**
 * The applied copy's digest read and its update by difference (issue 10), run by the
 * real shell scripts on this machine's coreutils, and the choice between planning from
 * a registered version and reading the host's copy.
 */
import { spawnSync } from "node:child_process";
import { chmodSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeEach, describe, expect, it } from "vitest";
import { appliedEntries, appliedPatchText, parseAppliedDigest } from "../../provider/remote/appliedSets";
import { shellScriptCommand } from "../../provider/remote/shellScript";
import { clearRegisteredContent, contentDigest, contentText, registerContent } from "../../provider/sharedContent";
import { planBetween, planDeny } from "../../provider/xdpFirewall/plan";

const scratch = mkdtempSync(join(tmpdir(), "bpfleet-applied-unit-"));
afterAll(() => rmSync(scratch, { recursive: true, force: true }));

let n = 0;
function host() {
  const state = join(scratch, `state-${++n}`);
  const dir = join(state, "applied");
  const kindDir = join(dir, "xdp-firewall");
  const copy = join(kindDir, "fw");
  const held = join(kindDir, ".fw.old");
  const sh = (name: string, args: Record<string, string>, input = "") => spawnSync("sh", shellScriptCommand(name, args).slice(1), { input, encoding: "utf8" });
  return {
    kindDir,
    copy,
    held,
    write: (keys: string[]) => sh("applied-write", { state, dir, kind: "xdp-firewall", name: "fw" }, contentText(keys)),
    digest: () => parseAppliedDigest({ code: 0, stdout: sh("applied-digest", { path: copy }).stdout, stderr: "" }),
    hold: () => sh("applied-hold", { path: copy, held }),
    patch: (digest: string, add: readonly string[], remove: readonly string[], text = appliedPatchText(add, remove)) => sh("applied-patch", { state, dir, kind: "xdp-firewall", name: "fw", digest }, text),
  };
}

// A list large enough that sort order and the merge matter (and unsorted input would show).
const big = Array.from({ length: 5000 }, (_, i) => `10.${(i >> 8) & 255}.${i & 255}.0/24`);

describe("applied-digest.sh", () => {
  it("says absent, or the copy's digest and count as contentDigest computes them", () => {
    const h = host();
    expect(h.digest()).toBeUndefined();
    expect(h.write(big).status).toBe(0);
    expect(h.digest()).toEqual({ digest: contentDigest(big), count: big.length });
    expect(h.write([]).status).toBe(0);
    expect(h.digest()).toEqual({ digest: contentDigest([]), count: 0 });
  });

  it("an answer that is neither is an error naming the script", () => {
    expect(() => parseAppliedDigest({ code: 0, stdout: "present nothex 3\n", stderr: "" })).toThrow(/applied-digest\.sh/);
    expect(() => parseAppliedDigest({ code: 0, stdout: "", stderr: "" })).toThrow(/applied-digest\.sh/);
  });
});

describe("applied-patch.sh", () => {
  it("brings the held copy to the next version by the difference, root-only, and drops the base", () => {
    const h = host();
    h.write(big);
    const next = [...big.slice(0, 1000), ...big.slice(1001), "192.0.2.9/32", "0.0.0.0/8"];
    const plan = planDeny(next, big);
    expect(h.hold().status).toBe(0);
    expect(existsSync(h.copy)).toBe(false);
    const result = h.patch(contentDigest(next), plan.add, plan.remove);
    expect(result).toMatchObject({ status: 0, stderr: "" });
    expect(readFileSync(h.copy, "utf8")).toBe(contentText(next));
    expect(readdirSync(h.kindDir)).toEqual(["fw"]);
    expect(statSync(h.copy).mode & 0o777).toBe(0o600);
    expect(statSync(h.kindDir).mode & 0o777).toBe(0o700);
    expect(h.digest()).toEqual({ digest: contentDigest(next), count: next.length });
  });

  it("to the empty list and back", () => {
    const h = host();
    h.write(["192.0.2.1/32"]);
    h.hold();
    expect(h.patch(contentDigest([]), [], ["192.0.2.1/32"]).status).toBe(0);
    expect(readFileSync(h.copy, "utf8")).toBe("");
    h.hold();
    expect(h.patch(contentDigest(["192.0.2.1/32"]), ["192.0.2.1/32"], []).status).toBe(0);
    expect(readFileSync(h.copy, "utf8")).toBe("192.0.2.1/32\n");
  });

  it("records nothing and exits 3 when the result is not the planned version (the copy was another one); a whole write then replaces it", () => {
    const h = host();
    h.write([...big, "198.51.100.7/32"]); // a copy the plan did not start from
    const next = [...big, "192.0.2.9/32"];
    h.hold();
    const result = h.patch(contentDigest(next), ["192.0.2.9/32"], []);
    expect(result.status).toBe(3);
    expect(result.stderr).toMatch(/not the version planned from/);
    expect(existsSync(h.copy)).toBe(false);
    expect(readdirSync(h.kindDir)).toEqual([".fw.old"]);
    expect(h.write(next).status).toBe(0);
    expect(readdirSync(h.kindDir)).toEqual(["fw"]);
    expect(h.digest()?.digest).toBe(contentDigest(next));
  });

  it("exits 3 without a held copy, and refuses a directory others can write", () => {
    const h = host();
    h.write(big);
    expect(h.patch(contentDigest(big), [], [])).toMatchObject({ status: 3, stderr: expect.stringMatching(/no recorded copy to patch/) });
    expect(readFileSync(h.copy, "utf8")).toBe(contentText(big));
    h.hold();
    chmodSync(h.kindDir, 0o777);
    expect(h.patch(contentDigest(big), [], [])).toMatchObject({ status: 1, stderr: expect.stringMatching(/writable by group or others/) });
    expect(existsSync(h.copy)).toBe(false);
  });

  it("hold moves nothing when there is no copy", () => {
    const h = host();
    h.write([]);
    rmSync(h.copy);
    expect(h.hold().status).toBe(0);
    expect(readdirSync(h.kindDir)).toEqual([]);
  });

  it("a key with a line break or an empty key never reaches the host", () => {
    expect(() => appliedPatchText(["10.0.0.1/32\n+10.0.0.2/32"], [])).toThrow(/line break/);
    expect(() => appliedPatchText([], [""])).toThrow(/empty/);
    expect(appliedPatchText(["b"], ["a"])).toBe("-a\n+b\n");
    expect(appliedPatchText([], [])).toBe("");
  });

  it("a diff line that is neither + nor - is ignored, and the digest check still decides", () => {
    const h = host();
    h.write(["10.0.0.1/32"]);
    h.hold();
    expect(h.patch(contentDigest(["10.0.0.1/32", "10.0.0.2/32"]), [], [], "garbage\n+10.0.0.2/32\n").status).toBe(0);
    expect(readFileSync(h.copy, "utf8")).toBe("10.0.0.1/32\n10.0.0.2/32\n");
  });
});

describe("which baseline an update plans from", () => {
  beforeEach(() => clearRegisteredContent());
  const v1 = ["10.0.0.0/8", "192.0.2.1/32"];
  const v2 = ["10.0.0.0/8", "192.0.2.9/32"];
  const reads = () => {
    const calls: number[] = [];
    return { calls, read: async () => (calls.push(1), ["198.51.100.1/32"]) };
  };

  it("a registered version is taken from the registry, with no read", async () => {
    registerContent(v1);
    const r = reads();
    const got = await appliedEntries({ digest: contentDigest(v1), count: 2 }, { baseline: true, wanted: contentDigest(v2) }, r.read);
    expect(got).toEqual({ entries: v1, read: false });
    expect(r.calls).toHaveLength(0);
  });

  it("a version the controller does not know (drift, missed update, adoption) is read, when it is the baseline", async () => {
    registerContent(v2);
    const r = reads();
    expect(await appliedEntries({ digest: contentDigest(v1), count: 2 }, { baseline: true, wanted: contentDigest(v2) }, r.read)).toEqual({ entries: ["198.51.100.1/32"], read: true });
    expect(r.calls).toHaveLength(1);
  });

  it("or when it is the wanted version itself (a --target run without the list); otherwise not at all", async () => {
    const r = reads();
    expect((await appliedEntries({ digest: contentDigest(v1), count: 2 }, { baseline: false, wanted: contentDigest(v1) }, r.read)).read).toBe(true);
    expect(await appliedEntries({ digest: contentDigest(v1), count: 2 }, { baseline: false, wanted: contentDigest(v2) }, r.read)).toEqual({ entries: undefined, read: false });
    expect(await appliedEntries(undefined, { baseline: true, wanted: contentDigest(v2) }, r.read)).toEqual({ entries: undefined, read: false });
    expect(r.calls).toHaveLength(1);
  });

  it("hosts moving between the same two registered versions share one plan, equal to a fresh one", () => {
    const desired = [...v2];
    const observed = [...v1];
    const plan = planBetween(desired, observed);
    expect(planBetween(desired, observed)).toBe(plan);
    expect(plan).toEqual(planDeny(v2, v1));
    expect(planBetween([...v2], observed)).not.toBe(plan);
  });
});
