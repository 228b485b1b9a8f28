// XdpFirewall's lifecycle against real hosts: real sshd, real kernel, real packets.
// The provider is driven directly here; test/e2e drives it through the Pulumi CLI.
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { canonicalPrefix } from "../../provider/cidr";
import { applyMapOperations, batchText } from "../../provider/remote/mapOperations";
import { localObject, uploadObject, type LocalObject } from "../../provider/remote/objectUpload";
import { listPins } from "../../provider/remote/pins";
import { loadProgram } from "../../provider/remote/programLoad";
import { attachXdpCommand } from "../../provider/remote/xdpAttach";
import { connectResource, resourceId } from "../../provider/remote/resource";
import { DENY_VALUE, encodeDenyEntry } from "../../provider/xdpFirewall/codec";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { checkInputs } from "../../provider/dynamicAdapter";
import { packagedObject } from "../../provider/objects";
import { closeAllSessions, dropSession, sessionFor, type Operation } from "../../provider/remote/ssh";
import { operations } from "../../provider/operations";
import { checkDenyList } from "../../provider/denyList/schema";
import { clearRegisteredContent, contentDigest, contentText, parseContentText } from "../../provider/sharedContent";
import { xdpFirewallKind as firewall } from "../../provider/xdpFirewall/lifecycle";
import { denyOperations, planDeny } from "../../provider/xdpFirewall/plan";
import { xdpFirewallSchema, type XdpFirewallInputs, type XdpFirewallOutputs } from "../../provider/xdpFirewall/schema";
import { createLab, type Lab, type LabHost } from "./lab";
import { pingReaches, udpReaches } from "./traffic";

let lab: Lab;
let privateKey: string;

function inputs(host: LabHost, patch: Record<string, unknown> = {}): XdpFirewallInputs {
  const result = checkInputs(xdpFirewallSchema, {
    host: { address: host.address, hostKey: host.hostKey, connectTimeoutMs: 3000, commandTimeoutMs: 60_000 },
    credentials: { privateKey },
    interface: "eth0",
    name: "fw",
    deny: [],
    ...patch,
  });
  if (!result.inputs) throw new Error(JSON.stringify(result.failures));
  return result.inputs as XdpFirewallInputs;
}

async function pinsOn(host: LabHost): Promise<string> {
  const r = await lab.inHost(host, ["sh", "-c", "ls -R /sys/fs/bpf/bpfleet 2>/dev/null || true"]);
  return String(r.stdout).trim();
}

async function xdpOn(host: LabHost): Promise<string> {
  const r = await lab.inHost(host, ["bpftool", "-j", "net", "show", "dev", "eth0"]);
  return JSON.stringify(JSON.parse(String(r.stdout))[0].xdp);
}

beforeAll(async () => {
  lab = await createLab("fwlab", { hosts: 2, clients: 2 });
  privateKey = readFileSync(lab.privateKeyPath, "utf8");
});

afterAll(async () => {
  closeAllSessions();
  await lab?.destroy();
});

