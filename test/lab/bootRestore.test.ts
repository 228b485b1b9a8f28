// XdpFirewall bootRestore on a lab host: a simulated reboot (pins and attachment gone,
// /var/lib/bpfleet and /etc/systemd/system kept) is undone by running the installed
// unit's ExecStart as systemd would, without Pulumi: for a firewall attached alone, and
// for one in slot 0 of eth0's XDP chain. The provider is driven directly.
import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { checkInputs } from "../../provider/dynamicAdapter";
import { packagedObject } from "../../provider/objects";
import { closeAllSessions } from "../../provider/remote/ssh";
import { DISPATCHER_OBJECT } from "../../provider/remote/xdpHook";
import { xdpFirewallKind as firewall } from "../../provider/xdpFirewall/lifecycle";
import { xdpFirewallSchema, type XdpFirewallInputs, type XdpFirewallOutputs } from "../../provider/xdpFirewall/schema";
import { createLab, type Lab, type LabClient, type LabHost } from "./lab";
import { pingReaches } from "./traffic";

const UNIT = "/etc/systemd/system/bpfleet-restore.service";
const UNIT_LINK = "/etc/systemd/system/sysinit.target.wants/bpfleet-restore.service";
const BOOT = "/var/lib/bpfleet/boot";
// A valid but unusual interface name (digits, dots, dashes) for the second firewall.
const ODD_IFACE = "d-0.x_1";
// systemd's default PATH for system services.
const SYSTEMD_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

let lab: Lab;
let privateKey: string;
let h1: LabHost;
let c1: LabClient;
let c2: LabClient;

function inputs(patch: Record<string, unknown> = {}): XdpFirewallInputs {
  const result = checkInputs(xdpFirewallSchema, {
    host: { address: h1.address, hostKey: h1.hostKey, connectTimeoutMs: 3000, commandTimeoutMs: 60_000 },
    credentials: { privateKey },
    interface: "eth0",
    name: "fw",
    bootRestore: true,
    ...patch,
  });
  if (!result.inputs) throw new Error(JSON.stringify(result.failures));
  return result.inputs as XdpFirewallInputs;
}

async function sh(script: string, opts: { reject?: boolean } = {}) {
  return lab.inHost(h1, ["sh", "-c", script], opts);
}

async function exists(path: string): Promise<boolean> {
  return (await lab.inHost(h1, ["test", "-e", path], { reject: false })).exitCode === 0;
}

