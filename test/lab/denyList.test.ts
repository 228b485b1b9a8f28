// DenyList + XdpFirewall on a lab host, driving the provider directly (issue 10): a
// firewall applies the list registered by the list's check, the host records what it
// applied, a one-entry update plans from that record (no map dump) and its exec round
// trips are counted, drift is judged against the record, and a version this deployment
// does not hold is refused before anything changes.
import { readFileSync } from "node:fs";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { checkDenyList } from "../../provider/denyList/schema";
import { operations } from "../../provider/operations";
import { closeAllSessions, type Operation } from "../../provider/remote/ssh";
import { clearRegisteredContent, contentDigest, contentText, parseContentText } from "../../provider/sharedContent";
import { xdpFirewallKind as firewall } from "../../provider/xdpFirewall/lifecycle";
import { checkXdpFirewall, type XdpFirewallInputs, type XdpFirewallOutputs } from "../../provider/xdpFirewall/schema";
import { createLab, type Lab, type LabHost } from "./lab";

let lab: Lab;
let privateKey: string;
let host: LabHost;
const counted: Operation[] = [];
const ops = operations(firewall, (op) => counted.push({ ...op, steps: [...op.steps] }));

/** The list's check, as the engine runs it first: registers `entries` (and `olds`). */
function list(entries: string[], olds?: string[]) {
  const result = checkDenyList(olds && { entries: contentText(olds) }, { entries });
  const keys = parseContentText((result.inputs as { entries: string }).entries);
  return { name: "feed", digest: contentDigest(keys), count: keys.length };
}

function inputs(denyList: { name: string; digest: string; count: number }, extra: { lockoutGuard?: boolean } = {}): XdpFirewallInputs {
  const result = checkXdpFirewall({
    host: { address: host.address, hostKey: host.hostKey, connectTimeoutMs: 3000, commandTimeoutMs: 60_000 },
    credentials: { privateKey },
    interface: "eth0",
    name: "fleetfw",
    denyList,
    ...extra,
  });
  if (!result.inputs) throw new Error(JSON.stringify(result.failures));
  return result.inputs as XdpFirewallInputs;
}

const entries = (n: number) => Array.from({ length: n }, (_, i) => `100.64.${(i >>> 8) & 0xff}.${i & 0xff}/32`);
const applied = async () => String((await lab.inHost(host, ["cat", "/var/lib/bpfleet/applied/xdp-firewall/fleetfw"], { reject: false })).stdout);
/** Anything the patch leaves beside the copy (its held base, temporaries): nothing, after a good update. */
const heldOrTemp = async () => String((await lab.inHost(host, ["sh", "-c", "ls -A /var/lib/bpfleet/applied/xdp-firewall | grep -v '^fleetfw$' || true"])).stdout).trim();
const exact = async (address: string) =>
  (await lab.inHost(host, ["bpftool", "map", "lookup", "pinned", "/sys/fs/bpf/bpfleet/xdp-firewall/fleetfw/maps/deny_v4_exact", "key", ...address.split(".")], { reject: false })).exitCode === 0;

beforeAll(async () => {
  lab = await createLab("fleetdl", { hosts: 1 });
  host = lab.hosts[0]!;
  privateKey = readFileSync(lab.privateKeyPath, "utf8");
}, 300_000);

afterAll(async () => {
  closeAllSessions();
  await lab?.destroy();
});

