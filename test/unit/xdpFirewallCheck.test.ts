import { describe, expect, it } from "vitest";
import { failureAt } from "../support/checkFailure";
import { checkInputs, diffInputs, UNKNOWN } from "../../provider/dynamicAdapter";
import { xdpFirewallKind } from "../../provider/xdpFirewall/lifecycle";
import { checkXdpFirewall, xdpFirewallSchema } from "../../provider/xdpFirewall/schema";
import { revertWindowProblem } from "../../provider/xdpFirewall/revertWindow";

const valid = {
  host: { address: "10.200.1.2", hostKey: "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB" },
  credentials: { privateKey: "-----BEGIN OPENSSH PRIVATE KEY-----" },
  interface: "eth0",
  name: "edge-fw",
  deny: ["203.0.113.7/24", "2001:DB8::/32", "192.0.2.9", "192.0.2.9/32"],
};

describe("XdpFirewall check", () => {
  it("canonicalises: network form, deduplicated, sorted, keyed by entry", () => {
    const result = checkInputs(xdpFirewallSchema, valid);
    expect(result.failures).toBeUndefined();
    expect(result.inputs?.deny).toEqual({ "192.0.2.9/32": "deny", "203.0.113.0/24": "deny", "2001:db8::/32": "deny" });
    expect(Object.keys(result.inputs?.deny)).toEqual(["192.0.2.9/32", "203.0.113.0/24", "2001:db8::/32"]);
    expect(result.inputs).toMatchObject({ mode: "auto", attached: true, lockoutGuard: true, host: { port: 22, user: "root" } });
  });

  describe("each map's real capacity", () => {
    // 262,145 distinct /24s: 10.0.0.0/24 onwards, one more than deny_v4_prefix holds.
    const v4Prefixes = (n: number) => Array.from({ length: n }, (_, i) => `${10 + (i >>> 16)}.${(i >>> 8) & 0xff}.${i & 0xff}.0/24`);
    const v6Prefixes = (n: number) => Array.from({ length: n }, (_, i) => `2001:db8:${(i >>> 16).toString(16)}:${(i & 0xffff).toString(16)}::/64`);
    const v4Exact = (n: number) => Array.from({ length: n }, (_, i) => `${10 + (i >>> 24)}.${(i >>> 16) & 0xff}.${(i >>> 8) & 0xff}.${i & 0xff}`);

    it.each([
      ["deny_v4_prefix", 262_144, () => v4Prefixes(262_145), /has 262145 IPv4 prefixes \(\/0–\/31\); their map deny_v4_prefix holds at most 262144/],
      ["deny_v6_prefix", 262_144, () => v6Prefixes(262_145), /has 262145 IPv6 prefixes \(\/0–\/127\); their map deny_v6_prefix holds at most 262144/],
      ["deny_v4_exact", 1_048_576, () => v4Exact(1_048_577), /has 1048577 IPv4 addresses \(\/32\); their map deny_v4_exact holds at most 1048576/],
    ] as const)("refuses one entry more than %s holds (%i), naming the map, the limit and the count", (map, limit, list, message) => {
      const news = { ...valid, deny: list() };
      const result = checkXdpFirewall(news);
      const failure = failureAt(result, "deny", news);
      expect(failure.reason, map).toMatch(message);
      expect(result.failures).toHaveLength(1);
    }, 60_000);

    it("accepts every map full at once: the limits are per map, not one total", () => {
      const result = checkXdpFirewall({ ...valid, deny: [...v4Prefixes(262_144), ...v6Prefixes(262_144), ...v4Exact(300_000)] });
      expect(result.failures).toBeUndefined();
      expect(Object.keys(result.inputs!.deny)).toHaveLength(2 * 262_144 + 300_000);
    }, 60_000);
  });

  it("accepts the canonical object form it produced", () => {
    const once = checkInputs(xdpFirewallSchema, valid).inputs!;
    expect(checkInputs(xdpFirewallSchema, once).inputs).toEqual(once);
  });

  it.each([
    [{ deny: ["10.0.0.0/33"] }, "deny[0]", /prefix length/],
    [{ deny: ["10.0.0.1", "2001:db8::zz"] }, "deny[1]", /not an IPv4 or IPv6/],
    [{ deny: ["300.1.1.1"] }, "deny[0]", /not an IPv4 or IPv6/],
    [{ interface: "" }, "interface", /must not be empty/],
    [{ interface: "eth0; rm -rf /" }, "interface", /only letters, digits/],
    [{ interface: "$(reboot)" }, "interface", /only letters, digits/],
    [{ interface: "averyveryverylongname0" }, "interface", /15 characters/],
    [{ name: "../etc" }, "pinName", /only letters, digits/],
    [{ name: "edge.fw" }, "pinName", /bpffs refuses/],
    [{ mode: "fast" }, "mode", /./],
    [{ host: { address: "10.0.0.1 -oProxyCommand=x" } }, "host.address", /IP address or a DNS name/],
    [{ host: { address: "10.0.0.1", port: 70000 } }, "host.port", /./],
    [{ host: { address: "10.0.0.1", hostKey: "not a key" } }, "host.hostKey", /ssh-ed25519/],
    [{ host: { address: "10.0.0.1", user: "root;id" } }, "host.user", /Unix user name/],
    [{ host: { address: "10.0.0.1", connectTimeoutMs: 5 } }, "host.connectTimeoutMs", /./],
    [{ host: { address: "10.0.0.1", jumpHost: { address: "bad host" } } }, "host.jumpHost.address", /IP address or a DNS name/],
    [{ host: { address: "10.0.0.1", sudo: "yes" } }, "host.sudo", /boolean/],
    [{ credentials: { privateKey: "k", token: "x" } }, "host", /token/],
    [{ attached: "no" }, "attached", /boolean/],
    [{ lockoutGuard: 0 }, "lockoutGuard", /boolean/],
    [{ lockoutRevertSeconds: 1 }, "lockoutRevertSeconds", /./],
    [{ lockoutRevertSeconds: 2.5 }, "lockoutRevertSeconds", /./],
    [{ allowManagementDeny: "yes" }, "allowManagementDeny", /boolean/],
    [{ deny: "10.0.0.0/8" }, "deny", /./],
  ])("rejects %j naming %s", (patch, property, reason) => {
    const result = checkInputs(xdpFirewallSchema, { ...valid, ...patch });
    expect(result.inputs).toBeUndefined();
    const failure = failureAt(result, property, { ...valid, ...patch });
    expect(failure.reason).toMatch(reason);
  });

  // chainPriority on its own: test/unit/chainPriorityCheck.test.ts, with MaglevService.
  it("accepts chainPriority together with bootRestore (a chain member is restored behind its dispatcher)", () => {
    const result = checkXdpFirewall({ ...valid, chainPriority: 0, bootRestore: true });
    expect(result.failures).toBeUndefined();
    expect(result.inputs).toMatchObject({ chainPriority: 0, bootRestore: true });
  });

  it("lets values that are unknown during preview through unchecked", () => {
    const result = checkInputs(xdpFirewallSchema, { ...valid, host: { address: UNKNOWN }, deny: UNKNOWN });
    expect(result.failures).toBeUndefined();
    expect(result.inputs?.deny).toBe(UNKNOWN);
    expect(result.inputs?.host).toEqual({ address: UNKNOWN });
    expect(result.inputs?.interface).toBe("eth0");
  });
});