describe("XdpFirewall on a lab host", () => {
  let created: { id: string; outs: XdpFirewallOutputs };

  it("create: drops denied sources (v4 and v6, exact and prefix) and passes others", async () => {
    const [h1, h2] = lab.hosts as [LabHost, LabHost];
    const [c1, c2] = lab.clients;
    created = await firewall.create(inputs(h1, { deny: [c1!.address, `${c1!.address6}`, "203.0.113.0/24"] }));
    expect(created.id).toBe(`root@${h1.address}/xdp-firewall/fw`);
    expect(Object.keys(created.outs.deny).sort()).toEqual([`${c1!.address}/32`, `${c1!.address6}/128`, "203.0.113.0/24"].sort());
    expect(created.outs.attachMode).not.toBe("detached");

    expect(await pingReaches(lab, c1!, h1.address)).toBe(false);
    expect(await pingReaches(lab, c1!, h1.address6)).toBe(false);
    expect(await udpReaches(lab, c1!, h1, h1.address)).toBe(false);
    expect(await pingReaches(lab, c2!, h1.address)).toBe(true);
    expect(await pingReaches(lab, c2!, h1.address6)).toBe(true);
    expect(await udpReaches(lab, c2!, h1, h1.address)).toBe(true);
    // The other host is another machine: nothing changed there.
    expect(await pingReaches(lab, c1!, h2.address)).toBe(true);
    expect(await pinsOn(h2)).toBe("");
  });

  it("read: reports entries, attachment and counters that moved", async () => {
    const read = await firewall.read(created.id, created.outs);
    expect(read?.outs.programId).toBe(created.outs.programId);
    expect(read?.outs.counters.dropPackets).toBeGreaterThan(0);
    expect(read?.outs.counters.passPackets).toBeGreaterThan(0);
    expect(read?.inputs.deny).toEqual(created.outs.deny);
  });

  it("update: rewrites only changed entries in place, without detaching", async () => {
    const h1 = lab.hosts[0]!;
    const c1 = lab.clients[0]!;
    const news = inputs(h1, { deny: [c1.address, "198.51.100.0/24"] });
    const outs = await firewall.update(created.id, created.outs, news);
    expect(outs.programId).toBe(created.outs.programId);
    expect(Object.keys(outs.deny)).toEqual([`${c1.address}/32`, "198.51.100.0/24"]);
    expect(await pingReaches(lab, c1, h1.address)).toBe(false);
    expect(await pingReaches(lab, c1, h1.address6)).toBe(true);
    created = { id: created.id, outs };
  });

  it("read: an entry added by hand with bpftool shows up as drift", async () => {
    const h1 = lab.hosts[0]!;
    await lab.inHost(h1, ["bpftool", "map", "update", "pinned", "/sys/fs/bpf/bpfleet/xdp-firewall/fw/maps/deny_v4_exact", "key", "192", "0", "2", "77", "value", "1"]);
    const read = await firewall.read(created.id, created.outs);
    expect(Object.keys(read!.inputs.deny)).toContain("192.0.2.77/32");
    // The next update restores what the program declares.
    const outs = await firewall.update(created.id, read!.outs, inputs(h1, { deny: Object.keys(created.outs.deny) }));
    expect(Object.keys(outs.deny)).not.toContain("192.0.2.77/32");
  });

  it("update: a new BPF object is swapped in atomically against the same maps", async () => {
    const h1 = lab.hosts[0]!;
    const c1 = lab.clients[0]!;
    const mapIdsBefore = await lab.inHost(h1, ["bpftool", "-j", "map", "show", "pinned", "/sys/fs/bpf/bpfleet/xdp-firewall/fw/maps/deny_v4_exact"]);
    const stale = { ...created.outs, objectSha256: "0".repeat(64) };
    const outs = await firewall.update(created.id, stale, inputs(h1, { deny: Object.keys(created.outs.deny) }));
    expect(outs.programId).not.toBe(created.outs.programId);
    expect(outs.objectSha256).toBe(packagedObject("xdp_firewall").sha256);
    expect(outs.attachMode).toBe(created.outs.attachMode);
    const mapIdsAfter = await lab.inHost(h1, ["bpftool", "-j", "map", "show", "pinned", "/sys/fs/bpf/bpfleet/xdp-firewall/fw/maps/deny_v4_exact"]);
    expect(JSON.parse(String(mapIdsAfter.stdout)).id).toBe(JSON.parse(String(mapIdsBefore.stdout)).id);
    expect(await pingReaches(lab, c1, h1.address)).toBe(false);
    expect(await pinsOn(h1)).not.toMatch(/prog_new|maps_staged/);
    created = { id: created.id, outs };
  });

  it("upgrade under traffic: an established connection keeps flowing and no denied packet gets through", async () => {
    const h1 = lab.hosts[0]!;
    const [c1, c2] = lab.clients as [(typeof lab.clients)[0], (typeof lab.clients)[0]];
    const server = lab.inHost(h1, ["timeout", "20", "socat", "TCP-LISTEN:7000,reuseaddr,fork", "EXEC:cat"], { reject: false });
    await new Promise((r) => setTimeout(r, 300));
    // 100 lines, one every 40 ms, over one TCP connection from an allowed client.
    const lines = Array.from({ length: 100 }, (_, i) => `line-${i}`);
    const established = lab.inClient(c2, ["sh", "-c", `for l in ${lines.join(" ")}; do echo $l; sleep 0.04; done | socat -t 2 - TCP:${h1.address}:7000`]);
    // 400 echo requests, one every 10 ms, from a denied client.
    const denied = lab.inClient(c1, ["ping", "-n", "-q", "-i", "0.01", "-c", "400", "-W", "1", h1.address], { reject: false });
    let outs = created.outs;
    for (let swap = 0; swap < 2; swap++) {
      outs = await firewall.update(created.id, { ...outs, objectSha256: "0".repeat(64) }, inputs(h1, { deny: Object.keys(created.outs.deny) }));
    }
    expect(String((await established).stdout).split("\n")).toEqual(lines);
    const pings = String((await denied).stdout);
    expect(pings).toMatch(/400 packets transmitted, 0 received/);
    server.kill();
    await server;
    created = { id: created.id, outs };
  });

  it("refuses a deny entry covering the provider's own SSH address, changing nothing", async () => {
    const h1 = lab.hosts[0]!;
    const before = await firewall.read(created.id, created.outs);
    await expect(firewall.update(created.id, created.outs, inputs(h1, { deny: [`${lab.gateway4}/24`] }))).rejects.toThrow(/lock the host out.*allowManagementDeny/);
    const after = await firewall.read(created.id, created.outs);
    expect(after!.outs.deny).toEqual(before!.outs.deny);
  });

  it("lockout guard: a change that cuts the management path is undone by the host itself, and the update fails saying so", async () => {
    const h1 = lab.hosts[0]!;
    const before = await firewall.read(created.id, created.outs);
    const cutting = inputs(h1, { deny: [...Object.keys(created.outs.deny), lab.gateway4], allowManagementDeny: true, lockoutRevertSeconds: 10 });
    await expect(firewall.update(created.id, created.outs, cutting)).rejects.toThrow(/fresh SSH login failed.*cuts the management path.*A fresh login worked again.*had fired: the change was undone/s);
    expect((await lab.ssh(h1, ["true"], { reject: false })).exitCode).toBe(0);
    const after = await firewall.read(created.id, created.outs);
    expect(after!.outs.deny).toEqual(before!.outs.deny);
    expect(after!.outs.programId).toBe(before!.outs.programId);
    expect(await pinsOn(h1)).not.toMatch(/prog_old|prog_new/);
  }, 90_000);

  it("without the guard, the same change locks the host out (cleaned up from inside the host)", async () => {
    const h1 = lab.hosts[0]!;
    const base = inputs(h1, { deny: [...Object.keys(created.outs.deny), lab.gateway4], allowManagementDeny: true, lockoutGuard: false });
    const cutting = { ...base, host: { ...base.host, commandTimeoutMs: 5000 } };
    try {
      await expect(firewall.update(created.id, created.outs, cutting)).rejects.toThrow();
      expect((await lab.ssh(h1, ["true"], { reject: false })).exitCode).not.toBe(0);
    } finally {
      dropSession(cutting.host, cutting.credentials);
      // The provider's own writes from the cutting list back to the old one (record and index: the
      // gateway's exact slot too, which the program reads before the record), run on the host.
      const back = denyOperations(planDeny(Object.keys(created.outs.deny), Object.keys(cutting.deny)), (m) => `/sys/fs/bpf/bpfleet/xdp-firewall/fw/maps/${m}`);
      await lab.inHost(h1, ["bpftool", "batch", "file", "-"], { input: batchText(back) });
    }
    expect((await lab.ssh(h1, ["true"], { reject: false })).exitCode).toBe(0);
  }, 90_000);

  it("delete: detaches and removes its pins; deleting again succeeds", async () => {
    const h1 = lab.hosts[0]!;
    await firewall.delete(created.id, created.outs);
    expect(await pinsOn(h1)).not.toContain("fw");
    expect(await xdpOn(h1)).toBe("[]");
    expect(await pingReaches(lab, lab.clients[0]!, h1.address)).toBe(true);
    await firewall.delete(created.id, created.outs);
    expect(await firewall.read(created.id, created.outs)).toBeUndefined();
  });
});