/** What a reboot does to bpfleet's state: every pin and attachment gone, files on disk kept. */
async function reboot({ unmountBpffs = false } = {}): Promise<void> {
  // Each mode is detached by name: "xdp off" only clears the driver-mode slot of a veth.
  await sh(`for dev in eth0 ${ODD_IFACE}; do ip link set dev "$dev" xdpgeneric off; ip link set dev "$dev" xdpdrv off; done; rm -rf /sys/fs/bpf/bpfleet`);
  const attached = await sh(`bpftool -j net show dev eth0; bpftool -j net show dev ${ODD_IFACE}`);
  expect(String(attached.stdout)).not.toMatch(/"xdp":\[\{/);
  if (unmountBpffs) await sh("umount /sys/fs/bpf");
}

/** Runs the installed unit's ExecStart the way systemd would: its own argv, clean environment, cwd /. */
async function runUnit(): Promise<{ exitCode: number | undefined; stderr: string }> {
  const unit = String((await lab.inHost(h1, ["cat", UNIT])).stdout);
  const condition = unit.match(/^ConditionPathExists=(.+)$/m)?.[1];
  if (condition) expect(await exists(condition)).toBe(true);
  const execStart = unit.match(/^ExecStart=(.+)$/m)?.[1];
  expect(execStart).toBeTruthy();
  const argv = execStart!.trim().split(/\s+/);
  const result = await lab.inHost(h1, ["env", "-i", `PATH=${SYSTEMD_PATH}`, "sh", "-c", 'cd / && exec "$@"', "unit", ...argv], { reject: false });
  return { exitCode: result.exitCode, stderr: String(result.stderr) };
}

async function persistedFiles(): Promise<string[]> {
  const r = await sh(`find ${BOOT} /etc/systemd/system -mindepth 1 2>/dev/null | sort`, { reject: false });
  return String(r.stdout).split("\n").filter(Boolean);
}

beforeAll(async () => {
  lab = await createLab("boot", { hosts: 1, clients: 2 });
  privateKey = readFileSync(lab.privateKeyPath, "utf8");
  [h1] = lab.hosts as [LabHost];
  [c1, c2] = lab.clients as [LabClient, LabClient];
  // No dummy driver on every kernel: a veth pair kept inside the host.
  await sh(`ip link add ${ODD_IFACE} type veth peer name ${ODD_IFACE}p && ip link set ${ODD_IFACE} up && ip link set ${ODD_IFACE}p up`);
});

afterAll(async () => {
  closeAllSessions();
  await lab?.destroy();
});

describe("XdpFirewall bootRestore on a lab host", () => {
  let fw: { id: string; outs: XdpFirewallOutputs };
  let odd: { id: string; outs: XdpFirewallOutputs };

  it("the lab host has a private, empty /etc/systemd/system and no systemd of its own", async () => {
    expect(await persistedFiles()).toEqual([]);
    // /run and PID 1 are the VM's: the provider must not call systemctl here.
    const probe = await sh('[ -d /run/systemd/system ] && [ "$(readlink /proc/1/ns/mnt)" = "$(readlink /proc/self/ns/mnt)" ] && echo systemd || echo none');
    expect(String(probe.stdout).trim()).toBe("none");
  });

  it("create persists the object, a batch of the entries, a restore script and the enabled unit", async () => {
    fw = await firewall.create(inputs({ deny: [c1.address, c1.address6, "203.0.113.0/24"] }));
    expect(fw.outs.bootRestore).toBe(true);
    expect(await pingReaches(lab, c1, h1.address)).toBe(false);
    expect(await pingReaches(lab, c2, h1.address)).toBe(true);

    const files = await persistedFiles();
    expect(files).toEqual([
      "/etc/systemd/system/bpfleet-restore.service",
      "/etc/systemd/system/sysinit.target.wants",
      UNIT_LINK,
      `${BOOT}/restore`,
      `${BOOT}/xdp-firewall`,
      `${BOOT}/xdp-firewall/fw`,
      expect.stringMatching(/^\/var\/lib\/bpfleet\/boot\/xdp-firewall\/fw\/entries-[0-9a-f]{16}\.batch$/),
      `${BOOT}/xdp-firewall/fw/restore.sh`,
    ]);
    expect(String((await lab.inHost(h1, ["readlink", UNIT_LINK])).stdout).trim()).toBe(UNIT);
    expect(await exists(`/var/lib/bpfleet/objects/${fw.outs.objectSha256}.bpf.o`)).toBe(true);
    // Nothing of it reached this machine's own /etc.
    expect(() => execFileSync("test", ["-e", UNIT])).toThrow();
  });

  it("the installed unit passes systemd-analyze verify", async (ctx) => {
    const has = await lab.inHost(h1, ["sh", "-c", "command -v systemd-analyze"], { reject: false });
    if (has.exitCode !== 0) ctx.skip(); // systemd-analyze is not installed on this machine
    const verify = await lab.inHost(h1, ["systemd-analyze", "verify", UNIT], { reject: false });
    expect({ code: verify.exitCode, stderr: String(verify.stderr) }).toEqual({ code: 0, stderr: "" });
  });

  it("after a reboot the denied client gets through and refresh reports the firewall gone", async () => {
    await reboot();
    expect(await pingReaches(lab, c1, h1.address)).toBe(true);
    expect(await firewall.read(fw.id, fw.outs)).toBeUndefined();
  });

  it("the unit's ExecStart brings it back: denied client dropped, maps hold the declared entries", async () => {
    const run = await runUnit();
    expect(run.exitCode, run.stderr).toBe(0);
    expect(run.stderr).toMatch(/xdp-firewall\/fw: restored/);
    expect(await pingReaches(lab, c1, h1.address)).toBe(false);
    expect(await pingReaches(lab, c1, h1.address6)).toBe(false);
    expect(await pingReaches(lab, c2, h1.address)).toBe(true);
    const read = await firewall.read(fw.id, fw.outs);
    expect(read?.inputs.deny).toEqual(fw.outs.deny);
    expect(read?.outs.attachMode).toBe(fw.outs.attachMode);
    // The next up finds nothing to repair: same object, same entries, program kept.
    const outs = await firewall.update(fw.id, read!.outs, inputs({ deny: Object.keys(fw.outs.deny) }));
    expect(outs.programId).toBe(read!.outs.programId);
    fw = { id: fw.id, outs };
  });

  it("running it again with the pins present changes nothing", async () => {
    const run = await runUnit();
    expect(run.exitCode, run.stderr).toBe(0);
    expect(run.stderr).toMatch(/pins present, nothing to do/);
    expect((await firewall.read(fw.id, fw.outs))?.outs.programId).toBe(fw.outs.programId);
  });

  it("a second firewall (generic mode, unusual interface name) shares the unit", async () => {
    odd = await firewall.create(inputs({ name: "fw-2_b", interface: ODD_IFACE, mode: "generic", deny: ["198.51.100.7"] }));
    expect(odd.outs.attachMode).toBe("generic");
    const files = await persistedFiles();
    expect(files).toContain(`${BOOT}/xdp-firewall/fw-2_b/restore.sh`);
    expect(files.filter((f) => f.endsWith("bpfleet-restore.service"))).toHaveLength(2); // unit and its link, once
  });

  it("update changing deny, then a reboot (bpffs unmounted too): the restore brings back the new entries", async () => {
    fw = { id: fw.id, outs: await firewall.update(fw.id, fw.outs, inputs({ deny: [c2.address, "192.0.2.0/24"] })) };
    expect(await pingReaches(lab, c1, h1.address)).toBe(true);
    expect(await pingReaches(lab, c2, h1.address)).toBe(false);
    // The old batch was replaced, not left beside the new one.
    expect((await persistedFiles()).filter((f) => f.startsWith(`${BOOT}/xdp-firewall/fw/`) && f.endsWith(".batch"))).toHaveLength(1);

    await reboot({ unmountBpffs: true });
    expect(await pingReaches(lab, c2, h1.address)).toBe(true);
    const run = await runUnit();
    expect(run.exitCode, run.stderr).toBe(0);
    expect(await pingReaches(lab, c1, h1.address)).toBe(true);
    expect(await pingReaches(lab, c2, h1.address)).toBe(false);
    expect((await firewall.read(fw.id, fw.outs))?.inputs.deny).toEqual({ [`${c2.address}/32`]: "deny", "192.0.2.0/24": "deny" });
    const restoredOdd = await firewall.read(odd.id, odd.outs);
    expect(restoredOdd?.inputs.deny).toEqual({ "198.51.100.7/32": "deny" });
    expect(restoredOdd?.outs.attachMode).toBe("generic");
  });

  it("bootRestore switched to false removes that firewall's files; the unit stays for the other", async () => {
    odd = { id: odd.id, outs: await firewall.update(odd.id, odd.outs, inputs({ name: "fw-2_b", interface: ODD_IFACE, mode: "generic", deny: ["198.51.100.7"], bootRestore: false })) };
    const files = await persistedFiles();
    expect(files.some((f) => f.includes("fw-2_b"))).toBe(false);
    expect(files).toContain(UNIT);
    expect(files).toContain(UNIT_LINK);
  });

  it("delete removes the persisted files and, with the last one, the unit and its link", async () => {
    await firewall.delete(fw.id, fw.outs);
    expect(await persistedFiles()).toEqual([]);
    expect(await pingReaches(lab, c2, h1.address)).toBe(true);
    await firewall.delete(odd.id, odd.outs);
    expect(await persistedFiles()).toEqual([]);
    // /var/lib/bpfleet is a mount point in the lab, so it is emptied rather than removed.
    expect(String((await sh("find /var/lib/bpfleet -mindepth 1")).stdout)).toBe("");
    expect(await exists("/sys/fs/bpf/bpfleet")).toBe(false);
  });

  it("bootRestore switched off last removes the unit too", async () => {
    fw = await firewall.create(inputs({ deny: [c1.address] }));
    expect(await exists(UNIT)).toBe(true);
    fw = { id: fw.id, outs: await firewall.update(fw.id, fw.outs, inputs({ deny: [c1.address], bootRestore: false })) };
    expect(await persistedFiles()).toEqual([]);
    expect(await pingReaches(lab, c1, h1.address)).toBe(false);
    await firewall.delete(fw.id, fw.outs);
  });
});

// A firewall sharing eth0 through bpfleet's dispatcher (chainPriority 0): the restore
// brings back the dispatcher too, and the firewall in its slot. A load balancer behind
// it is not restored at boot (its own Pulumi run re-enters its slot), so none is here.
describe("a chained XdpFirewall (chainPriority 0) with bootRestore", () => {
  const DISPATCHER_DIR = "/sys/fs/bpf/bpfleet/xdp-dispatcher/eth0";
  const FOREIGN = "/sys/fs/bpf/bfl-boot-foreign";
  let edge: { id: string; outs: XdpFirewallOutputs };

  const chained = (patch: Record<string, unknown> = {}) => inputs({ name: "edge", chainPriority: 0, deny: [c1.address, c1.address6], ...patch });

  async function programIdAt(pin: string): Promise<number | undefined> {
    const r = await lab.inHost(h1, ["bpftool", "-j", "prog", "show", "pinned", pin], { reject: false });
    return r.exitCode === 0 ? (JSON.parse(String(r.stdout)) as { id: number }).id : undefined;
  }

  async function hookId(): Promise<number | undefined> {
    return (JSON.parse(String((await lab.inHost(h1, ["bpftool", "-j", "net", "show", "dev", "eth0"])).stdout)) as { xdp: { id: number }[] }[])[0]?.xdp[0]?.id;
  }

  async function chainSlots(): Promise<Record<number, number>> {
    const r = await lab.inHost(h1, ["bpftool", "-j", "map", "dump", "pinned", `${DISPATCHER_DIR}/maps/xdp_chain`], { reject: false });
    if (r.exitCode !== 0) return {};
    return Object.fromEntries((JSON.parse(String(r.stdout)) as { formatted: { key: number; value: number } }[]).map((e) => [e.formatted.key, e.formatted.value]));
  }

  /** The hook runs the dispatcher, and slot 0 (alone in the chain) the firewall's pinned program. */
  async function expectRestoredInSlot0(): Promise<number> {
    const dispatcher = await programIdAt(`${DISPATCHER_DIR}/prog`);
    const program = await programIdAt("/sys/fs/bpf/bpfleet/xdp-firewall/edge/prog");
    expect(dispatcher).toBeDefined();
    expect(program).toBeDefined();
    expect(await hookId()).toBe(dispatcher);
    expect(await chainSlots()).toEqual({ 0: program });
    return program!;
  }

  it("create persists the firewall's and the dispatcher's objects with the restore", async () => {
    edge = await firewall.create(chained());
    expect(edge.outs.attached).toBe(true);
    expect(await expectRestoredInSlot0()).toBe(edge.outs.programId);
    expect(await pingReaches(lab, c1, h1.address)).toBe(false);
    expect(await exists(`${BOOT}/xdp-firewall/edge/restore.sh`)).toBe(true);
    expect(await exists(`/var/lib/bpfleet/objects/${edge.outs.objectSha256}.bpf.o`)).toBe(true);
    expect(await exists(`/var/lib/bpfleet/objects/${packagedObject(DISPATCHER_OBJECT).sha256}.bpf.o`)).toBe(true);
  });

  it("after a reboot the unit brings back the dispatcher on the hook and the firewall in slot 0", async () => {
    await reboot();
    expect(await pingReaches(lab, c1, h1.address)).toBe(true);
    expect(await firewall.read(edge.id, edge.outs)).toBeUndefined();

    const run = await runUnit();
    expect(run.exitCode, run.stderr).toBe(0);
    expect(run.stderr).toMatch(/xdp-firewall\/edge: restored/);
    const program = await expectRestoredInSlot0();
    expect(await pingReaches(lab, c1, h1.address)).toBe(false);
    expect(await pingReaches(lab, c1, h1.address6)).toBe(false);
    expect(await pingReaches(lab, c2, h1.address)).toBe(true);
    // Its place is slot 0 (+1), and the shared xdp_chain is the dispatcher's pin only.
    const next = await sh("bpftool -j map lookup pinned /sys/fs/bpf/bpfleet/xdp-firewall/edge/maps/xdp_chain_next key 0 0 0 0");
    expect(String(next.stdout)).toMatch(/"formatted":\{"key":0,"value":1\}/);
    expect(await exists("/sys/fs/bpf/bpfleet/xdp-firewall/edge/maps/xdp_chain")).toBe(false);

    // The provider sees it attached in place: read reports it, the next update reloads nothing.
    const read = await firewall.read(edge.id, edge.outs);
    expect(read?.outs).toMatchObject({ attached: true, programId: program, deny: edge.outs.deny });
    const outs = await firewall.update(edge.id, read!.outs, chained());
    expect(outs).toMatchObject({ attached: true, programId: program });
    expect(await expectRestoredInSlot0()).toBe(program);
    edge = { id: edge.id, outs };
  });

  it("running it again with the pins present changes nothing", async () => {
    const before = { hook: await hookId(), slots: await chainSlots() };
    const run = await runUnit();
    expect(run.exitCode, run.stderr).toBe(0);
    expect(run.stderr).toMatch(/xdp-firewall\/edge: pins present, nothing to do/);
    expect({ hook: await hookId(), slots: await chainSlots() }).toEqual(before);
  });

  it("a dispatcher already pinned and attached (another member's run came first) is kept, and the firewall joins it", async () => {
    await reboot();
    const dispatcherObject = `/var/lib/bpfleet/objects/${packagedObject(DISPATCHER_OBJECT).sha256}.bpf.o`;
    await sh(`mkdir -p ${DISPATCHER_DIR} && bpftool prog load ${dispatcherObject} ${DISPATCHER_DIR}/prog type xdp pinmaps ${DISPATCHER_DIR}/maps && bpftool net attach xdp pinned ${DISPATCHER_DIR}/prog dev eth0`);
    const dispatcher = await programIdAt(`${DISPATCHER_DIR}/prog`);
    expect(await hookId()).toBe(dispatcher);

    const run = await runUnit();
    expect(run.exitCode, run.stderr).toBe(0);
    await expectRestoredInSlot0();
    expect(await programIdAt(`${DISPATCHER_DIR}/prog`)).toBe(dispatcher);
    expect(await pingReaches(lab, c1, h1.address)).toBe(false);
    expect((await firewall.read(edge.id, edge.outs))?.outs.attached).toBe(true);
  });

  it("a foreign XDP program on the hook is never replaced: the restore fails and leaves it", async () => {
    await reboot();
    await sh(`bpftool prog load /var/lib/bpfleet/objects/${edge.outs.objectSha256}.bpf.o ${FOREIGN} type xdp && bpftool net attach xdpgeneric pinned ${FOREIGN} dev eth0`);
    try {
      const foreign = await programIdAt(FOREIGN);
      const run = await runUnit();
      expect(run.exitCode).not.toBe(0);
      expect(run.stderr).toMatch(new RegExp(`xdp-firewall/edge: interface eth0 has XDP program id ${foreign} attached, not bpfleet's dispatcher`));
      expect(await hookId()).toBe(foreign);
      expect(await exists("/sys/fs/bpf/bpfleet/xdp-firewall/edge/prog")).toBe(false);
    } finally {
      await sh(`ip link set dev eth0 xdpgeneric off; rm -f ${FOREIGN}`);
    }
    // With the hook free again, the next run restores it.
    const run = await runUnit();
    expect(run.exitCode, run.stderr).toBe(0);
    await expectRestoredInSlot0();
  });

  it("while a provider run holds eth0's chain lock, the restore waits for it", async () => {
    await reboot();
    // The lock file and the fd-9 flock of xdpHook.ts's lock(); /run/bpfleet is the host's, so the hold is as a provider's.
    const marker = "/run/bpfleet/bfl-boot-lock-held";
    const holder = sh(`mkdir -p /run/bpfleet; exec 9>/run/bpfleet/xdp-chain-eth0.lock; flock 9; touch ${marker}; sleep 2; rm -f ${marker}`);
    for (let i = 0; i < 50 && !(await exists(marker)); i++) await new Promise((r) => setTimeout(r, 100));
    expect(await exists(marker)).toBe(true);
    const started = Date.now();
    const run = await runUnit();
    expect(run.exitCode, run.stderr).toBe(0);
    expect(Date.now() - started).toBeGreaterThan(1000);
    await holder;
    await expectRestoredInSlot0();
  });

  it("delete takes the firewall, the dispatcher and the persisted files away", async () => {
    await firewall.delete(edge.id, (await firewall.read(edge.id, edge.outs))!.outs);
    expect(await hookId()).toBeUndefined();
    expect(await persistedFiles()).toEqual([]);
    expect(await exists("/sys/fs/bpf/bpfleet")).toBe(false);
    expect(await pingReaches(lab, c1, h1.address)).toBe(true);
  });
});