describe("XdpFirewall check: the lockout guard's revert window against the update's batch", () => {
  // n distinct IPv4 addresses in 100.64.0.0/10, canonical.
  const addresses = (n: number, from = 0) => Array.from({ length: n }, (_, k) => { const i = k + from; return `100.${64 + ((i >> 16) & 63)}.${(i >> 8) & 255}.${i & 255}/32`; });
  // At the fastest rate (20,000 entries/s), a 10 s window holds fewer than 200,000 entries.
  const list = addresses(200_000);
  // The old inputs as check returned them (computed once: 200,000 entries take a while to canonicalise).
  let emptyOlds: Record<string, unknown> | undefined;
  let listOlds: Record<string, unknown> | undefined;
  const empty = () => (emptyOlds ??= checkInputs(xdpFirewallSchema, { ...valid, deny: [] }).inputs as Record<string, unknown>);
  const olds = (deny: string[]) => (deny.length === 0 ? empty() : (listOlds ??= checkInputs(xdpFirewallSchema, { ...valid, deny }).inputs as Record<string, unknown>));

  it("refuses a window the batch outlasts even at the fastest rate seen, naming the property, the batch and a window that holds it", () => {
    const news = { ...valid, deny: list, lockoutRevertSeconds: 10 };
    const result = checkXdpFirewall(news, olds([]));
    const failure = failureAt(result, "lockoutRevertSeconds", news);
    expect(result.failures).toHaveLength(1);
    // 200,000 entries at 4,500/s: 45 s, doubled for the login proof.
    expect(failure.reason).toMatch(/^lockoutRevertSeconds: 10 s is too short for this update, which writes 200,000 deny entries .* takes 10 s, so the host would undo the change mid-batch\. Set lockoutRevertSeconds to at least 90 \(/);
    expect(failure.reason).toMatch(/lockoutGuard: false/);
    // The default window (30 s), not written by the user: the failure names no property the engine would look up.
    const byDefault = { ...valid, deny: undefined, denyList: { name: "big", digest: "a".repeat(64), count: 600_000 } };
    const defaulted = checkXdpFirewall(byDefault, { ...empty(), deny: undefined, denyList: { name: "big", digest: "b".repeat(64), count: 0 } });
    expect(defaulted.failures).toHaveLength(1);
    expect(defaulted.failures![0]!.property).toBe("");
    expect(defaulted.failures![0]!.reason).toMatch(/^lockoutRevertSeconds: 30 s is too short .* 600,000 deny entries .* at least 270 \(/);
  }, 120_000);

  it("counts only the entries the update writes: one entry fewer fits, and a long list changed by a few entries passes", () => {
    expect(checkXdpFirewall({ ...valid, deny: list.slice(1), lockoutRevertSeconds: 10 }, olds([])).failures).toBeUndefined();
    // 200,000 kept, 1 added and 1 removed: 2 entries to write.
    const changed = checkXdpFirewall({ ...valid, deny: [...list.slice(1), ...addresses(1, 300_000)], lockoutRevertSeconds: 10 }, olds(list));
    expect(changed.failures).toBeUndefined();
    // Half replaced: 100,000 removed and 100,000 added.
    const half = checkXdpFirewall({ ...valid, deny: [...list.slice(100_000), ...addresses(100_000, 300_000)], lockoutRevertSeconds: 10 }, olds(list));
    expect(half.failures?.[0]?.reason).toMatch(/writes 200,000 deny entries/);
  }, 120_000);

  it("does not apply to a create (the maps are filled before the program is attached and the guard armed), without the guard, or detached", () => {
    expect(checkXdpFirewall({ ...valid, deny: list, lockoutRevertSeconds: 10 }).failures).toBeUndefined();
    expect(checkXdpFirewall({ ...valid, deny: list, lockoutRevertSeconds: 10, lockoutGuard: false }, olds([])).failures).toBeUndefined();
    expect(checkXdpFirewall({ ...valid, deny: list, lockoutRevertSeconds: 10, attached: false }, olds([])).failures).toBeUndefined();
  }, 120_000);

  it("lets unknown values through during preview", () => {
    expect(checkXdpFirewall({ ...valid, deny: UNKNOWN, lockoutRevertSeconds: 10 }, olds([])).failures).toBeUndefined();
    expect(checkXdpFirewall({ ...valid, deny: ["192.0.2.1"], lockoutRevertSeconds: UNKNOWN }, olds([])).failures).toBeUndefined();
  });

  it("with a DenyList this process does not hold, counts the difference of the counts (a lower bound)", () => {
    const digest = (c: string) => c.repeat(64);
    const news = { ...valid, deny: undefined, denyList: { name: "big", digest: digest("a"), count: 1_000_000 } };
    const grown = checkXdpFirewall(news, { ...olds([]), deny: undefined, denyList: { name: "big", digest: digest("b"), count: 0 } });
    expect(grown.failures?.[0]?.reason).toMatch(/writes 1,000,000 deny entries .* at least 450 \(/);
    const same = checkXdpFirewall(news, { ...olds([]), deny: undefined, denyList: { name: "big", digest: digest("b"), count: 999_000 } });
    expect(same.failures).toBeUndefined();
  });

  it("says when no window of at most 3600 s holds the batch, and what step size does", () => {
    const problem = revertWindowProblem(
      { lockoutGuard: true, attached: true, lockoutRevertSeconds: 600, denyList: { name: "x", digest: "c".repeat(64), count: 20_000_000 } },
      { denyList: { name: "x", digest: "d".repeat(64), count: 0 } },
    );
    expect(problem).toMatch(/^lockoutRevertSeconds: 600 s is too short .* 20,000,000 deny entries .* takes 1000 s.* No window of at most 3600 s holds it .* steps of at most 8,100,000 entries with lockoutRevertSeconds 3600/);
  });
});

describe("XdpFirewall diff", () => {
  const olds = { ...checkInputs(xdpFirewallSchema, valid).inputs!, objectSha256: "x" } as never;
  const base = checkInputs(xdpFirewallSchema, valid).inputs as never;

  it("updates in place when only entries change", () => {
    const news = checkInputs(xdpFirewallSchema, { ...valid, deny: ["10.0.0.0/8"] }).inputs as never;
    const d = diffInputs(xdpFirewallKind, olds, news);
    expect(d.changes).toBe(true);
    expect(d.replaces).toEqual([]);
  });

  it("replaces when the interface or host changes", () => {
    const news = checkInputs(xdpFirewallSchema, { ...valid, interface: "eth1" }).inputs as never;
    expect(diffInputs(xdpFirewallKind, olds, news).replaces).toEqual(["interface"]);
    const moved = checkInputs(xdpFirewallSchema, { ...valid, host: { ...valid.host, address: "10.200.1.3" } }).inputs as never;
    expect(diffInputs(xdpFirewallKind, olds, moved)).toMatchObject({ replaces: ["host"], deleteBeforeReplace: true });
  });

  it("reports a pending object upgrade even with equal inputs", () => {
    expect(diffInputs(xdpFirewallKind, olds, base).changes).toBe(true);
  });
});
