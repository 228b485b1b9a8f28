// The pure half of tcHook.ts, shared by TcPolicy and TrafficMirror: the filter
// handle, the slot claim, the commands a converge batches, and the revert
// script, which runs for real under a stub PATH (tc and bpftool record their
// calls) against a pin directory in a scratch directory.
import { spawnSync } from "node:child_process";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync, chmodSync, existsSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import type { PinLayout } from "../../provider/remote/pins";
import type { SshSession } from "../../provider/remote/ssh";
import type { TcFilter } from "../../provider/remote/tc";
import { tcHandle, TcHookPlan, tcRevertScript, type TcRevertPlan } from "../../provider/remote/tcHook";

/** FNV-1a, 32 bits, written out independently of tcHook.ts. */
function fnv1a(text: string): number {
  let hash = 2166136261n;
  for (const byte of Buffer.from(text, "utf8")) hash = ((hash ^ BigInt(byte)) * 16777619n) % 2n ** 32n;
  return Number(hash);
}

const placement = { interface: "eth0", name: "pol", priority: 2 };
const handle = tcHandle("tc-policy", "pol");
const filter = (direction: "ingress" | "egress", programId: number | undefined, over: Partial<TcFilter> = {}): TcFilter => ({
  direction, priority: 2, protocol: "all", kind: "bpf", handle, directAction: true, programId, ...over,
});
const plan = (filters: TcFilter[], qdisc: string | undefined, ours = 7) =>
  new TcHookPlan("tc-policy", placement, filters, (f) => f.programId === ours, () => ours, qdisc);
const session = { label: "root@h1" } as SshSession;

describe("tcHandle", () => {
  it("is FNV-1a of kind/pin name, never 0, and differs between kinds and names", () => {
    expect(fnv1a("a")).toBe(0xe40c292c); // the published test vector
    expect(tcHandle("tc-policy", "pol")).toBe(fnv1a("tc-policy/pol"));
    expect(tcHandle("traffic-mirror", "mir")).toBe(fnv1a("traffic-mirror/mir"));
    expect(tcHandle("traffic-mirror", "pol")).not.toBe(tcHandle("tc-policy", "pol"));
  });
});

describe("TcHookPlan", () => {
  it("adds the qdisc and both filters on a bare interface, in one batch", () => {
    const commands = plan([], undefined).installCommands(["ingress", "egress"], (d) => `/p/${d}`, true);
    expect(commands.map((c) => c.slice(0, 3).join(" "))).toEqual([`sh -c ${commands[0]![2]}`, "tc filter add", "tc filter add"]);
    expect(commands[0]![4]).toBe("eth0"); // addClsactCommand's device
    expect(commands[1]).toEqual(["tc", "filter", "add", "dev", "eth0", "ingress", "prio", "2", "handle", `0x${handle.toString(16)}`, "bpf", "da", "object-pinned", "/p/ingress"]);
  });

  it("changes nothing where its program runs, replaces where another runs or a new one loads, deletes where no longer wanted", () => {
    const inPlace = plan([filter("ingress", 7), filter("egress", 7)], "clsact");
    expect(inPlace.installCommands(["ingress", "egress"], () => "/p", false)).toEqual([]);
    expect(inPlace.installCommands(["ingress", "egress"], () => "/p", true).map((c) => c[2])).toEqual(["replace", "replace"]);
    expect(inPlace.installCommands(["egress"], () => "/p", false).map((c) => `${c[2]} ${c[5]}`)).toEqual(["del ingress"]);
    const stale = plan([filter("ingress", 3), filter("egress", 7)], "clsact");
    expect(stale.installCommands(["ingress", "egress"], () => "/p", false).map((c) => `${c[2]} ${c[5]}`)).toEqual(["replace ingress"]);
  });

  it("refuses a slot holding a filter it did not attach, naming it", () => {
    const foreign = plan([filter("egress", 99, { programName: "drop7777" })], "clsact");
    expect(() => foreign.claim(session, "policy", "Remove it.")).toThrow(
      `root@h1: eth0 egress already has a bpf filter at priority 2 handle 0x${handle.toString(16)} (program drop7777, id 99) that this policy did not attach. Remove it. Nothing was changed.`,
    );
    expect(() => plan([filter("egress", 7)], "clsact").claim(session, "policy", "Remove it.")).not.toThrow();
  });
});

