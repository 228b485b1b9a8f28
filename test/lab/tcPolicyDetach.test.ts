// Issue 15: a TcPolicy change to `attached: false` is guarded like any other
// change. Taking the filters off is armed with the host's revert timer first, and
// the revert (or the provider's rollback) puts the filters back: a detach that
// dies half way leaves the policy enforced, as the state still says.
//
// The cut is injected at the step named "tc filter" (the batch that deletes the
// filters), after it ran on the host (BPFLEET_FAULT mode cut-after): the
// provider never hears back, so only the host's own timer can undo it.
import { readFileSync } from "node:fs";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { operations } from "../../provider/operations";
import { closeAllSessions } from "../../provider/remote/ssh";
import { tcPolicyKind } from "../../provider/tcPolicy/lifecycle";
import { checkTcPolicy, type TcPolicyInputs } from "../../provider/tcPolicy/schema";
import { hostSnapshot, pendingGuards, snapshotDiff, waitForGuards } from "./faults";
import { createLab, type Lab, type LabHost } from "./lab";

const REVERT_SECONDS = 10;
const policy = operations(tcPolicyKind);

let lab: Lab;
let h1: LabHost;
let privateKey: string;

function inputs(patch: Record<string, unknown> = {}): TcPolicyInputs {
  const result = checkTcPolicy({
    host: { address: h1.address, hostKey: h1.hostKey, connectTimeoutMs: 3000, commandTimeoutMs: 60_000 },
    credentials: { privateKey },
    interface: "eth0",
    name: "pol",
    stateful: true,
    ingress: { default: "deny", rules: ["allow tcp 22", "allow tcp 8080"] },
    lockoutRevertSeconds: REVERT_SECONDS,
    ...patch,
  });
  if (!result.inputs) throw new Error(JSON.stringify(result.failures));
  return result.inputs as TcPolicyInputs;
}

async function ourFilters(): Promise<number> {
  let n = 0;
  for (const hook of ["ingress", "egress"]) {
    const filters = JSON.parse(String((await lab.inHost(h1, ["tc", "-j", "filter", "show", "dev", "eth0", hook])).stdout) || "[]") as { options?: { bpf_name?: string } }[];
    n += filters.filter((f) => f.options?.bpf_name !== undefined).length;
  }
  return n;
}

beforeAll(async () => {
  lab = await createLab("faultst", { hosts: 1, clients: 0 });
  h1 = lab.hosts[0]!;
  privateKey = readFileSync(lab.privateKeyPath, "utf8");
}, 300_000);

afterAll(async () => {
  delete process.env.BPFLEET_FAULT;
  closeAllSessions();
  await lab?.destroy();
});

describe("TcPolicy: attached: false is a guarded change", () => {
  it("a detach cut after its filters went is undone by the host's revert timer: the filters are back, the host exactly as before", async () => {
    const created = await policy.create(inputs());
    expect(await ourFilters()).toBe(2);
    const before = await hostSnapshot(lab, h1);

    process.env.BPFLEET_FAULT = "tc-policy:update:@tc filter:cut-after";
    let error: Error | undefined;
    try {
      await policy.update(created.id, created.outs, inputs({ attached: false }));
    } catch (err) {
      error = err as Error;
    } finally {
      delete process.env.BPFLEET_FAULT;
    }
    expect(error, "the injected cut must fail the update").toBeDefined();
    expect(error!.message.split("\n")[0]).toMatch(/update failed at step \d+ \(tc filter\)/);
    // The detach did run on the host; the armed timer is what brings the filters back.
    expect(await ourFilters()).toBe(0);
    expect(await pendingGuards(lab, h1)).toBe(1);
    await waitForGuards(lab, h1, (REVERT_SECONDS + 8) * 1000);
    expect(await ourFilters()).toBe(2);
    const after = await hostSnapshot(lab, h1);
    expect(after, snapshotDiff(before, after)).toBe(before);

    // The next `up` retries the same update from the same recorded state, and it converges.
    const detached = await policy.update(created.id, created.outs, inputs({ attached: false }));
    expect(await ourFilters()).toBe(0);
    expect(await pendingGuards(lab, h1)).toBe(0);
    await policy.delete(created.id, detached);
  }, 120_000);
});
