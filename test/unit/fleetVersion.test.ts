// A Fleet of XdpFirewalls sharing one DenyList, under Pulumi's mocks: the host's
// version (and the gate digest built from it) is the list the firewall reports it
// applied (its `denyList` digest and count), not the entries the program declares.
// The SDK is loaded from the package ("bpfleet", its built dist/) as a user's program
// loads it: its dynamic resources serialize their provider, which needs real modules.
import * as pulumi from "@pulumi/pulumi";
import { beforeAll, beforeEach, describe, expect, it } from "vitest";
import * as bpfleet from "bpfleet";
import { digestOf } from "bpfleet/provider/healthGate/digest";
import { canonicalDenyList } from "bpfleet/provider/denyList/entries";
import { canonicalRuleSet } from "bpfleet/provider/tcRuleSet/schema";

const OLD = ["203.0.113.0/24"];
const NEW = ["203.0.113.0/24", "192.0.2.9/32"];
const OLD_REF = { name: "feed", digest: canonicalDenyList(OLD)!.digest, count: 1 };

interface Recorded {
  type: string;
  name: string;
  inputs: Record<string, unknown>;
}

let recorded: Recorded[];
/** Per firewall name: the `denyList` its state reports, when it is not the one declared (a host that kept an older list). */
let applied: Record<string, typeof OLD_REF>;
/** Per policy name: the ingress `ruleSet` its state reports, when it is not the one declared. */
let appliedRuleSets: Record<string, typeof OLD_REF>;
const TIMEOUTS = { tcpEstablished: 21600, tcpTransitory: 120, other: 60 };

// One mock monitor for the whole file: a Fleet registers its outputs after its test has
// its answers, and a monitor replaced per test would not know that Fleet's URN (an
// unhandled rejection, which fails the run).
beforeAll(() => {
  pulumi.runtime.setMocks(
    {
      newResource: (args) => {
        recorded.push({ type: args.type, name: args.name, inputs: args.inputs });
        const state: Record<string, unknown> = { ...args.inputs };
        if (args.type === "pulumi-nodejs:dynamic/bpfleet:XdpFirewall") {
          // As the provider reports it: a list firewall's `deny` output is empty, an inline one's keyed by entry.
          const deny = args.inputs.denyList ? {} : Object.fromEntries((args.inputs.deny as string[]).map((entry) => [entry, "deny"]));
          Object.assign(state, { programId: 7, objectSha256: "ab".repeat(32), attachMode: "generic", attached: true, deny });
          if (applied[args.name]) state.denyList = applied[args.name];
        }
        if (args.type === "pulumi-nodejs:dynamic/bpfleet:TcPolicy") {
          // As the provider reports it: a hook's defaults filled in, a bound hook with no rules of its own.
          const hook = (given: Record<string, unknown> | undefined) => ({ default: "allow", rules: {}, ...(given ?? {}) });
          Object.assign(state, { programs: { ingress: { id: 11, tag: "t" }, egress: { id: 12, tag: "t" } }, objectSha256: "cd".repeat(32), attached: true, stateful: true, timeouts: TIMEOUTS });
          state.ingress = hook(args.inputs.ingress as Record<string, unknown>);
          state.egress = hook(args.inputs.egress as Record<string, unknown>);
          if (appliedRuleSets[args.name]) state.ingress = { ...(state.ingress as object), ruleSet: appliedRuleSets[args.name] };
        }
        if (args.type === "pulumi-nodejs:dynamic/bpfleet:HealthGate") state.checkedAt = "2026-12-05T00:00:00.000Z";
        return { id: `${args.name}-id`, state };
      },
      call: () => ({}),
    },
    "fleetversion",
    "dev",
    false,
  );
});

beforeEach(() => {
  recorded = [];
  applied = {};
  appliedRuleSets = {};
});

const resolved = <T>(output: pulumi.Output<T>) => new Promise<T>((resolve) => output.apply(resolve));

