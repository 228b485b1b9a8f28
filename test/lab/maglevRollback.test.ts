// Issue 15, finding 1 for MaglevService: a batch that fails half way on an
// existing service is rolled back. Each line of the batch is valid on its own by
// design (DESIGN.md, "Maglev updates never point at nothing"), but the state
// still records the old inputs, so a host left half way would read as
// "unchanged" when the user goes back to them.
//
// The failure is a real one: lb_vips (a hash of LB_MAX_VIPS entries) is filled
// by hand to one short of full, so the update's second new VIP fails with E2BIG
// after its new backend records, its table slots and its first VIP were written.
import { readFileSync } from "node:fs";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { encodeVip, encodeVipKey, LB_MAX_VIPS, MAPS } from "../../provider/maglev/codec";
import { maglevServiceKind } from "../../provider/maglev/lifecycle";
import { checkMaglevService, type MaglevServiceInputs, type MaglevServiceOutputs } from "../../provider/maglev/schema";
import { operations } from "../../provider/operations";
import { batchText } from "../../provider/remote/mapOperations";
import { closeAllSessions } from "../../provider/remote/ssh";
import { hostSnapshot, snapshotDiff } from "./faults";
import { createLab, type Lab, type LabHost } from "./lab";

const VIPS = "/sys/fs/bpf/bpfleet/maglev/web/maps/" + MAPS.vips;
const ops = operations(maglevServiceKind);

let lab: Lab;
let h1: LabHost;
let privateKey: string;

function inputs(backends: LabHost[], vips: string[], expect: string[] = []): MaglevServiceInputs {
  const result = checkMaglevService({
    host: { address: h1.address, hostKey: h1.hostKey, connectTimeoutMs: 5000, commandTimeoutMs: 120_000 },
    credentials: { privateKey },
    interface: "eth0",
    name: "web",
    vips,
    backends: backends.flatMap((h) => [h.address, h.address6]),
    mode: "dsr",
    expect,
  });
  if (!result.inputs) throw new Error(JSON.stringify(result.failures));
  return result.inputs as MaglevServiceInputs;
}

const OLD_VIPS = ["198.51.100.10:80/tcp", "[2001:db8:100::10]:80/tcp"];
const NEW_VIPS = [...OLD_VIPS, "198.51.100.10:443/tcp", "198.51.100.10:8443/tcp"];

/** VIPs someone added by hand, all with one counter index (so the plan still finds free ones). */
function driftVips(count: number, op: "update" | "delete" = "update"): string {
  const lines = Array.from({ length: count }, (_, i) => {
    const key = encodeVipKey({ address: `203.0.113.${1 + (i % 250)}`, port: 1000 + i, protocol: "tcp" });
    return op === "delete"
      ? { op, map: VIPS, key }
      : { op, map: VIPS, key, value: encodeVip({ vipIndex: 200, tableOffset: 0, tableSize: 65537, mode: "dsr", flowTable: false }) };
  });
  return batchText(lines);
}

beforeAll(async () => {
  lab = await createLab("faultsm", { hosts: 3, clients: 0 });
  h1 = lab.hosts[0]!;
  privateKey = readFileSync(lab.privateKeyPath, "utf8");
}, 300_000);

afterAll(async () => {
  closeAllSessions();
  await lab?.destroy();
});

describe("MaglevService: a batch that fails half way on an existing service", () => {
  let made: { id: string; outs: MaglevServiceOutputs };

  it("leaves the host exactly as before (records, table slots, VIPs, marker), and the error names the batch", async () => {
    const [, h2, h3] = lab.hosts as [LabHost, LabHost, LabHost];
    made = await ops.create(inputs([h2], OLD_VIPS));
    await lab.inHost(h1, ["sh", "-c", 'printf %s "$1" | bpftool batch file -', "fill", driftVips(LB_MAX_VIPS - OLD_VIPS.length - 1)]);
    const before = await hostSnapshot(lab, h1);

    const error = await ops.update(made.id, made.outs, inputs([h2, h3], NEW_VIPS)).then(
      () => undefined,
      (err: Error) => err,
    );
    expect(error, "the update must fail: lb_vips is full").toBeDefined();
    const firstLine = error!.message.split("\n")[0]!;
    expect(firstLine).toMatch(/update failed at step \d+ \(bpftool batch\)/);

    const after = await hostSnapshot(lab, h1);
    expect(after, `the host differs from before the update:\n${snapshotDiff(before, after)}`).toBe(before);
  }, 300_000);

  it("reading it back finds the old backends and the tables the state records, so going back to the old inputs is truly unchanged", async () => {
    const outs = (await ops.read(made.id, made.outs))!.outs;
    expect(Object.keys(outs.backends).sort()).toEqual(Object.keys(made.outs.backends).sort());
    expect(outs.tableDigest).toBe(made.outs.tableDigest);
    expect(maglevServiceKind.pendingChanges!(outs, made.outs).filter((p) => !p.startsWith("BPF object"))).toEqual([]);
  }, 120_000);

  it("once the hand-made VIPs are gone, the same update converges", async () => {
    const [, h2, h3] = lab.hosts as [LabHost, LabHost, LabHost];
    await lab.inHost(h1, ["sh", "-c", 'printf %s "$1" | bpftool batch file -', "clear", driftVips(LB_MAX_VIPS - OLD_VIPS.length - 1, "delete")]);
    const updated = await ops.update(made.id, made.outs, inputs([h2, h3], NEW_VIPS));
    expect(Object.keys(updated.vips).sort()).toEqual([...NEW_VIPS].sort());
    expect(Object.keys(updated.backends)).toHaveLength(4);
    await ops.delete(made.id, updated);
  }, 300_000);
});

describe("MaglevService: an update whose packet expectation is missed", () => {
  it("is reverted whole: the host's revert swaps the program back and the tables the change wrote come back too", async () => {
    const [, h2, h3] = lab.hosts as [LabHost, LabHost, LabHost];
    const made = await ops.create(inputs([h2], OLD_VIPS));
    const before = await hostSnapshot(lab, h1);
    // The balancer passes a packet to no VIP, so an expectation that it drops one is
    // missed whatever the change: the change below adds a backend and two VIPs.
    const missed = "tcp 198.51.100.7:40000 > 198.51.100.99:80: drop";
    const error = await ops.update(made.id, made.outs, inputs([h2, h3], NEW_VIPS, [missed])).then(
      () => undefined,
      (err: Error) => err,
    );
    expect(error, "the update must fail: its expectation is missed").toBeDefined();
    expect(error!.message).toMatch(/1 of 1 packet expectations missed after the change, so the host reverted it at once/);
    expect(error!.message).not.toMatch(/Putting back what the revert does not cover failed/);
    const after = await hostSnapshot(lab, h1);
    expect(after, `the host differs from before the update:\n${snapshotDiff(before, after)}`).toBe(before);
    await ops.delete(made.id, made.outs);
  }, 300_000);
});
