// TcRuleSet + TcPolicy on two lab hosts, driving the provider directly (issue 10): both
// policies bind one rule set, registered by the set's check; their states carry only the
// set's digest and count; each host records the rules it applied; a hand-made change on
// one host is found by read on that host only, as the stray and missing rules, and the
// next update removes it (real packets prove it); an inline policy moves to the set with
// no map write; a set version this deployment does not hold comes from the host's own
// maps when they hold it, and is refused otherwise before anything changes.
import { readFileSync } from "node:fs";
import { setTimeout as sleep } from "node:timers/promises";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { checkInputs } from "../../provider/dynamicAdapter";
import { healthGateKind } from "../../provider/healthGate/lifecycle";
import { healthGateSchema, type HealthGateInputs } from "../../provider/healthGate/schema";
import { operations } from "../../provider/operations";
import { closeAllSessions, type Operation } from "../../provider/remote/ssh";
import { clearRegisteredContent } from "../../provider/sharedContent";
import { encodeL4Key, IPPROTO, MAPS } from "../../provider/tcPolicy/codec";
import { tcPolicyKind, type TcPolicyState } from "../../provider/tcPolicy/lifecycle";
import { ALTERED } from "../../provider/tcPolicy/report";
import { checkTcPolicy, type TcPolicyInputs } from "../../provider/tcPolicy/schema";
import { canonicalRuleSet, checkTcRuleSet } from "../../provider/tcRuleSet/schema";
import { createLab, type Lab, type LabClient, type LabHost, type Run } from "./lab";

let lab: Lab;
let privateKey: string;
let hosts: LabHost[];
let client: LabClient;
const listeners: Run[] = [];
const counted: Operation[] = [];
const policy = operations(tcPolicyKind, (op) => counted.push({ ...op, steps: [...op.steps] }));
const PIN = "/sys/fs/bpf/bpfleet/tc-policy/edge";
const RULES = ["allow tcp 22", "allow tcp 8080", "allow udp 5000"];

/** The set's check, as the engine runs it before any policy that binds it: registers `rules` (and `olds`). */
function ruleSet(rules: string[], olds?: string[]) {
  const result = checkTcRuleSet(olds && { rules: canonicalRuleSet(olds)!.text }, { rules });
  if (!result.inputs) throw new Error(JSON.stringify(result.failures));
  const c = canonicalRuleSet(rules)!;
  return { name: "edge-rules", digest: c.digest, count: c.count };
}

function inputs(host: LabHost, ingress: Record<string, unknown>): TcPolicyInputs {
  const result = checkTcPolicy({
    host: { address: host.address, hostKey: host.hostKey, connectTimeoutMs: 3000, commandTimeoutMs: 60_000 },
    credentials: { privateKey },
    interface: "eth0",
    name: "edge",
    stateful: true,
    ingress: { default: "deny", ...ingress },
  });
  if (!result.inputs) throw new Error(JSON.stringify(result.failures));
  return result.inputs as TcPolicyInputs;
}

const text = async (host: LabHost, argv: string[]) => String((await lab.inHost(host, argv, { reject: false })).stdout);
const applied = (host: LabHost) => text(host, ["cat", "/var/lib/bpfleet/applied/tc-policy/edge"]);
const rulesMap = (host: LabHost) => text(host, ["bpftool", "-j", "map", "dump", "pinned", `${PIN}/maps/${MAPS.rules}`]);

async function reaches(host: LabHost, port: number): Promise<boolean> {
  const token = `t-${port}-${Math.random().toString(36).slice(2)}`;
  const r = await lab.inClient(client, ["socat", "-T", "2", "-", `TCP4:${host.address}:${port},connect-timeout=2`], { input: `${token}\n`, reject: false, timeout: 10_000 });
  return String(r.stdout).includes(token);
}

beforeAll(async () => {
  lab = await createLab("rset", { hosts: 2, clients: 1 });
  privateKey = readFileSync(lab.privateKeyPath, "utf8");
  hosts = lab.hosts;
  client = lab.clients[0]!;
  for (const host of hosts) for (const port of [8080, 8081]) listeners.push(lab.inHost(host, ["socat", `TCP-LISTEN:${port},reuseaddr,fork`, "EXEC:cat"], { reject: false }));
  await sleep(500);
}, 300_000);

afterAll(async () => {
  for (const l of listeners) l.kill("SIGTERM");
  closeAllSessions();
  await lab?.destroy();
});

