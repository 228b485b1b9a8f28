// chainPriority, the slot a program takes in an interface's XDP chain, is
// checked the same way for every kind that can join the chain: one table of
// cases, run against each kind's check and its provider's check.
import { describe, expect, it } from "vitest";
import type * as pulumi from "@pulumi/pulumi";
import { provider as maglevProvider } from "../../provider/maglev/dynamic";
import { checkMaglevService } from "../../provider/maglev/schema";
import { provider as xdpFirewallProvider } from "../../provider/xdpFirewall/dynamic";
import { checkXdpFirewall } from "../../provider/xdpFirewall/schema";

const host = { address: "10.200.1.11", hostKey: "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB" };
const credentials = { privateKey: "-----BEGIN OPENSSH PRIVATE KEY-----" };

interface ChainMember {
  kind: string;
  /** Valid inputs without chainPriority: the program attaches alone. */
  valid: Record<string, unknown>;
  check(news: Record<string, unknown>): pulumi.dynamic.CheckResult;
  provider: pulumi.dynamic.ResourceProvider;
}

const members: ChainMember[] = [
  {
    kind: "MaglevService",
    valid: { host, credentials, interface: "eth0", name: "web", vips: ["198.51.100.10:80/tcp"], backends: ["10.200.1.12"], mode: "dsr" },
    check: checkMaglevService,
    provider: maglevProvider,
  },
  {
    kind: "XdpFirewall",
    valid: { host, credentials, interface: "eth0", name: "edge-fw", deny: ["203.0.113.0/24"] },
    check: checkXdpFirewall,
    provider: xdpFirewallProvider,
  },
];

describe.each(members)("$kind chainPriority", ({ valid, check, provider }) => {
  it.each([
    [-1, /from 0 to 7/],
    [8, /8 slots/],
    [1.5, /integer/],
    ["1", /integer from 0 to 7/],
  ])("refuses %j naming chainPriority", (chainPriority, reason) => {
    const result = check({ ...valid, chainPriority });
    expect(result.inputs).toBeUndefined();
    expect(result.failures).toHaveLength(1);
    expect(result.failures![0]!.property).toBe("chainPriority");
    expect(result.failures![0]!.reason).toMatch(/^chainPriority: /);
    expect(result.failures![0]!.reason).toMatch(reason);
  });

  it.each([0, 7])("accepts %j", (chainPriority) => {
    const result = check({ ...valid, chainPriority });
    expect(result.failures).toBeUndefined();
    expect(result.inputs?.chainPriority).toBe(chainPriority);
  });

  it("leaves it absent when unset: the program attaches alone", () => {
    const result = check(valid);
    expect(result.failures).toBeUndefined();
    expect(result.inputs).not.toHaveProperty("chainPriority");
  });

  it("is refused through the provider's check, as the engine calls it", async () => {
    const result = await provider.check!({}, { ...valid, chainPriority: 8 });
    expect(result.failures?.map((f) => f.property)).toEqual(["chainPriority"]);
  });
});