describe("XdpFirewall with a DenyList, on a lab host", () => {
  let outs: XdpFirewallOutputs;
  let dumpsFromRecord = 0;
  const base = entries(1000);

  it("create applies the registered list and records it; state carries the digest, not the entries", async () => {
    clearRegisteredContent();
    const ref = list(base);
    outs = (await ops.create(inputs(ref))).outs;
    expect(outs.deny).toEqual({});
    expect(outs.denyList).toEqual(ref);
    expect(JSON.stringify(outs).length).toBeLessThan(3000);
    // (the lab's runner strips the file's final newline)
    expect(await applied()).toBe([...base].sort().join("\n"));
    expect(await exact("100.64.3.231")).toBe(true);
  });

  it("a one-entry update plans from the host's record (no map dump), in few round trips", async () => {
    clearRegisteredContent();
    const ref = list([...base, "192.0.2.9/32"], base);
    counted.length = 0;
    outs = await ops.update("id", outs, inputs(ref));
    const [update] = counted;
    console.log(`one-entry update: ${update!.execs} exec round trips:\n  ${update!.steps.join("\n  ")}`);
    // Its one map dump is the read-back's (stats map), none of the entries.
    expect(update!.steps.filter((s) => /map dump/.test(s)).length).toBe(1);
    expect(await exact("192.0.2.9")).toBe(true);
    expect((await applied()).split("\n")).toContain("192.0.2.9/32");
    expect(outs.denyList).toEqual(ref);
    // eth0 carries the management session: the guard is armed, and its fresh login carries the read-back.
    // No survey: the update is planned from the state's version, and the change's exec first
    // checks on the host that the plan's assumptions hold (sh/firewall-update-check.sh), then
    // arms the revert and runs the batch; the fresh login carries the disarm, the copy's
    // patch and the read-back. Two execs, and two logins (the pooled one and the guard's).
    expect(update!.execs).toBe(2);
    expect(update!.logins).toBeLessThanOrEqual(2);
    expect(update!.steps[0]).toMatch(/firewall-update-check|bpftool prog show/);
    expect(update!.steps[0]).toMatch(/bpftool batch/);
    // No copy crosses the wire: the survey reads its digest, the update sends the difference.
    expect(update!.steps.filter((s) => /applied-read|cat -- /.test(s))).toEqual([]);
    expect(await heldOrTemp()).toBe("");
  });

  it("with no guard armed, a one-entry update is one exec: the host's check of the plan's assumptions, the batch, the copy's patch and the read-back", async () => {
    clearRegisteredContent();
    const ref = list([...base], [...base, "192.0.2.9/32"]);
    counted.length = 0;
    outs = await ops.update("id", outs, inputs(ref, { lockoutGuard: false }));
    const [update] = counted;
    console.log(`one-entry update, no guard: ${update!.execs} exec round trips:\n  ${update!.steps.join("\n  ")}`);
    // Planned from the state's version, no survey: one exec (sh/firewall-update-check.sh first).
    expect(update!.execs).toBe(1);
    expect(update!.logins).toBeLessThanOrEqual(1); // no fresh login for a guard
    expect(await exact("192.0.2.9")).toBe(false);
    expect(await applied()).toBe([...base].sort().join("\n"));
    expect(await heldOrTemp()).toBe("");
    expect(outs.denyList).toEqual(ref);
    expect(outs.attached).toBe(true);
    expect(outs.programId).toBeGreaterThan(0);
    // And back, for the tests below.
    clearRegisteredContent();
    outs = await ops.update("id", outs, inputs(list([...base, "192.0.2.9/32"], [...base]), { lockoutGuard: false }));
    expect(await exact("192.0.2.9")).toBe(true);
  });

  it("a host that is not on the version the state says (it missed an update) refuses the planned exec, changing nothing, and converges from what it has", async () => {
    clearRegisteredContent();
    // The state says base + .9 (registered below, with the new version); the host
    // holds base + .9 without 100.64.0.5, in its maps and its copy, as if an update
    // that removed it had applied there and the stack's record were older.
    await lab.inHost(host, ["bpftool", "map", "delete", "pinned", "/sys/fs/bpf/bpfleet/xdp-firewall/fleetfw/maps/deny_v4_exact", "key", "100", "64", "0", "5"]);
    await lab.inHost(host, ["sh", "-c", "grep -vx '100.64.0.5/32' /var/lib/bpfleet/applied/xdp-firewall/fleetfw > /tmp/fleetfw.copy; mv /tmp/fleetfw.copy /var/lib/bpfleet/applied/xdp-firewall/fleetfw"]);
    expect(await exact("100.64.0.5")).toBe(false);
    const ref = list([...base, "192.0.2.9/32", "192.0.2.11/32"], [...base, "192.0.2.9/32"]);
    counted.length = 0;
    const log = vi.spyOn(console, "log");
    try {
      outs = await ops.update("id", outs, inputs(ref, { lockoutGuard: false }));
      // Why it took the slow path, as the host's check said it (the provider's note).
      const note = log.mock.calls.map((args) => args.join(" ")).filter((line) => /planned from the state/.test(line));
      expect(note).toEqual([
        `bpfleet: root@${host.address}: firewall fleetfw: the update planned from the state did not apply (the applied copy is version ${contentDigest([...base, "192.0.2.9/32"].filter((e) => e !== "100.64.0.5/32"))}, not ${contentDigest([...base, "192.0.2.9/32"])}); surveying the host and planning from what it has (one exec more).`,
      ]);
    } finally {
      log.mockRestore();
    }
    const [update] = counted;
    console.log(`update of a host off the state's version: ${update!.execs} exec round trips:\n  ${update!.steps.join("\n  ")}`);
    // The first exec stopped at the check (its batch never ran); the survey followed,
    // found a version this deployment does not hold, read the copy, and planned from it:
    // 100.64.0.5 comes back with .11.
    expect(update!.steps[0]).toMatch(/bpftool batch/);
    expect(update!.steps[2]).toBe("script (cat)");
    // Its map dumps (past the refused exec) are the survey's and the read-back's, none of
    // the entries: the baseline of the tests below (the repair, which must dump the
    // entries, shows one more).
    dumpsFromRecord = update!.steps.slice(1).filter((s) => /map dump/.test(s)).length;
    // Refused exec, survey, the copy's read, the change (with patch and read-back).
    expect(update!.execs).toBe(4);
    expect(await exact("100.64.0.5")).toBe(true);
    expect(await exact("192.0.2.11")).toBe(true);
    expect(await applied()).toBe([...base, "192.0.2.9/32", "192.0.2.11/32"].sort().join("\n"));
    expect(await heldOrTemp()).toBe("");
    expect(outs.denyList).toEqual(ref);
    // And back to base + .9, for the tests below (planned from the state again).
    clearRegisteredContent();
    outs = await ops.update("id", outs, inputs(list([...base, "192.0.2.9/32"], [...base, "192.0.2.9/32", "192.0.2.11/32"]), { lockoutGuard: false }));
    expect(await exact("192.0.2.11")).toBe(false);
  });

  it("a host whose copy is a version this deployment does not hold (it missed an update) is planned from its copy, read whole, and patched", async () => {
    clearRegisteredContent();
    // Only the new version is registered: the host's (base + .9) is unknown here.
    const ref = list([...base, "192.0.2.9/32", "192.0.2.10/32"]);
    counted.length = 0;
    outs = await ops.update("id", outs, inputs(ref));
    const [update] = counted;
    console.log(`update from an unknown version: ${update!.execs} exec round trips:\n  ${update!.steps.join("\n  ")}`);
    expect(update!.steps.filter((s) => /map dump/.test(s)).length).toBe(dumpsFromRecord);
    expect(await exact("192.0.2.10")).toBe(true);
    expect(await exact("192.0.2.9")).toBe(true);
    expect(await applied()).toBe([...base, "192.0.2.9/32", "192.0.2.10/32"].sort().join("\n"));
    expect(await heldOrTemp()).toBe("");
    expect(outs.denyList).toEqual(ref);
  });

  it("read reports only the stray and missing entries against the record; update repairs them", async () => {
    await lab.inHost(host, ["bpftool", "map", "update", "pinned", "/sys/fs/bpf/bpfleet/xdp-firewall/fleetfw/maps/deny_v4_exact", "key", "192", "0", "2", "77", "value", "1"]);
    await lab.inHost(host, ["bpftool", "map", "delete", "pinned", "/sys/fs/bpf/bpfleet/xdp-firewall/fleetfw/maps/deny_v4_exact", "key", "100", "64", "0", "7"]);
    const read = await ops.read("id", outs);
    expect(read!.outs.denyDrift).toEqual({ "100.64.0.7/32": "missing", "192.0.2.77/32": "stray" });
    expect(read!.inputs.denyDrift).toEqual(read!.outs.denyDrift);
    expect(read!.outs.denyList).toEqual(outs.denyList);
    // The next up: the program's inputs carry no drift, so the firewall updates from a dump.
    clearRegisteredContent();
    const ref = list([...base, "192.0.2.9/32"]);
    counted.length = 0;
    outs = await ops.update("id", read!.outs, inputs(ref));
    expect(counted[0]!.steps.filter((s) => /map dump/.test(s)).length).toBe(dumpsFromRecord + 1);
    expect(await exact("192.0.2.77")).toBe(false);
    expect(await exact("100.64.0.7")).toBe(true);
    expect(outs.denyDrift).toBeUndefined();
    expect((await ops.read("id", outs))!.outs.denyDrift).toBeUndefined();
  });

  it("a version this deployment does not hold (a --target without the list) is refused, naming the list; nothing changes", async () => {
    clearRegisteredContent();
    const unknown = { name: "feed", digest: contentDigest([...base, "192.0.2.10/32"]), count: base.length + 1 };
    await expect(ops.update("id", outs, inputs(unknown))).rejects.toThrow(/DenyList 'feed' \(1001 entries\), which is not part of this deployment.*target the DenyList resource 'feed' too\. Nothing was changed\./s);
    expect(await exact("192.0.2.10")).toBe(false);
    // The version the host already holds needs no list: a program upgrade, say, works from the record.
    const same = await ops.update("id", outs, inputs(outs.denyList!));
    expect(same.denyList).toEqual(outs.denyList);
  });

  it("delete removes the pins and the record", async () => {
    await ops.delete("id", outs);
    expect(await applied()).toBe("");
    expect(String((await lab.inHost(host, ["sh", "-c", "ls /sys/fs/bpf/bpfleet 2>/dev/null || true"])).stdout).trim()).toBe("");
  });
});
