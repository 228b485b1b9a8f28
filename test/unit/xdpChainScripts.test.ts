// The XDP chain's shipped scripts (sh/xdp-chain-*.sh with the prelude's chain
// section), a hook revert and a chain member's boot restore, run for real by the
// local sh against a fake bpftool and ip (test/unit/fakes) in a private mount
// namespace whose /sys/fs/bpf and /run are scratch directories: the chain's rules
// (who may take a slot or the hook, the last member out takes the dispatcher) are
// checked without a kernel.
import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeEach, describe, expect, it } from "vitest";
import { type LocalObject } from "../../provider/remote/objectUpload";
import { pinLayout } from "../../provider/remote/pins";
import { resourceRestoreScript } from "../../provider/remote/bootRestore";
import { chainMapPin, dispatcherDir, ensureDispatcherCommand, enterChainCommand, hookRevertShell, leaveChainCommand } from "../../provider/remote/xdpHook";

const FAKES = join(__dirname, "fakes");
const scratch = mkdtempSync(join(tmpdir(), "bpfleet-chain-unit-"));
afterAll(() => rmSync(scratch, { recursive: true, force: true }));

let fake = "";
let bpffs = "";
beforeEach(() => {
  const root = mkdtempSync(join(scratch, "t-"));
  fake = join(root, "fake");
  bpffs = join(root, "bpffs");
  for (const dir of [fake, bpffs, join(root, "run")]) mkdirSync(dir, { mode: 0o700 });
  writeFileSync(join(root, "object.o"), "");
  writeFileSync(join(root, "dispatcher.o"), "");
});
const root = () => join(fake, "..");

