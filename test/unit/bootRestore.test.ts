import { execFileSync, spawnSync } from "node:child_process";
import { chmodSync, existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import type { LocalObject } from "../../provider/remote/objectUpload";
import { pinLayout } from "../../provider/remote/pins";
import {
  batchFileName,
  resourceBootDir,
  resourceRestoreScript,
  restoreAssignments,
  restoreBatchText,
  restoreEntryScript,
  unitText,
  type BootRestoreSpec,
} from "../../provider/remote/bootRestore";
import { UNKNOWN } from "../../provider/dynamicAdapter";
import { ensureDispatcherCommand } from "../../provider/remote/xdpHook";
import { denyOperations, planDeny } from "../../provider/xdpFirewall/plan";
import { checkXdpFirewall } from "../../provider/xdpFirewall/schema";

const object: LocalObject = { path: "/nowhere/xdp_firewall.bpf.o", bytes: Buffer.alloc(0), sha256: "ab".repeat(32) };

function spec(patch: Partial<BootRestoreSpec> = {}): BootRestoreSpec {
  const layout = pinLayout("xdp-firewall", "edge-fw");
  return {
    kind: "xdp-firewall",
    name: "edge-fw",
    layout,
    object,
    mapOperations: denyOperations(planDeny(["192.0.2.9/32", "2001:db8::/32"], []), (m) => `${layout.maps}/${m}`),
    xdp: { interface: "eth0", mode: "auto" },
    ...patch,
  };
}

const scratch = mkdtempSync(join(tmpdir(), "bpfleet-boot-unit-"));
afterAll(() => rmSync(scratch, { recursive: true, force: true }));

describe("boot restore unit", () => {
  const unit = unitText();
  const directives = (section: string) =>
    unit
      .split(/^\[/m)
      .find((s) => s.startsWith(`${section}]`))!
      .split("\n")
      .slice(1)
      .filter((l) => l && !l.startsWith("#"));

  it("is a oneshot that runs the fixed entry point before the network is configured", () => {
    expect(directives("Service")).toEqual(["Type=oneshot", "RemainAfterExit=yes", "ExecStart=/bin/sh /var/lib/bpfleet/boot/restore"]);
    const unitSection = directives("Unit");
    expect(unitSection).toContain("DefaultDependencies=no");
    expect(unitSection).toContain("Wants=network-pre.target");
    expect(unitSection.find((l) => l.startsWith("Before="))).toMatch(/\bnetwork-pre\.target\b/);
    expect(unitSection).toContain("RequiresMountsFor=/var/lib/bpfleet/boot");
    expect(unitSection).toContain("ConditionPathExists=/var/lib/bpfleet/boot/restore");
    // Ordered before network-pre.target, so nothing that comes after the network may be required.
    expect(unit).not.toMatch(/After=.*network(-online)?\.target/);
    expect(directives("Install")).toEqual(["WantedBy=sysinit.target"]);
  });

  it("entry point runs every persisted restore script, carrying on past a failure", () => {
    const entry = restoreEntryScript();
    expect(entry).toContain('for script in /var/lib/bpfleet/boot/*/*/restore.sh; do');
    expect(entry).toContain('sh "$script" || {');
    execFileSync("sh", ["-n", "-c", entry]);
  });
});

describe("per-resource restore script", () => {
  // What the script's own shell makes of the quoted assignments: exactly the values.
  function assigned(text: string): Record<string, string> {
    const out = execFileSync("sh", ["-c", `${text}\nprintf '%s\\0' "$LABEL" "$DIR" "$OBJ" "$BATCH" "$DEV"`]).toString().split("\0");
    return { LABEL: out[0]!, DIR: out[1]!, OBJ: out[2]!, BATCH: out[3]!, DEV: out[4]! };
  }

  it.each([
    ["eth0", "edge-fw"],
    ["0.1-_x", "1_-a"], // valid: starts with a digit, dots, dashes, underscores
    ["e'$(id)`;x", "p q"], // not valid inputs, still only ever data
  ])("passes interface %j and pin dir %j through the shell unchanged", (iface, pin) => {
    const layout = { ...pinLayout("xdp-firewall", "x"), dir: `/sys/fs/bpf/bpfleet/xdp-firewall/${pin}` };
    const values = assigned(restoreAssignments(spec({ layout, xdp: { interface: iface, mode: "native" } }), "/var/lib/bpfleet/boot/b b/$x.batch"));
    expect(values).toEqual({
      LABEL: "xdp-firewall/edge-fw",
      DIR: layout.dir,
      OBJ: `/var/lib/bpfleet/objects/${"ab".repeat(32)}.bpf.o`,
      BATCH: "/var/lib/bpfleet/boot/b b/$x.batch",
      DEV: iface,
    });
  });

  it("attaches in the declared mode with the interface quoted, and only when attached", () => {
    const attach = (mode: "native" | "generic" | "auto", iface = "eth0") =>
      resourceRestoreScript(spec({ xdp: { interface: iface, mode } }), "/b").split("\n").find((l) => l.startsWith("bpftool net attach"));
    expect(attach("native")).toMatch(/^bpftool net attach xdpdrv pinned \/sys\/fs\/bpf\/bpfleet\/xdp-firewall\/edge-fw\/prog_boot dev eth0 \|\|/);
    expect(attach("generic")).toMatch(/^bpftool net attach xdpgeneric pinned /);
    expect(attach("auto")).toMatch(/^bpftool net attach xdp pinned /);
    expect(attach("auto", "a'b")).toContain(`dev 'a'\\''b' ||`);
    expect(resourceRestoreScript(spec({ xdp: undefined }), "/b")).not.toMatch(/net attach/);
  });

  it("parses, and does nothing when the program is pinned already", () => {
    const script = resourceRestoreScript(spec(), "/b");
    execFileSync("sh", ["-n", "-c", script]);
    // A stub bpftool/ip/mount on PATH records any call; with prog pinned there must be none.
    const bin = join(scratch, "bin");
    const calls = join(scratch, "calls");
    mkdirSync(bin, { recursive: true });
    for (const tool of ["bpftool", "ip", "mount"]) {
      writeFileSync(join(bin, tool), `#!/bin/sh\necho "${tool} $*" >> '${calls}'\n`);
      chmodSync(join(bin, tool), 0o755);
    }
    const dir = join(scratch, "pins");
    mkdirSync(dir, { recursive: true });
    writeFileSync(join(dir, "prog"), "");
    const layout = { dir, program: join(dir, "prog"), maps: join(dir, "maps") };
    const result = spawnSync("sh", ["-c", resourceRestoreScript(spec({ layout }), "/b")], { env: { PATH: `${bin}:/usr/bin:/bin` } });
    expect(result.status).toBe(0);
    expect(result.stderr.toString()).toMatch(/xdp-firewall\/edge-fw: pins present, nothing to do/);
    expect(existsSync(calls)).toBe(false);
    expect(existsSync(join(dir, "prog"))).toBe(true);
  });

  it("refuses to build paths or batch lines from unsafe names", () => {
    expect(resourceBootDir("xdp-firewall", "edge-fw")).toBe("/var/lib/bpfleet/boot/xdp-firewall/edge-fw");
    expect(() => resourceBootDir("xdp-firewall", "../etc")).toThrow(/unsafe name/);
    expect(() => resourceBootDir("xdp-firewall", "-x")).toThrow(/unsafe name/);
    expect(() => resourceBootDir("a b", "x")).toThrow(/unsafe kind/);
    expect(() => restoreBatchText([{ op: "delete", map: "/sys/fs/bpf/x y", key: Uint8Array.of(1) }])).toThrow(/unsafe pin path/);
  });

  it("batch: the declared entries as bpftool updates, records and index, named by a digest of the text", () => {
    const text = restoreBatchText(spec().mapOperations);
    const maps = "/sys/fs/bpf/bpfleet/xdp-firewall/edge-fw/maps";
    const zeros = (n: number) => " 00".repeat(n);
    expect(text).toBe(
      // The index from empty maps (the restore loads the object afresh): detail first (the IPv6 long
      // prefix; the way buckets of 192.0.2.9, 0x00017dcd, and of 2001:db8::/32, 0x0001439f, each the key in
      // way 0 written not valid, then valid, the IPv6 key with its tag, 0x10; the IPv6 length set),
      `map update pinned ${maps}/fw_v6_long key hex 20 00 00 00 20 01 0d b8${zeros(12)} value hex 01\n` +
        `map update pinned ${maps}/fw_v4_ways key hex cd 7d 01 00 value hex c0 00 02 09${zeros(44)}${zeros(12)}${zeros(4)}\n` +
        `map update pinned ${maps}/fw_v4_ways key hex cd 7d 01 00 value hex c0 00 02 09${zeros(44)} 01${zeros(11)}${zeros(4)}\n` +
        `map update pinned ${maps}/fw_v6_ways key hex 9f 43 01 00 value hex 20 01 0d b8${zeros(12)}${zeros(176)} 10${zeros(15)} 20${zeros(11)}${zeros(12)}${zeros(8)}\n` +
        `map update pinned ${maps}/fw_v6_ways key hex 9f 43 01 00 value hex 20 01 0d b8${zeros(12)}${zeros(176)} 10${zeros(15)} 20${zeros(11)} 01${zeros(11)}${zeros(8)}\n` +
        `map update pinned ${maps}/fw_v6_lengths key hex 00 00 00 00 value hex${zeros(11)} 80${zeros(4)}\n` +
        // then the blocks: 192.0.2.0/24 is bucket 2 of block 0xc000 (EXACT), 2001:0d is bucket 13 of block 0x2001 (LONGER),
        `map update pinned ${maps}/fw_v4_index key hex 00 c0 00 00 value hex 20${zeros(63)}\n` +
        `map update pinned ${maps}/fw_v6_index key hex 01 20 00 00 value hex 00 00 00 0c${zeros(60)}\n` +
        // then the records.
        `map update pinned ${maps}/deny_v4_exact key hex c0 00 02 09 value hex 01\n` +
        `map update pinned ${maps}/deny_v6_prefix key hex 20 00 00 00 20 01 0d b8${zeros(12)} value hex 01\n`,
    );
    expect(batchFileName(text)).toMatch(/^entries-[0-9a-f]{16}\.batch$/);
    expect(batchFileName(text)).toBe(batchFileName(`${text}`));
    expect(batchFileName(text)).not.toBe(batchFileName(""));
  });
});

describe("restore script of a chain member", () => {
  const dispatcher: LocalObject = { path: "/nowhere/xdp_dispatcher.bpf.o", bytes: Buffer.alloc(0), sha256: "cd".repeat(32) };
  const chained = (iface = "eth0", slot = 0, mode: "native" | "generic" | "auto" = "auto") => spec({ xdp: { interface: iface, mode, chain: { slot, dispatcher } } });
  const lines = (script: string) => script.split("\n");

  it("parses", () => {
    execFileSync("sh", ["-n", "-c", resourceRestoreScript(chained(), "/b")]);
    execFileSync("sh", ["-n", "-c", resourceRestoreScript(chained("a'b$(id)", 7, "native"), "/b")]);
  });

  it.each([
    ["eth0", 0],
    ["eth0.100", 3], // a VLAN: '.' becomes '%' in the dispatcher's pin dir
    ["e'$(id)`;x", 7], // not a valid input, still only ever data
  ])("passes interface %j, slot %j and the dispatcher's paths through the shell unchanged", (iface, slot) => {
    const text = restoreAssignments(chained(iface, slot), "/b");
    const out = execFileSync("sh", ["-c", `${text}\nprintf '%s\\0' "$DEV" "$DISPATCHER_DIR" "$DISPATCHER_OBJ" "$CHAIN" "$SLOT"`]).toString().split("\0");
    const dir = `/sys/fs/bpf/bpfleet/xdp-dispatcher/${iface.replaceAll(".", "%")}`;
    expect(out.slice(0, 5)).toEqual([iface, dir, `/var/lib/bpfleet/objects/${"cd".repeat(32)}.bpf.o`, `${dir}/maps/xdp_chain`, String(slot)]);
  });

  it("a firewall attached alone has no chain assignments", () => {
    expect(restoreAssignments(spec(), "/b")).not.toMatch(/DISPATCHER|CHAIN|SLOT/);
    expect(resourceRestoreScript(spec(), "/b")).not.toMatch(/xdp-dispatcher|lock "\$DEV"/);
  });

  it("refuses a slot outside the chain", () => {
    expect(() => resourceRestoreScript(chained("eth0", 8), "/b")).toThrow(/chain slot must be 0-7, got 8/);
    expect(() => restoreAssignments(chained("eth0", -1), "/b")).toThrow(/chain slot/);
    expect(() => restoreAssignments(chained("eth0", 1.5), "/b")).toThrow(/chain slot/);
  });

  it("runs the chain steps in xdpHook's order, under the chain lock, never overwriting the hook", () => {
    const script = resourceRestoreScript(chained("eth0", 2, "generic"), "/b");
    const steps = [
      '[ -f "$DISPATCHER_OBJ" ] ||', // both objects are checked before anything changes
      'mount -t bpf bpf /sys/fs/bpf',
      'while [ ! -e "/sys/class/net/$DEV" ]; do',
      'lock "$DEV" ||',
      'hooked=$(hook_id "$DEV")', // a foreign program on the hook stops the restore
      'bpftool prog load "$DISPATCHER_OBJ" "$DISPATCHER_DIR/prog" type xdp pinmaps "$DISPATCHER_DIR/maps"',
      'held=$(slot_id "$CHAIN" "$SLOT")', // so does a foreign program in the slot
      'bpftool prog load "$OBJ" "$DIR/prog_boot" type xdp map name xdp_chain pinned "$CHAIN" pinmaps "$DIR/maps"',
      'rm -f -- "$DIR/maps/xdp_chain"', // the shared map is the dispatcher's pin, never the firewall's
      'bpftool batch file "$BATCH"',
      'bpftool map update pinned "$DIR/maps/xdp_chain_next" key 0 0 0 0 value $((SLOT + 1)) 0 0 0',
      'bpftool map update pinned "$CHAIN" key "$SLOT" 0 0 0 value pinned "$DIR/prog_boot"',
      'on_hook "$DEV" "$disp" || bpftool net attach xdpgeneric pinned /sys/fs/bpf/bpfleet/xdp-dispatcher/eth0/prog dev eth0 ||',
      'mv -f -- "$DIR/prog_boot" "$DIR/prog"',
    ];
    const at = steps.map((step) => script.indexOf(step));
    expect(steps.filter((_, i) => at[i]! < 0)).toEqual([]);
    expect([...at].sort((a, b) => a - b)).toEqual(at);
    // The dispatcher is loaded only when it is not pinned already (another member's run, or a provider run, got there first).
    expect(script).toMatch(/if \[ -z "\$disp" \]; then\n {2}rm -rf -- "\$DISPATCHER_DIR"/);
    expect(script).not.toMatch(/overwrite/);
    // The pins are checked again under the lock: a provider run may have restored the firewall meanwhile.
    expect(script.indexOf('if [ -e "$DIR/prog" ]; then say "pins present', script.indexOf('lock "$DEV" ||'))).toBeGreaterThan(0);
  });

  it("shares xdpHook's lock file and chain helpers, so a provider run and the restore exclude each other", () => {
    const hook = lines(ensureDispatcherCommand("eth0", "/o")[2]!);
    const restore = lines(resourceRestoreScript(chained(), "/b"));
    for (const fn of ["lock", "id_of", "on_hook", "slot_id"]) {
      const line = (text: string[]) => text.find((l) => l.startsWith(`${fn}() {`));
      expect(line(hook), fn).toBeDefined();
      expect(line(restore), fn).toBe(line(hook));
    }
  });

  it("does nothing when the program is pinned already", () => {
    const bin = join(scratch, "bin-chain");
    const calls = join(scratch, "calls-chain");
    mkdirSync(bin, { recursive: true });
    for (const tool of ["bpftool", "ip", "mount", "flock"]) {
      writeFileSync(join(bin, tool), `#!/bin/sh\necho "${tool} $*" >> '${calls}'\n`);
      chmodSync(join(bin, tool), 0o755);
    }
    const dir = join(scratch, "pins-chain");
    mkdirSync(dir, { recursive: true });
    writeFileSync(join(dir, "prog"), "");
    const layout = { dir, program: join(dir, "prog"), maps: join(dir, "maps") };
    const result = spawnSync("sh", ["-c", resourceRestoreScript({ ...chained(), layout }, "/b")], { env: { PATH: `${bin}:/usr/bin:/bin` } });
    expect(result.status).toBe(0);
    expect(result.stderr.toString()).toMatch(/pins present, nothing to do/);
    expect(existsSync(calls)).toBe(false);
  });
});

describe("XdpFirewall check: bootRestore", () => {
  const base = {
    host: { address: "10.200.1.2", hostKey: "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB" },
    interface: "eth0",
    name: "edge-fw",
    deny: ["192.0.2.9"],
  };

  it("defaults to false and accepts true", () => {
    expect(checkXdpFirewall(base).inputs?.bootRestore).toBe(false);
    expect(checkXdpFirewall({ ...base, bootRestore: true }).inputs?.bootRestore).toBe(true);
    expect(checkXdpFirewall({ ...base, bootRestore: "yes" }).failures?.[0]?.property).toBe("bootRestore");
  });

  it("accepts it together with chainPriority, known or unknown during preview", () => {
    const result = checkXdpFirewall({ ...base, bootRestore: true, chainPriority: 1 });
    expect(result.failures).toBeUndefined();
    expect(result.inputs).toMatchObject({ bootRestore: true, chainPriority: 1 });
    expect(checkXdpFirewall({ ...base, bootRestore: true, chainPriority: UNKNOWN }).failures).toBeUndefined();
  });
});
