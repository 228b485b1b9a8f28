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
import { LatencyProxy } from "./faults";
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

interface Extra {
  lockoutGuard?: boolean;
  /** Where the provider connects (default: the host's sshd). */
  via?: { address: string; port: number };
  interface?: string;
  name?: string;
  mode?: string;
}

function inputs(denyList: { name: string; digest: string; count: number }, { via, ...extra }: Extra = {}): XdpFirewallInputs {
  const result = checkXdpFirewall({
    host: { address: via?.address ?? host.address, port: via?.port ?? host.port, hostKey: host.hostKey, connectTimeoutMs: 3000, commandTimeoutMs: 60_000 },
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
const exact = async (address: string, pin = "fleetfw") =>
  (await lab.inHost(host, ["bpftool", "map", "lookup", "pinned", `/sys/fs/bpf/bpfleet/xdp-firewall/${pin}/maps/deny_v4_exact`, "key", ...address.split(".")], { reject: false })).exitCode === 0;

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

// Issue 10, behind NAT, a TCP proxy or a port-forwarding bastion: the address the host
// sees the management session come from ($SSH_CONNECTION) is not this end's socket
// address, so the update planned without a survey used to be refused by the host's
// check every time (one exec more, then the survey). The firewall now records the
// address the host reported (`managementSession`), and the check accepts it.
describe("XdpFirewall with a DenyList, reached through a TCP forwarder", () => {
  let proxy: LatencyProxy;
  let via: { address: string; port: number };
  let outs: XdpFirewallOutputs;
  const base = entries(200);
  const notes: string[] = [];

  beforeAll(async () => {
    // The forwarder listens on 127.0.0.1 in the test's namespace and connects to the
    // host's sshd from the lab bridge's address: the two ends see different peers.
    proxy = new LatencyProxy({ address: host.address, port: host.port }, 0);
    via = { address: "127.0.0.1", port: await proxy.listen() };
    vi.spyOn(console, "log").mockImplementation((...args: unknown[]) => void notes.push(args.map(String).join(" ")));
  });

  afterAll(async () => {
    vi.restoreAllMocks();
    closeAllSessions();
    await proxy?.close();
  });

  const update = async (ref: ReturnType<typeof list>, olds: XdpFirewallOutputs, extra: Extra = {}) => {
    counted.length = 0;
    notes.length = 0;
    const result = await ops.update("id", olds, inputs(ref, { via, name: "natfw", ...extra }));
    return { outs: result, op: counted[0]!, notes: notes.filter((n) => /planned from the state/.test(n)) };
  };

  it("create records the session as the host saw it: the bridge's address, over eth0", async () => {
    clearRegisteredContent();
    outs = (await ops.create(inputs(list(base), { via, name: "natfw", lockoutGuard: false }))).outs;
    // What sshd puts in the environment of a login from this namespace (as the forwarder's is).
    const seen = String((await lab.ssh(host, ["sh", "-c", 'printf %s "$SSH_CONNECTION"'])).stdout).split(" ")[0];
    expect(seen).toBe(lab.gateway4);
    expect(outs.managementSession).toEqual({ address: lab.gateway4, interface: "eth0" });
  });

  it("a state without the record (an earlier release) takes the survey once, saying why, and records it; the next one-entry update is one exec", async () => {
    const { managementSession: _none, ...earlier } = outs;
    clearRegisteredContent();
    const first = await update(list([...base, "192.0.2.21/32"], base), earlier as XdpFirewallOutputs, { lockoutGuard: false });
    console.info(`through a forwarder, no record: ${first.op.execs} exec round trips:\n  ${first.op.steps.join("\n  ")}`);
    // The planned exec, refused by the host's check before its batch; the survey; the change.
    expect(first.op.steps[0]).toMatch(/bpftool batch/);
    expect(first.op.execs).toBe(3);
    expect(first.notes).toHaveLength(1);
    expect(first.notes[0]).toContain(`firewall natfw: the update planned from the state did not apply (the management session comes from ${lab.gateway4}, not from 127.0.0.1 as the provider expected); surveying the host`);
    expect(first.outs.managementSession).toEqual({ address: lab.gateway4, interface: "eth0" });
    expect(await exact("192.0.2.21", "natfw")).toBe(true);

    clearRegisteredContent();
    const second = await update(list([...base, "192.0.2.21/32", "192.0.2.22/32"], [...base, "192.0.2.21/32"]), first.outs, { lockoutGuard: false });
    console.info(`through a forwarder, with the record: ${second.op.execs} exec round trips:\n  ${second.op.steps.join("\n  ")}`);
    expect(second.op.execs).toBe(1);
    expect(second.op.logins).toBeLessThanOrEqual(1);
    expect(second.notes).toEqual([]);
    expect(await exact("192.0.2.22", "natfw")).toBe(true);
    expect(second.outs.managementSession).toEqual({ address: lab.gateway4, interface: "eth0" });
    outs = second.outs;
  });

  it("with the guard on, two execs and two logins, as without a forwarder", async () => {
    clearRegisteredContent();
    const guarded = await update(list([...base, "192.0.2.21/32"], [...base, "192.0.2.21/32", "192.0.2.22/32"]), outs);
    expect(guarded.op.execs).toBe(2);
    expect(guarded.op.logins).toBeLessThanOrEqual(2);
    expect(guarded.notes).toEqual([]);
    expect(await exact("192.0.2.22", "natfw")).toBe(false);
    outs = guarded.outs;
  });

  it("a record that names another interface than the one the host routes the session over is refused, and the survey arms the guard", async () => {
    // Safety: the record would plan no guard (the session on natv0, not on the
    // firewall's eth0); the host routes it over eth0, so its check refuses the plan
    // and the survey, seeing eth0, arms the guard and proves a fresh login.
    clearRegisteredContent();
    const stale = { ...outs, managementSession: { address: lab.gateway4, interface: "natv0" } };
    const refused = await update(list([...base, "192.0.2.21/32", "192.0.2.23/32"], [...base, "192.0.2.21/32"]), stale);
    console.info(`through a forwarder, a record naming another interface: ${refused.op.execs} exec round trips:\n  ${refused.op.steps.join("\n  ")}`);
    expect(refused.notes).toEqual([expect.stringContaining(`(the management session from ${lab.gateway4} is routed over eth0, not natv0)`)]);
    // The refused exec, the survey, the change under the armed revert, and the disarm
    // carried by the guard's fresh login (the pooled login is open already): one exec
    // more than the same update unguarded, above.
    expect(refused.op.execs).toBe(4);
    expect(refused.op.logins).toBeGreaterThanOrEqual(1);
    expect(refused.op.steps[3]).toMatch(/kill/);
    expect(refused.outs.managementSession).toEqual({ address: lab.gateway4, interface: "eth0" });
    expect(await exact("192.0.2.23", "natfw")).toBe(true);
    outs = refused.outs;
  });

  it("a deny entry covering the recorded address is refused before anything changes, by the survey, as before", async () => {
    clearRegisteredContent();
    const covering = list([...base, "192.0.2.21/32", "192.0.2.23/32", `${lab.gateway4}/32`], [...base, "192.0.2.21/32", "192.0.2.23/32"]);
    counted.length = 0;
    notes.length = 0;
    await expect(ops.update("id", outs, inputs(covering, { via, name: "natfw" }))).rejects.toThrow(new RegExp(`would drop ${lab.gateway4.replace(/\./g, "\\.")}, the address this provider's SSH session comes from.*Nothing was changed\\.`, "s"));
    expect(notes.some((n) => n.includes(`a deny entry covers ${lab.gateway4}, an address the management session may come from`))).toBe(true);
    expect(await exact(lab.gateway4, "natfw")).toBe(false);
  });

  it("read keeps the record in the outputs and reports no input for it", async () => {
    const read = await ops.read("id", outs);
    expect(read!.outs.managementSession).toEqual({ address: lab.gateway4, interface: "eth0" });
    expect("managementSession" in read!.inputs).toBe(false);
    await ops.delete("id", outs);
  });
});

// Issue 10, the lockout guard on a firewall whose interface does not carry the
// management session: the planned update assumed the firewall's interface, so the
// host's check refused it every time (one exec more, then the survey, which then
// armed no guard). The check now holds the host to the interface recorded last time.
describe("XdpFirewall with a DenyList on an interface the management session does not use, guard on", () => {
  const ODD = "natv0";
  let outs: XdpFirewallOutputs;
  const base = entries(50);
  const notes: string[] = [];

  beforeAll(async () => {
    // No dummy driver on every kernel: a veth pair kept inside the host.
    await lab.inHost(host, ["sh", "-c", `ip link add ${ODD} type veth peer name ${ODD}p && ip link set ${ODD} up && ip link set ${ODD}p up`]);
    vi.spyOn(console, "log").mockImplementation((...args: unknown[]) => void notes.push(args.map(String).join(" ")));
  });

  afterAll(async () => {
    vi.restoreAllMocks();
    await lab.inHost(host, ["ip", "link", "del", ODD], { reject: false });
  });

  const extra: Extra = { name: "oddfw", interface: ODD, mode: "generic" };

  it("an update from a state without the record takes the survey once, saying why; the next is one exec with no guard armed", async () => {
    clearRegisteredContent();
    outs = (await ops.create(inputs(list(base), extra))).outs;
    expect(outs.managementSession).toEqual({ address: lab.gateway4, interface: "eth0" });
    const { managementSession: _none, ...earlier } = outs;

    clearRegisteredContent();
    counted.length = 0;
    notes.length = 0;
    outs = await ops.update("id", earlier as XdpFirewallOutputs, inputs(list([...base, "192.0.2.31/32"], base), extra));
    console.info(`guard on, another interface, no record: ${counted[0]!.execs} exec round trips:\n  ${counted[0]!.steps.join("\n  ")}`);
    expect(counted[0]!.execs).toBe(3);
    expect(notes.filter((n) => /planned from the state/.test(n))).toEqual([
      expect.stringContaining(`(the management session from ${lab.gateway4} is routed over eth0, not ${ODD})`),
    ]);
    expect(outs.managementSession).toEqual({ address: lab.gateway4, interface: "eth0" });

    clearRegisteredContent();
    counted.length = 0;
    notes.length = 0;
    outs = await ops.update("id", outs, inputs(list([...base, "192.0.2.31/32", "192.0.2.32/32"], [...base, "192.0.2.31/32"]), extra));
    console.info(`guard on, another interface, with the record: ${counted[0]!.execs} exec round trips:\n  ${counted[0]!.steps.join("\n  ")}`);
    // The survey would arm no guard either: the session does not cross this interface.
    expect(counted[0]!.execs).toBe(1);
    expect(counted[0]!.logins).toBeLessThanOrEqual(1);
    expect(counted[0]!.steps.join("\n")).not.toMatch(/revert-arm|setsid/);
    expect(notes.filter((n) => /planned from the state/.test(n))).toEqual([]);
    expect(await exact("192.0.2.32", "oddfw")).toBe(true);
  });

  it("delete", async () => {
    await ops.delete("id", outs);
  });
});