describe("tcRevertScript", () => {
  const scratch = mkdtempSync(join(tmpdir(), "bpfleet-tchook-unit-"));
  afterAll(() => rmSync(scratch, { recursive: true, force: true }));

  function run(revert: TcRevertPlan, bin: string, calls: string): string[] {
    for (const tool of ["tc", "bpftool", "ip"]) {
      // A pin handed to tc is read at the time of the call (what the kernel would attach).
      writeFileSync(join(bin, tool), `#!/bin/sh\necho "${tool} $*" >> '${calls}'\nfor a; do last=$a; done\n[ -f "$last" ] && echo "  reads $(cat "$last")" >> '${calls}'\nexit 0\n`);
      chmodSync(join(bin, tool), 0o755);
    }
    const result = spawnSync("sh", ["-c", tcRevertScript(revert)], { env: { PATH: `${bin}:/usr/bin:/bin` }, encoding: "utf8" });
    expect(result.status).toBe(0);
    return existsSync(calls) ? readFileSync(calls, "utf8").trim().split("\n") : [];
  }

  it("puts the previous program back on a hook it ran on, drops the filter elsewhere, and restores the pin after a swap", () => {
    const dir = join(scratch, "swap", "it's");
    mkdirSync(join(dir, "maps"), { recursive: true });
    writeFileSync(join(dir, "prog"), "new");
    writeFileSync(join(dir, "prog_old"), "old");
    const bin = join(scratch, "swap-bin");
    mkdirSync(bin);
    const layout = { dir, program: join(dir, "prog"), maps: join(dir, "maps") } as PinLayout;
    const calls = run(
      {
        layout, iface: "eth0", maps: [`bpftool map update pinned "$D/maps/config" key hex 00`], programPin: "prog",
        filters: [{ slot: { direction: "ingress", priority: 1, handle: 0xab }, program: "", quiet: true }, { slot: { direction: "egress", priority: 1, handle: 0xab } }],
        fresh: false, restoresProgram: true, after: [], qdiscBefore: true,
      },
      bin,
      join(scratch, "swap-calls"),
    );
    expect(calls).toEqual([
      `bpftool map update pinned ${dir}/maps/config key hex 00`,
      // From the pin the previous program is back at, so tc names the filter as before the change.
      `tc filter replace dev eth0 ingress prio 1 handle 0xab bpf da object-pinned ${dir}/prog`,
      "  reads old",
      "tc filter del dev eth0 egress prio 1 handle 0xab bpf",
    ]);
    expect(readFileSync(join(dir, "prog"), "utf8")).toBe("old");
    expect(existsSync(join(dir, "prog_old"))).toBe(false);
  });

  it("removes a fresh resource's pins whole and its clsact qdisc when no filter is left", () => {
    const dir = join(scratch, "fresh", "mir");
    mkdirSync(join(dir, "maps"), { recursive: true });
    const bin = join(scratch, "fresh-bin");
    mkdirSync(bin);
    const layout = { dir, program: join(dir, "prog"), maps: join(dir, "maps") } as PinLayout;
    const calls = run(
      { layout, iface: "eth0", maps: [], programPin: "prog", filters: [], fresh: true, restoresProgram: false, after: ["ip link del dev bpfm0"], qdiscBefore: false },
      bin,
      join(scratch, "fresh-calls"),
    );
    expect(existsSync(dir)).toBe(false);
    // The stub tc prints nothing, so `tc qdisc show` never names a clsact: nothing to remove.
    expect(calls).toEqual(["ip link del dev bpfm0", "tc qdisc show dev eth0"]);
  });
});