/** Runs argv with the fake tools first on PATH, the scratch bpffs and /run bound in place. */
function run(argv: string[]) {
  const isolate = '/bin/mount --bind "$1/bpffs" /sys/fs/bpf && /bin/mount --bind "$1/run" /run && shift && exec "$@"';
  return spawnSync("unshare", ["-m", "--propagation", "private", "/bin/sh", "-c", isolate, "isolate", root(), ...argv], {
    env: { PATH: `${FAKES}:/usr/sbin:/usr/bin:/sbin:/bin`, FAKE: fake },
    encoding: "utf8",
  });
}
const sh = (script: string) => run(["sh", "-c", script]);
const pin = (path: string) => join(bpffs, path.replace(/^\/sys\/fs\/bpf\//, ""));
const idOf = (path: string) => (existsSync(pin(path)) ? Number(readFileSync(pin(path), "utf8")) : undefined);
const slot = (iface: string, n: number) => (existsSync(join(pin(chainMapPin(iface)), String(n))) ? Number(readFileSync(join(pin(chainMapPin(iface)), String(n)), "utf8")) : undefined);
const hook = (iface: string) => (existsSync(join(fake, `hook-${iface}`)) ? readFileSync(join(fake, `hook-${iface}`), "utf8").trim() : undefined);
const calls = () => (existsSync(join(fake, "calls")) ? readFileSync(join(fake, "calls"), "utf8") : "");

const layout = pinLayout("xdp-firewall", "edge");
/** A member program, loaded by the test as a provider run would (a file holding its id). */
function member(id: number): void {
  mkdirSync(pin(layout.maps) + "/xdp_chain_next", { recursive: true });
  writeFileSync(pin(layout.program), String(id));
}

describe("xdp chain scripts", () => {
  it("ensure loads the dispatcher once, and never again while it is pinned", () => {
    const ensure = ensureDispatcherCommand("eth0", join(root(), "dispatcher.o"));
    expect(run(ensure).status).toBe(0);
    const id = idOf(`${dispatcherDir("eth0")}/prog`);
    expect(id).toBe(100);
    expect(run(ensure).status).toBe(0);
    expect(idOf(`${dispatcherDir("eth0")}/prog`)).toBe(id);
    expect(calls().match(/prog load/g)).toHaveLength(1);
    // The chain lock lives in root's own /run/bpfleet.
    expect(existsSync(join(root(), "run", "bpfleet", "xdp-chain-eth0.lock"))).toBe(true);
  });

  it("enter puts the member in its slot, tells it its place, then attaches the dispatcher", () => {
    expect(run(ensureDispatcherCommand("eth0", join(root(), "dispatcher.o"))).status).toBe(0);
    member(7);
    const result = run(enterChainCommand({ iface: "eth0", mode: "generic", chainPriority: 2 }, layout.program, `${layout.maps}/xdp_chain_next`, []));
    expect(result.stderr).toBe("");
    expect(result.status).toBe(0);
    expect(slot("eth0", 2)).toBe(7);
    expect(readFileSync(join(pin(layout.maps), "xdp_chain_next", "0"), "utf8").trim()).toBe("3");
    expect(hook("eth0")).toBe("100 generic");
    const order = calls().split("\n");
    expect(order.findIndex((l) => l.startsWith("bpftool net attach"))).toBeGreaterThan(order.findIndex((l) => l.includes("xdp_chain key 2")));
  });

  it("enter refuses a slot another program holds (exit 5) and a hook a foreign program holds (exit 6), changing nothing", () => {
    expect(run(ensureDispatcherCommand("eth0", join(root(), "dispatcher.o"))).status).toBe(0);
    mkdirSync(join(pin(chainMapPin("eth0"))), { recursive: true });
    writeFileSync(join(pin(chainMapPin("eth0")), "1"), "55");
    member(7);
    const enter = (priority: number, own: number[] = []) => run(enterChainCommand({ iface: "eth0", mode: "native", chainPriority: priority }, layout.program, `${layout.maps}/xdp_chain_next`, own));
    expect(enter(1)).toMatchObject({ status: 5, stderr: expect.stringMatching(/chain slot 1 of eth0 holds program id 55/) });
    // Its own previous program may be replaced.
    expect(enter(1, [55]).status).toBe(0);
    expect(slot("eth0", 1)).toBe(7);
    writeFileSync(join(fake, "hook-eth1"), "42 driver");
    expect(run(ensureDispatcherCommand("eth1", join(root(), "dispatcher.o"))).status).toBe(0);
    const foreign = run(enterChainCommand({ iface: "eth1", mode: "native", chainPriority: 0 }, layout.program, `${layout.maps}/xdp_chain_next`, []));
    expect(foreign).toMatchObject({ status: 6, stderr: expect.stringMatching(/eth1 has an XDP program bpfleet did not attach/) });
    expect(slot("eth1", 0)).toBeUndefined();
    expect(hook("eth1")).toBe("42 driver");
  });

  it("enter swaps the dispatcher in for this resource's program attached alone, in its mode", () => {
    expect(run(ensureDispatcherCommand("eth0", join(root(), "dispatcher.o"))).status).toBe(0);
    member(7);
    writeFileSync(join(fake, "hook-eth0"), "7 generic");
    expect(run(enterChainCommand({ iface: "eth0", mode: "native", chainPriority: 0 }, layout.program, `${layout.maps}/xdp_chain_next`, [7])).status).toBe(0);
    expect(hook("eth0")).toBe("100 generic");
    expect(calls()).toMatch(/bpftool net attach xdpgeneric pinned \S+\/prog dev eth0 overwrite/);
  });

  it("refuses a slot outside the chain", () => {
    const script = enterChainCommand({ iface: "eth0", mode: "native", chainPriority: 0 }, layout.program, "/n", []);
    script[6] = "8";
    expect(run(script)).toMatchObject({ status: 2, stderr: "bad chain slot 8\n" });
  });

  it("leave empties only its own slot; the last member out detaches and removes the dispatcher", () => {
    expect(run(ensureDispatcherCommand("eth0", join(root(), "dispatcher.o"))).status).toBe(0);
    member(7);
    expect(run(enterChainCommand({ iface: "eth0", mode: "native", chainPriority: 2 }, layout.program, `${layout.maps}/xdp_chain_next`, [])).status).toBe(0);
    writeFileSync(join(pin(chainMapPin("eth0")), "5"), "8");
    expect(run(leaveChainCommand("eth0", 5, [7])).status).toBe(0);
    expect(slot("eth0", 5)).toBe(8);
    expect(run(leaveChainCommand("eth0", 2, [7], `${layout.maps}/xdp_chain_next`)).status).toBe(0);
    expect(slot("eth0", 2)).toBeUndefined();
    expect(readFileSync(join(pin(layout.maps), "xdp_chain_next", "0"), "utf8").trim()).toBe("0");
    expect(hook("eth0")).toBe("100 driver");
    expect(run(leaveChainCommand("eth0", 5, [8])).status).toBe(0);
    expect(hook("eth0")).toBeUndefined();
    expect(existsSync(pin(dispatcherDir("eth0")))).toBe(false);
  });

  it("a revert of a new chained program leaves its slot, takes the dispatcher with it and removes the pins", () => {
    expect(run(ensureDispatcherCommand("eth0", join(root(), "dispatcher.o"))).status).toBe(0);
    member(7);
    expect(run(enterChainCommand({ iface: "eth0", mode: "native", chainPriority: 3 }, layout.program, `${layout.maps}/xdp_chain_next`, [])).status).toBe(0);
    const revert = sh(hookRevertShell(layout, { iface: "eth0", mode: "native", chainPriority: 3 }, { kind: "none" }, "new"));
    expect(revert.status).toBe(0);
    expect(hook("eth0")).toBeUndefined();
    expect(existsSync(pin(dispatcherDir("eth0")))).toBe(false);
    expect(existsSync(pin(layout.dir))).toBe(false);
  });
});

describe("a chain member's boot restore", () => {
  const object: LocalObject = { path: "/nowhere/xdp_firewall.bpf.o", bytes: Buffer.alloc(0), sha256: "ab".repeat(32) };
  const dispatcher: LocalObject = { path: "/nowhere/xdp_dispatcher.bpf.o", bytes: Buffer.alloc(0), sha256: "cd".repeat(32) };

  /** The restore script, its object paths pointed at the scratch objects. */
  function restore(iface: string, slotNo: number): string {
    return resourceRestoreScript({ kind: "xdp-firewall", name: "edge", layout, object, mapOperations: [], xdp: { interface: iface, mode: "generic", chain: { slot: slotNo, dispatcher } } }, "/nonexistent.batch")
      .replace(/^OBJ=.*$/m, `OBJ=${join(root(), "object.o")}`)
      .replace(/^DISPATCHER_OBJ=.*$/m, `DISPATCHER_OBJ=${join(root(), "dispatcher.o")}`);
  }

  it("loads the dispatcher and the member, fills its slot and attaches the dispatcher last", () => {
    const result = sh(restore("lo", 4));
    expect(result.stderr).toMatch(/xdp-firewall\/edge: restored\n$/);
    expect(result.status).toBe(0);
    expect(idOf(`${dispatcherDir("lo")}/prog`)).toBe(100);
    expect(idOf(layout.program)).toBe(101);
    expect(existsSync(pin(`${layout.dir}/prog_boot`))).toBe(false);
    expect(slot("lo", 4)).toBe(101);
    expect(readFileSync(join(pin(layout.maps), "xdp_chain_next", "0"), "utf8").trim()).toBe("5");
    expect(hook("lo")).toBe("100 generic");
    // The member's own pin of the shared xdp_chain is dropped: the map is the dispatcher's.
    expect(existsSync(join(pin(layout.maps), "xdp_chain"))).toBe(false);
    // Restored once, it does nothing the second time.
    expect(sh(restore("lo", 4)).stderr).toMatch(/pins present, nothing to do/);
  });

  it("stops at a foreign program on the hook, loading nothing", () => {
    writeFileSync(join(fake, "hook-lo"), "42 driver");
    const result = sh(restore("lo", 1));
    expect(result.status).toBe(1);
    expect(result.stderr).toMatch(/interface lo has XDP program id 42 attached, not bpfleet's dispatcher; bpfleet never replaces it/);
    expect(calls()).not.toMatch(/prog load/);
    expect(hook("lo")).toBe("42 driver");
  });
});