/** A Fleet of 3 hosts (canary h1, then h2 and h3) applying one DenyList; its hosts output and the gates' digest inputs. */
async function fleetWith(entries: string[]) {
  recorded = [];
  const list = new bpfleet.DenyList("feed", { entries });
  const fleet = new bpfleet.Fleet("edge", {
    hosts: ["h1", "h2", "h3"].map((name, i) => ({ name, address: `10.0.0.${i + 1}`, hostKey: "ssh-ed25519 AAAA" })),
    canary: 1,
    waveSize: 2,
    resource: (_host, member) => new bpfleet.XdpFirewall(member.name, { host: member.host, interface: "eth0", denyList: list }, member.opts),
  });
  const hosts = await resolved(fleet.hosts);
  await Promise.all(fleet.gates.map((gate) => resolved(gate.urn)));
  const gates = Object.fromEntries(recorded.filter((r) => r.type === "pulumi-nodejs:dynamic/bpfleet:HealthGate").map((r) => [r.name, r.inputs.digest as string]));
  return { hosts, gates };
}

const versionOf = (ref: typeof OLD_REF) => digestOf({ denyList: { digest: ref.digest, count: ref.count }, interface: "eth0", attachMode: "generic", objectSha256: "ab".repeat(32), programId: 7 });

describe("Fleet: a host's version with a shared DenyList", () => {
  it("is the digest and count of the list the firewall applied; the summary's denyEntries is its count", async () => {
    const { hosts } = await fleetWith(NEW);
    const newRef = { name: "feed", digest: canonicalDenyList(NEW)!.digest, count: 2 };
    for (const name of ["h1", "h2", "h3"]) {
      expect(hosts[name]!.version, name).toBe(versionOf(newRef));
      expect(hosts[name]!.denyEntries, name).toBe(2);
      expect(hosts[name]!.denyListDigest, name).toBe(newRef.digest);
    }
  });

  it("a firewall's `deny` output is still the list's canonical entries (built when read)", async () => {
    const list = new bpfleet.DenyList("feed", { entries: ["192.0.2.9", "203.0.113.0/24"] });
    const fw = new bpfleet.XdpFirewall("fw", { host: { address: "10.0.0.1", hostKey: "ssh-ed25519 AAAA" }, interface: "eth0", denyList: list });
    expect(await resolved(fw.deny)).toEqual({ "192.0.2.9/32": "deny", "203.0.113.0/24": "deny" });
    expect(fw.deny).toBe(fw.deny);
  });

  it("a list change changes every host's version and every wave's gate digest", async () => {
    const before = await fleetWith(OLD);
    const after = await fleetWith(NEW);
    for (const name of ["h1", "h2", "h3"]) expect(after.hosts[name]!.version, name).not.toBe(before.hosts[name]!.version);
    expect(Object.keys(after.gates).sort()).toEqual(["edge-wave0", "edge-wave1"]);
    for (const gate of ["edge-wave0", "edge-wave1"]) {
      expect(after.gates[gate], gate).toMatch(/^[0-9a-f]{64}$/);
      expect(after.gates[gate], gate).not.toBe(before.gates[gate]);
    }
  });

  it("a host whose firewall reports an older list (a later wave after a failed one, then refresh) shows that list's version, not the declared one", async () => {
    applied = { "edge-h3": OLD_REF };
    const { hosts } = await fleetWith(NEW);
    expect(hosts.h3!.version).toBe(versionOf(OLD_REF));
    expect(hosts.h3!.denyEntries).toBe(1);
    expect(hosts.h3!.denyListDigest).toBe(OLD_REF.digest);
    expect(hosts.h2!.version).not.toBe(hosts.h3!.version);
  });

  it("a firewall with inline `deny` keeps the version it had (deny entries, interface, attachment, object, program id)", async () => {
    const fleet = new bpfleet.Fleet("inline", {
      hosts: [{ name: "h1", address: "10.0.0.1", hostKey: "ssh-ed25519 AAAA" }],
      resource: (_host, member) => new bpfleet.XdpFirewall(member.name, { host: member.host, interface: "eth0", deny: OLD }, member.opts),
    });
    const hosts = await resolved(fleet.hosts);
    expect(hosts.h1!.version).toBe(digestOf({ deny: { "203.0.113.0/24": "deny" }, interface: "eth0", attachMode: "generic", objectSha256: "ab".repeat(32), programId: 7 }));
    expect(hosts.h1!.denyEntries).toBe(1);
    expect(hosts.h1!.denyListDigest).toBeUndefined();
  });
});

