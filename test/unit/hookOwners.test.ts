// hookOwners.ts: which bpfleet resource a pin on the host belongs to, and the advice a
// resource gets when another one holds the XDP hook or slot it wants (issue 15,
// finding 4). test/e2e/xdpSwap.test.ts follows each way out with the real CLI.
import { describe, expect, it } from "vitest";
import { ownerName, ownerPins, pinOwner, takeoverAdvice, typeToken, type PinOwner, type Takeover } from "../../provider/remote/hookOwners";

const firewallA: PinOwner = { kind: "xdp-firewall", pinName: "a", sdkClass: "XdpFirewall" };
const web: PinOwner = { kind: "maglev", pinName: "web", sdkClass: "MaglevService" };
const ALL = [0, 1, 2, 3, 4, 5, 6, 7];

const advice = (t: Partial<Takeover>) => takeoverAdvice({ what: "firewall", owner: firewallA, ownerSlot: undefined, wanted: undefined, free: ALL, ...t });

/**
 * The engine's --target glob (pulumi/pulumi pkg/resource/deploy, UrnTargets.getMatcher):
 * `**` matches anything, `*` anything but ':', the rest literally, anchored.
 */
function globMatches(glob: string, urn: string): boolean {
  const quote = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
  const pattern = glob.split("**").map((part) => part.split("*").map(quote).join("[^:]*")).join(".*");
  return new RegExp(`^${pattern}$`).test(urn);
}

describe("pinOwner", () => {
  it.each<[string | undefined, PinOwner | undefined]>([
    ["xdp-firewall/a", firewallA],
    ["maglev/web", web],
    ["xdp-firewall/edge_2-b", { kind: "xdp-firewall", pinName: "edge_2-b", sdkClass: "XdpFirewall" }],
    // bpfleet's own dispatcher is nobody's resource.
    ["xdp-dispatcher/eth0", undefined],
    // Kinds without an XDP program of their own.
    ["tc-policy/p", undefined],
    ["traffic-mirror/m", undefined],
    // Not a name bpfleet gives a pin (and unsafe to quote back to the user).
    ["xdp-firewall/a'b", undefined],
    ["xdp-firewall/-a", undefined],
    ["xdp-firewall/a/b", undefined],
    ["xdp-firewall/", undefined],
    [`xdp-firewall/${"a".repeat(65)}`, undefined],
    [undefined, undefined],
  ])("%s", (pin, expected) => {
    expect(pinOwner(pin)).toEqual(expected);
  });

  it("names an owner by its SDK class and pin name, and its pins by path", () => {
    expect(ownerName(web)).toBe(`bpfleet's MaglevService "web"`);
    expect(ownerPins(web)).toBe("/sys/fs/bpf/bpfleet/maglev/web");
  });
});

describe("takeoverAdvice", () => {
  it("for the same kind, offers the rename first: an alias and the old pin name, leaving the host as it is", () => {
    const text = advice({});
    expect(text.split("\n")).toHaveLength(4);
    expect(text).toMatch(/^Pulumi creates a resource under a new name before it deletes the one it replaces .*pulumi\/pulumi#2625.*The ways out:\n/);
    expect(text).toContain(`- If this firewall is XdpFirewall "a" renamed, make them one resource: add the resource option \`aliases: [{ name: "a" }]\``);
    expect(text).toContain(`and the input \`pinName: "a"\`. The next \`pulumi up\` then leaves the host as it is: enforced throughout.`);
  });

  it("for another kind, offers no rename", () => {
    const text = advice({ what: "load balancer" });
    expect(text).not.toContain("aliases");
    expect(text.split("\n")).toHaveLength(3);
    expect(advice({ owner: web })).not.toContain("aliases");
    expect(advice({ owner: web, what: "load balancer" })).toContain(`\`aliases: [{ name: "web" }]\``);
  });

  it("an owner attached alone: both get a chainPriority and the new one depends on the old, so the old moves into the chain first", () => {
    expect(advice({})).toContain(
      `- To run both, or to replace XdpFirewall "a" with no gap in enforcement: in one \`pulumi up\`, give XdpFirewall "a" chainPriority 0 and this firewall chainPriority 1, ` +
        `and give this firewall the resource option \`dependsOn\` naming XdpFirewall "a", so that XdpFirewall "a" moves into the chain first; ` +
        `then, to replace it, remove XdpFirewall "a" from the program and run \`pulumi up\` again.`,
    );
    // The new one asked for a slot already: the old one gets another free one.
    expect(advice({ wanted: 0 })).toContain(`give XdpFirewall "a" a chainPriority too (e.g. 1) and give this firewall the resource option \`dependsOn\``);
    expect(advice({ wanted: 3, free: [3, 5] })).toContain(`a chainPriority too (e.g. 5)`);
    // Slots held by a dispatcher's leftover members are not offered.
    expect(advice({ free: [4, 6] })).toContain(`give XdpFirewall "a" chainPriority 4 and this firewall chainPriority 6`);
  });

  it("an owner in the chain: the new one takes any free slot", () => {
    expect(advice({ ownerSlot: 2, wanted: 2, free: [0, 1, 3, 4, 5, 6, 7] })).toContain(`in one \`pulumi up\`, give this firewall a free chainPriority (0, 1, 3, 4, 5, 6, 7; lower runs first); then, to replace it`);
    expect(advice({ ownerSlot: 1, free: [0, 2] })).toContain(`a free chainPriority (0, 2; lower runs first)`);
  });

  it("leaves the chain out when it has no room, and always offers deleting the old one first, saying the interface goes unenforced", () => {
    for (const t of [{ ownerSlot: 0, free: [] }, { free: [5] }, { wanted: 5, free: [5] }]) {
      const text = advice(t);
      expect(text, JSON.stringify(t)).not.toContain("To run both");
      expect(text).toContain(
        `- Or delete XdpFirewall "a" first, with \`pulumi destroy --target '**pulumi-nodejs:dynamic/bpfleet:XdpFirewall::a'\` (\`pulumi stack --show-urns\` lists the URNs), then run \`pulumi up\`. ` +
          `In between, the interface runs no XDP program.`,
      );
    }
  });

  it("the destroy target matches the old resource's URN, top-level or under a component, and nothing else", () => {
    const target = advice({ owner: web }).match(/--target '([^']+)'/)![1]!;
    const type = typeToken("MaglevService");
    expect(globMatches(target, `urn:pulumi:dev::edge::${type}::web`)).toBe(true);
    expect(globMatches(target, `urn:pulumi:prod::edge::bpfleet:index:Fleet$${type}::web`)).toBe(true);
    expect(globMatches(target, `urn:pulumi:dev::edge::${type}::web2`)).toBe(false);
    expect(globMatches(target, `urn:pulumi:dev::edge::${typeToken("XdpFirewall")}::web`)).toBe(false);
  });
});