describe("TcPolicy bound to a TcRuleSet, on two lab hosts", () => {
  const outs: TcPolicyState[] = [];

  it("an inline policy moves to the set holding the same rules with no map write; its state then carries the set's ref, not the rules", async () => {
    for (const host of hosts) outs.push((await policy.create(inputs(host, { rules: RULES }))).outs);
    const before = await Promise.all(hosts.map(rulesMap));
    clearRegisteredContent();
    const ref = ruleSet(RULES);
    for (const [i, host] of hosts.entries()) {
      outs[i] = await policy.update("id", outs[i]!, inputs(host, { ruleSet: ref }));
      expect(outs[i]!.ingress).toEqual({ default: "deny", rules: {}, ruleSet: ref });
      expect(JSON.stringify(outs[i]!.ruleHits)).not.toContain("8080");
      expect(await applied(host)).toBe(["ingress allow tcp 22", "ingress allow tcp 8080", "ingress allow udp 5000"].join("\n"));
      expect(await reaches(host, 8080)).toBe(true);
      expect(await reaches(host, 8081)).toBe(false);
    }
    // The same rule descriptors at the same slots: nothing was rewritten, so nothing went unenforced.
    expect(await Promise.all(hosts.map(rulesMap))).toEqual(before);
  }, 180_000);

  it("one rule added to the set reaches both hosts; each state stays small and names only the new digest", async () => {
    clearRegisteredContent();
    const ref = ruleSet([...RULES, "allow tcp 8081"], RULES);
    for (const [i, host] of hosts.entries()) {
      outs[i] = await policy.update("id", outs[i]!, inputs(host, { ruleSet: ref }));
      expect(outs[i]!.ingress.ruleSet).toEqual(ref);
      expect(await reaches(host, 8081)).toBe(true);
      expect(JSON.stringify(outs[i]).length).toBeLessThan(4000);
    }
  }, 120_000);

  it("a Fleet's health gate checks each policy's ingress program on its TC ingress hook (the target Fleet builds for a TcPolicy)", async () => {
    const gate = (programIds: number[]) => {
      const result = checkInputs(healthGateSchema, {
        fleet: "pol",
        wave: 0,
        targets: hosts.map((h) => ({ host: { address: h.address, hostKey: h.hostKey, connectTimeoutMs: 3000 }, kind: "tc-policy", name: "edge", program: "progs/tc_policy_ingress", hook: { interface: "eth0", type: "tc-ingress" } })),
        programIds,
        credentials: hosts.map(() => ({ privateKey })),
        digest: "0".repeat(64),
        probeAttempts: 1,
      });
      if (!result.inputs) throw new Error(JSON.stringify(result.failures));
      return result.inputs as HealthGateInputs;
    };
    const ids = outs.map((o) => o.programs.ingress.id);
    const passed = await healthGateKind.create(gate(ids));
    expect(passed.outs.reports.map((r) => r.programId)).toEqual(ids);
    await expect(healthGateKind.create(gate([ids[0]!, ids[1]! + 1000]))).rejects.toThrow(new RegExp(`the pinned program is id ${ids[1]}, but the resource reported id ${ids[1]! + 1000}`));
  }, 120_000);

  it("a rule broken by hand on one host is reported by read on that host only, as the difference; the next update repairs it", async () => {
    const [h1, h2] = hosts as [LabHost, LabHost];
    const l4Key = encodeL4Key({ direction: "ingress", protocol: IPPROTO.TCP, port: 8080, prefixLength: 32 });
    await lab.inHost(h2, ["bpftool", "map", "delete", "pinned", `${PIN}/maps/${MAPS.l4}`, "key", "hex", ...Buffer.from(l4Key).toString("hex").match(/../g)!]);
    expect(await reaches(h2, 8080)).toBe(false);

    const read1 = await policy.read("id", outs[0]!);
    expect(read1!.inputs.ingress).toEqual(outs[0]!.ingress);
    const read2 = await policy.read("id", outs[1]!);
    expect(read2!.inputs.ingress.ruleSet).toEqual(outs[1]!.ingress.ruleSet);
    expect(read2!.inputs.ingress.rules).toEqual({});
    expect(read2!.inputs.ingress.drift).toEqual({ "allow tcp 8080": "missing", [`allow tcp 8080 ${ALTERED}`]: "stray" });

    const ref = outs[1]!.ingress.ruleSet!;
    clearRegisteredContent();
    ruleSet([...RULES, "allow tcp 8081"]);
    outs[1] = await policy.update("id", read2!.outs, inputs(h2, { ruleSet: ref }));
    expect(outs[1]!.ingress).toEqual({ default: "deny", rules: {}, ruleSet: ref });
    expect(await reaches(h2, 8080)).toBe(true);
    expect((await policy.read("id", outs[1]!))!.inputs.ingress.drift).toBeUndefined();
    expect(await reaches(h1, 8080)).toBe(true);
  }, 120_000);

  it("`up --target` without the set: the version the host holds is read from its maps; one it does not hold is refused, nothing changed", async () => {
    const h1 = hosts[0]!;
    clearRegisteredContent();
    const same = outs[0]!.ingress.ruleSet!;
    const again = await policy.update("id", { ...outs[0]!, ingress: { ...outs[0]!.ingress, drift: { "x": "stray" } } }, inputs(h1, { ruleSet: same }));
    expect(again.ingress.ruleSet).toEqual(same);
    const unknown = { ...same, digest: "b".repeat(64) };
    const before = await rulesMap(h1);
    await expect(policy.update("id", outs[0]!, inputs(h1, { ruleSet: unknown }))).rejects.toThrow(/must apply version bbbbbbbbbbbb of TcRuleSet 'edge-rules'.*target the TcRuleSet resource 'edge-rules' too\. Nothing was changed\./);
    expect(await rulesMap(h1)).toBe(before);
  }, 120_000);

  it("delete removes the policy and the host's record of what it applied", async () => {
    for (const [i, host] of hosts.entries()) {
      await policy.delete("id", outs[i]!);
      expect(await text(host, ["ls", "/var/lib/bpfleet/applied/tc-policy"])).toBe("");
      expect(await reaches(host, 8081)).toBe(true);
    }
  }, 120_000);
});