describe("Fleet: TcPolicies sharing one TcRuleSet (a built-in target)", () => {
  const RULES = ["allow tcp 22", "allow tcp 443"];
  const refOf = (rules: string[]) => ({ name: "edge-rules", digest: canonicalRuleSet(rules)!.digest, count: rules.length });
  const versionOfSet = (ref: typeof OLD_REF) =>
    digestOf({
      ingress: { default: "deny", ruleSet: { digest: ref.digest, count: ref.count } },
      egress: { default: "allow", rules: {} },
      stateful: true,
      timeouts: TIMEOUTS,
      interface: "eth0",
      objectSha256: "cd".repeat(32),
      programIds: { ingress: 11, egress: 12 },
    });

  async function policyFleet(rules: string[], target?: bpfleet.FleetHealthArgs<bpfleet.FleetHost, bpfleet.TcPolicy>["target"]) {
    recorded = [];
    const set = new bpfleet.TcRuleSet("edge-rules", { rules });
    const fleet = new bpfleet.Fleet("pol", {
      hosts: ["h1", "h2", "h3"].map((name, i) => ({ name, address: `10.0.0.${i + 1}`, hostKey: "ssh-ed25519 AAAA" })),
      canary: 1,
      waveSize: 2,
      resource: (_host, member) => new bpfleet.TcPolicy(member.name, { host: member.host, interface: "eth0", stateful: true, ingress: { default: "deny", ruleSet: set } }, member.opts),
      health: target ? { target } : undefined,
    });
    const hosts = await resolved(fleet.hosts);
    await Promise.all(fleet.gates.map((gate) => resolved(gate.urn)));
    const gates = recorded.filter((r) => r.type === "pulumi-nodejs:dynamic/bpfleet:HealthGate");
    return { hosts, gates };
  }

  it("needs no health.target: each host is versioned by the set's digest and count, and checked on its TC ingress hook", async () => {
    const { hosts, gates } = await policyFleet(RULES);
    for (const name of ["h1", "h2", "h3"]) {
      expect(hosts[name]!.version, name).toBe(versionOfSet(refOf(RULES)));
      expect(hosts[name]!.ingressRules).toBe(2);
      expect(hosts[name]!.ingressRuleSetDigest).toBe(refOf(RULES).digest);
    }
    const targets = (gates[0]!.inputs.targets as Record<string, unknown>[])[0]!;
    expect(targets).toMatchObject({ kind: "tc-policy", name: "pol-h1", program: "progs/tc_policy_ingress", hook: { interface: "eth0", type: "tc-ingress" } });
  });

  it("a host whose policy reports an older set (a later wave after a failed one, then refresh) shows that set's version", async () => {
    appliedRuleSets = { "pol-h3": refOf(["allow tcp 22"]) };
    const { hosts } = await policyFleet(RULES);
    expect(hosts.h3!.version).toBe(versionOfSet(refOf(["allow tcp 22"])));
    expect(hosts.h2!.version).toBe(versionOfSet(refOf(RULES)));
  });

  it("a rule changed in the set changes every host's version and every gate's digest", async () => {
    const before = await policyFleet(RULES);
    const after = await policyFleet([...RULES, "allow udp 53"]);
    for (const name of ["h1", "h2", "h3"]) expect(after.hosts[name]!.version).not.toBe(before.hosts[name]!.version);
    for (const [i, gate] of after.gates.entries()) expect(gate.inputs.digest).not.toBe(before.gates[i]!.inputs.digest);
  });

  it("a program's own health.target for its policies is kept", async () => {
    const { hosts } = await policyFleet(RULES, (policy) => ({ kind: "tc-policy", pinName: policy.name, version: { mine: 1 } }));
    expect(hosts.h1!.version).toBe(digestOf({ mine: 1 }));
  });
});