describe("XdpFirewall refuses, and leaves every host as it was", () => {
  async function expectUntouched(): Promise<void> {
    for (const host of lab.hosts) {
      expect(await pinsOn(host)).not.toMatch(/fw|bad/);
    }
  }

  it("an interface that does not exist on the host", async () => {
    await expect(firewall.create(inputs(lab.hosts[0]!, { interface: "eth9", name: "bad" }))).rejects.toThrow(/interface "eth9" does not exist on the host \(it has: .*eth0/);
    await expectUntouched();
  });

  it("a host without bpftool", async () => {
    const h2 = lab.hosts[1]!;
    // Hide bpftool inside h2's own mount namespace only: a non-executable file over it.
    await lab.inHost(h2, ["mount", "--bind", "/dev/null", "/usr/sbin/bpftool"]);
    try {
      closeAllSessions(); // preflight facts are cached per session
      await expect(firewall.create(inputs(h2, { name: "bad" }))).rejects.toThrow(/required tools are missing on the host: bpftool.*apt-get install bpftool/);
    } finally {
      await lab.inHost(h2, ["umount", "/usr/sbin/bpftool"]);
      closeAllSessions();
    }
    await expectUntouched();
  });

  it("an unreachable host", async () => {
    const host = { ...lab.hosts[0]!, address: lab.subnet4.replace(/0\/24$/, "250") };
    await expect(firewall.create(inputs(host, { name: "bad" }))).rejects.toThrow(/cannot connect over SSH/);
    await expectUntouched();
  });

  it("a host presenting a different host key than the one pinned", async () => {
    const [h1, h2] = lab.hosts as [LabHost, LabHost];
    await expect(firewall.create(inputs({ ...h1, hostKey: h2.hostKey }, { name: "bad" }))).rejects.toThrow(/host key verification failed/);
    await expectUntouched();
  });

  it("an XDP program it did not attach", async () => {
    const h2 = lab.hosts[1]!;
    await lab.putFile(h2, "/tmp/foreign.bpf.o", packagedObject("empty_xdp").bytes);
    await lab.inHost(h2, ["ip", "link", "set", "dev", "eth0", "xdpgeneric", "obj", "/tmp/foreign.bpf.o", "sec", "xdp"]);
    try {
      await expect(firewall.create(inputs(h2, { name: "bad" }))).rejects.toThrow(/already has XDP program id \d+ attached .*did not attach/);
      expect(await xdpOn(h2)).toMatch(/"mode":"generic"/);
      await expectUntouched();
    } finally {
      await lab.inHost(h2, ["ip", "link", "set", "dev", "eth0", "xdpgeneric", "off"]);
    }
  });
});

describe("XdpFirewall convergence", () => {
  it("a create that finds its own leftover pins (an earlier run died) adopts them", async () => {
    const h2 = lab.hosts[1]!;
    const c1 = lab.clients[0]!;
    // A staged firewall stands for the half-done work of a run whose state was lost.
    const staged = await firewall.create(inputs(h2, { deny: ["192.0.2.1"], attached: false }));
    expect(staged.outs.attachMode).toBe("detached");
    expect(await pingReaches(lab, c1, h2.address)).toBe(true);
    const again = await firewall.create(inputs(h2, { deny: [c1.address] }));
    expect(Object.keys(again.outs.deny)).toEqual([`${c1.address}/32`]);
    expect(again.outs.attachMode).not.toBe("detached");
    expect(await pingReaches(lab, c1, h2.address)).toBe(false);
    await firewall.delete(again.id, again.outs);
    expect(await pinsOn(h2)).not.toContain("fw");
  });

  it("works as a non-root user through sudo", async () => {
    const h2 = lab.hosts[1]!;
    const base = inputs(h2, { deny: ["192.0.2.1"] });
    const viaSudo = { ...base, host: { ...base.host, user: lab.sudoUser } };
    const made = await firewall.create(viaSudo);
    expect(made.id).toBe(`${lab.sudoUser}@${h2.address}/xdp-firewall/fw`);
    expect(await pinsOn(h2)).toContain("deny_v4_exact");
    await firewall.delete(made.id, made.outs);
    expect(await pinsOn(h2)).not.toContain("fw");
  });

  it("reaches a host through a jump host: the host sees the session coming from the jump host", async () => {
    const [h1, h2] = lab.hosts as [LabHost, LabHost];
    const base = inputs(h2, { deny: ["192.0.2.1"] });
    const viaJump = { ...base, host: { ...base.host, jumpHost: { address: h1.address, port: 22, user: "root", hostKey: h1.hostKey, insecureSkipHostKeyCheck: false } } };
    const session = await sessionFor(viaJump.host, viaJump.credentials);
    expect(await session.managementPeer()).toBe(h1.address);
    const made = await firewall.create(viaJump);
    expect(await pinsOn(h2)).toContain("deny_v4_exact");
    expect(await pinsOn(h1)).not.toContain("fw");
    // Recorded as the host saw it: the jump host's address, routed over eth0.
    expect(made.outs.managementSession).toEqual({ address: h1.address, interface: "eth0" });
    await firewall.delete(made.id, made.outs);
    // A jump host with the wrong pinned key is refused like any other host.
    const badJump = { ...viaJump.host, jumpHost: { ...viaJump.host.jumpHost, hostKey: h2.hostKey } };
    await expect(sessionFor(badJump, viaJump.credentials)).rejects.toThrow(/host key verification failed/);
  });

  it("through a jump host, a DenyList update is planned from the address the state recorded: one exec without the guard", async () => {
    const [h1, h2] = lab.hosts as [LabHost, LabHost];
    const jumpHost = { address: h1.address, port: 22, user: "root", hostKey: h1.hostKey, insecureSkipHostKeyCheck: false };
    const listed = (entries: string[], olds?: string[]) => {
      const result = checkDenyList(olds && { entries: contentText(olds) }, { entries });
      const keys = parseContentText((result.inputs as { entries: string }).entries);
      return { name: "feed", digest: contentDigest(keys), count: keys.length };
    };
    const viaJump = (denyList: ReturnType<typeof listed>) => {
      const base = inputs(h2, { deny: [], denyList, lockoutGuard: false, name: "jumpfw" });
      return { ...base, host: { ...base.host, jumpHost } };
    };
    const counted: Operation[] = [];
    const ops = operations(firewall, (op) => counted.push({ ...op, steps: [...op.steps] }));
    clearRegisteredContent();
    let outs = (await ops.create(viaJump(listed(["192.0.2.1/32"])))).outs;
    expect(outs.managementSession).toEqual({ address: h1.address, interface: "eth0" });
    // A state without the record (an earlier release): no address to plan with (this
    // end cannot guess through a jump host), so the survey, then the change.
    const { managementSession: _none, ...earlier } = outs;
    clearRegisteredContent();
    counted.length = 0;
    outs = await ops.update("id", earlier as XdpFirewallOutputs, viaJump(listed(["192.0.2.1/32", "192.0.2.3/32"], ["192.0.2.1/32"])));
    expect(counted[0]!.execs).toBe(2);
    expect(outs.managementSession).toEqual({ address: h1.address, interface: "eth0" });
    clearRegisteredContent();
    counted.length = 0;
    outs = await ops.update("id", outs, viaJump(listed(["192.0.2.1/32", "192.0.2.2/32"], ["192.0.2.1/32", "192.0.2.3/32"])));
    expect(counted[0]!.execs).toBe(1);
    expect(counted[0]!.steps[0]).toMatch(/bpftool batch/);
    const lookup = await lab.inHost(h2, ["bpftool", "map", "lookup", "pinned", "/sys/fs/bpf/bpfleet/xdp-firewall/jumpfw/maps/deny_v4_exact", "key", "192", "0", "2", "2"], { reject: false });
    expect(lookup.exitCode).toBe(0);
    await ops.delete("id", outs);
    expect(await pinsOn(h2)).not.toContain("jumpfw");
  });
});

/** The firewall's object as commit `ref` built it, from git, as that release shipped it. */
function firewallObjectAt(ref: string): LocalObject {
  const dir = mkdtempSync(join(tmpdir(), `bpfleet-fw-${ref}-`));
  const repo = join(__dirname, "../..");
  execFileSync("sh", ["-c", 'git -c safe.directory="*" -C "$1" archive "$2" bpf | tar -x -C "$3"', "sh", repo, ref, dir]);
  execFileSync("make", ["-s", "-C", join(dir, "bpf"), "obj/xdp_firewall.bpf.o"], { stdio: "inherit" });
  return localObject(join(dir, "bpf/obj/xdp_firewall.bpf.o"));
}

/**
 * Reads the firewall an earlier object left on h2 and updates it to this release's object
 * while c1 pings h2 (IPv4 and IPv6) every 10 ms: not one ping may get through the upgrade.
 */
async function upgradeWhileDenied(want: XdpFirewallInputs, previous: LocalObject, c1: (typeof lab.clients)[0], h2: LabHost): Promise<{ olds: XdpFirewallOutputs; outs: XdpFirewallOutputs }> {
  const olds = (await firewall.read(resourceId("xdp-firewall", want), { ...want, objectSha256: previous.sha256 } as XdpFirewallOutputs))!.outs;
  expect(Object.keys(olds.deny).sort()).toEqual(Object.keys(want.deny).sort());
  const denied4 = lab.inClient(c1, ["ping", "-n", "-q", "-i", "0.01", "-c", "300", "-W", "1", h2.address], { reject: false });
  const denied6 = lab.inClient(c1, ["ping", "-6", "-n", "-q", "-i", "0.01", "-c", "300", "-W", "1", h2.address6], { reject: false });
  await new Promise((r) => setTimeout(r, 300));
  const outs = await firewall.update(resourceId("xdp-firewall", want), olds, want);
  expect(outs.objectSha256).toBe(packagedObject("xdp_firewall").sha256);
  expect(outs.programId).not.toBe(olds.programId);
  expect(String((await denied4).stdout)).toMatch(/300 packets transmitted, 0 received/);
  expect(String((await denied6).stdout)).toMatch(/300 packets transmitted, 0 received/);
  return { olds, outs };
}

describe("XdpFirewall upgrade from the object before the index (83e2324)", () => {
  // The last object without the index: built from git, as it was released.
  const PREVIOUS = "83e2324";
  let previous: LocalObject;
  beforeAll(() => {
    previous = firewallObjectAt(PREVIOUS);
  }, 120_000);

  it("is loaded against the old pins with its index filled from the records before it attaches: no denied packet gets through", async () => {
    const h2 = lab.hosts[1]!;
    const [c1, c2] = lab.clients as [(typeof lab.clients)[0], (typeof lab.clients)[0]];
    // c1 denied by an exact IPv4 entry and an IPv6 prefix longer than /24 (the index's two detail paths).
    const v6Prefix = canonicalPrefix(`${c1.address6}/120`);
    const want = inputs(h2, { name: "fwup", deny: [c1.address, v6Prefix, "203.0.113.0/24"] });
    const { session, layout } = await connectResource("xdp-firewall", want);
    try {
      // What the previous provider left: its object loaded with its maps pinned, attached, the records written.
      const staged = await loadProgram(session, layout, await uploadObject(session, previous), "xdp");
      await session.run(["mv", "-f", staged, layout.program]);
      await session.run(attachXdpCommand("eth0", layout.program, "auto"));
      await applyMapOperations(session, Object.keys(want.deny).map((entry) => {
        const { map, key } = encodeDenyEntry(entry);
        return { op: "update" as const, map: `${layout.maps}/${map}`, key, value: DENY_VALUE };
      }));
      expect(await listPins(session, layout.maps)).not.toContain("fw_v4_index");
      expect(await pingReaches(lab, c1, h2.address)).toBe(false);
      const { olds, outs } = await upgradeWhileDenied(want, previous, c1, h2);
      expect(await listPins(session, layout.maps)).toEqual(expect.arrayContaining(["fw_v4_index", "fw_v6_index", "fw_v4_hosts", "fw_v6_long", "fw_v6_lengths", "fw_v4_ways", "fw_v6_ways", "fw_v4_net_slots"]));
      expect(await pingReaches(lab, c2, h2.address)).toBe(true);
      expect(outs.mapMemoryBytes).toBeGreaterThan((2 * 4 + 8 + 12 + 2.5) * 1024 * 1024);

      // Entries changed after the upgrade go through the index too.
      const next = inputs(h2, { name: "fwup", deny: [v6Prefix, "203.0.113.0/24", `${c2.address}/32`] });
      const updated = await firewall.update(resourceId("xdp-firewall", want), outs, next);
      expect(await pingReaches(lab, c1, h2.address)).toBe(true);
      expect(await pingReaches(lab, c2, h2.address)).toBe(false);
      await firewall.delete(resourceId("xdp-firewall", next), updated);
    } finally {
      await session.run(["sh", "-c", "bpftool net detach xdp dev eth0 2>/dev/null; rm -rf /sys/fs/bpf/bpfleet/xdp-firewall/fwup"]).catch(() => undefined);
    }
  }, 120_000);
});

describe("XdpFirewall upgrade from the object with direct-mapped slots (282fe48)", () => {
  // The last object whose exact addresses had one slot each (fw_v4_slots, fw_v6_slots), now
  // 12-way buckets under other names: its pins must not be offered to the new load (bpftool
  // refuses a map the object lacks), and the new buckets are filled from the records first.
  const PREVIOUS = "282fe48";
  let previous: LocalObject;
  beforeAll(() => {
    previous = firewallObjectAt(PREVIOUS);
  }, 120_000);

  // Its slot functions and values (282fe48's provider/xdpFirewall/index.ts), to write what it left.
  const MULT = 0x9e3779b1;
  const u32le = (n: number) => Uint8Array.of(n & 255, (n >>> 8) & 255, (n >>> 16) & 255, n >>> 24);
  const oldV4Slot = (bytes: Uint8Array) => Math.imul(((bytes[0]! << 24) | (bytes[1]! << 16) | (bytes[2]! << 8) | bytes[3]!) >>> 0, MULT) >>> (32 - 20);
  const oldV6Slot = (bytes: Uint8Array, length: number) => {
    const view = new DataView(bytes.buffer, bytes.byteOffset, 16);
    let h = 0;
    for (let i = 0; i < 4; i++) h = Math.imul(h ^ view.getUint32(i * 4, false), MULT);
    return Math.imul(h ^ length, MULT) >>> (32 - 19);
  };

  it("is loaded against the old pins without the retired slots, its buckets filled from the records before it attaches: no denied packet gets through", async () => {
    const h2 = lab.hosts[1]!;
    const [c1, c2] = lab.clients as [(typeof lab.clients)[0], (typeof lab.clients)[0]];
    const v6Prefix = canonicalPrefix(`${c1.address6}/120`);
    const want = inputs(h2, { name: "fwslots", deny: [c1.address, v6Prefix, "203.0.113.0/24"] });
    const { session, layout } = await connectResource("xdp-firewall", want);
    try {
      // What the previous provider left: its object loaded with its maps pinned, attached, the
      // records and the index written (the maps both objects share by the current planner; the
      // two slots by hand, as 282fe48 wrote them).
      await session.run(["mkdir", "-p", layout.dir]);
      const remote = await uploadObject(session, previous);
      await session.run(["bpftool", "prog", "load", remote, layout.program, "type", "xdp", "pinmaps", layout.maps]);
      await session.run(attachXdpCommand("eth0", layout.program, "auto"));
      const shared = denyOperations(planDeny(Object.keys(want.deny), []), (m) => `${layout.maps}/${m}`).filter((op) => !/fw_v[46]_ways$/.test(op.map));
      const v4 = encodeDenyEntry(`${c1.address}/32`).key;
      const v6 = encodeDenyEntry(v6Prefix);
      const v6Key = v6.key.subarray(4);
      await applyMapOperations(session, [
        ...shared,
        { op: "update", map: `${layout.maps}/fw_v4_slots`, key: u32le(oldV4Slot(v4)), value: Uint8Array.of(...v4, 1, 0, 0, 0) },
        { op: "update", map: `${layout.maps}/fw_v6_slots`, key: u32le(oldV6Slot(v6Key, 120)), value: Uint8Array.of(...v6Key, 120, 1, 0, 0, 0, 0, 0, 0) },
      ]);
      expect(await listPins(session, layout.maps)).toEqual(expect.arrayContaining(["fw_v4_slots", "fw_v6_slots"]));
      expect(await pingReaches(lab, c1, h2.address)).toBe(false);
      const { olds, outs } = await upgradeWhileDenied(want, previous, c1, h2);
      const pins = await listPins(session, layout.maps);
      expect(pins).toEqual(expect.arrayContaining(["fw_v4_ways", "fw_v6_ways"]));
      expect(pins).not.toContain("fw_v4_slots");
      expect(pins).not.toContain("fw_v6_slots");
      expect(await pingReaches(lab, c2, h2.address)).toBe(true);

      // Entries changed after the upgrade go through the buckets too.
      const next = inputs(h2, { name: "fwslots", deny: [v6Prefix, "203.0.113.0/24", `${c2.address}/32`] });
      const updated = await firewall.update(resourceId("xdp-firewall", want), outs, next);
      expect(await pingReaches(lab, c1, h2.address)).toBe(true);
      expect(await pingReaches(lab, c2, h2.address)).toBe(false);
      await firewall.delete(resourceId("xdp-firewall", next), updated);
    } finally {
      await session.run(["sh", "-c", "bpftool net detach xdp dev eth0 2>/dev/null; rm -rf /sys/fs/bpf/bpfleet/xdp-firewall/fwslots"]).catch(() => undefined);
    }
  }, 120_000);
});
