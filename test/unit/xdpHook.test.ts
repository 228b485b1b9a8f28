// The pure half of xdpHook.ts: where a program runs (hookPosition), whether a
// placement may take the hook (claimHook), what a converge runs (HookPlan) and
// the shell that undoes it (hookRevertShell). Every generated script is parsed
// by a real `sh -n`; values are evaluated by a real shell to prove the quoting.
import { spawnSync } from "node:child_process";
import { describe, expect, it } from "vitest";
import { PIN_ROOT } from "../../provider/remote/hostDirs";
import { pinLayout, type PinLayout } from "../../provider/remote/pins";
import { HostPreconditionError } from "../../provider/remote/preflight";
import type { ChainSurvey } from "../../provider/remote/resourceSurvey";
import type { XdpAttachment } from "../../provider/remote/xdpAttach";
import type { SshSession } from "../../provider/remote/ssh";
import { chainMapPin, claimHook, dispatcherDir, HookPlan, hookPosition, hookRevertShell, placedAttachment, type HookChange, type HookPosition, type XdpPlacement } from "../../provider/remote/xdpHook";

const OURS = 10;
const OLD = 11; // our previous program, still pinned as prog_old
const OTHER = 20; // another bpfleet resource's program
const FOREIGN = 42; // attached by someone else
const DISPATCHER = 100;

const layout = pinLayout("xdp-firewall", "edge");
const DIR = dispatcherDir("eth0");

function chain(dispatcherId: number | undefined, slots: [number, number][] = [], owners: [number, string][] = []): ChainSurvey {
  return { dispatcherId, slots: new Map(slots), owners: new Map(owners) };
}
const noChain = chain(undefined);
const hookOf = (programId: number, mode = "driver"): XdpAttachment => ({ mode, programId });
const alone = (iface = "eth0", mode: XdpPlacement["mode"] = "native"): XdpPlacement => ({ iface, mode, chainPriority: undefined });
const chained = (slot: number, iface = "eth0", mode: XdpPlacement["mode"] = "native"): XdpPlacement => ({ iface, mode, chainPriority: slot });

/** `sh -n`: the script parses (nothing runs). */
function syntaxError(script: string): string | undefined {
  const result = spawnSync("sh", ["-n"], { input: script, encoding: "utf8" });
  return result.status === 0 ? undefined : result.stderr || `exit ${result.status}`;
}

/** The script an `sh -c SCRIPT ...` argv runs. */
function scriptOf(argv: string[]): string {
  expect(argv.slice(0, 2)).toEqual(["sh", "-c"]);
  return argv[2]!;
}

/** The message claimHook refuses with, or undefined when it accepts. */
function refusal(placement: XdpPlacement, hook: XdpAttachment | undefined, survey: ChainSurvey, programIds: (number | undefined)[] = [OURS]): string | undefined {
  const position = hookPosition(hook, survey, programIds);
  try {
    claimHook("root@10.0.0.2", "firewall", placement, hook, survey, position);
    return undefined;
  } catch (err) {
    expect(err).toBeInstanceOf(HostPreconditionError);
    return (err as Error).message;
  }
}

describe("sh -n", () => {
  it("catches a syntax error, so a passing parse means something", () => {
    expect(syntaxError("if then\n")).toMatch(/unexpected/);
    expect(syntaxError("echo ok\n")).toBeUndefined();
  });
});

describe("hookPosition", () => {
  it("is alone when the hook runs one of the ids", () => {
    const hook = hookOf(OURS, "generic");
    expect(hookPosition(hook, noChain, [OURS])).toEqual({ kind: "alone", attachment: hook });
    expect(hookPosition(hook, noChain, [undefined, OLD, OURS])).toEqual({ kind: "alone", attachment: hook });
  });

  it("is chained when a slot holds one of the ids, attached only while the hook runs the dispatcher", () => {
    const survey = chain(DISPATCHER, [[0, OTHER], [3, OURS]]);
    expect(hookPosition(hookOf(DISPATCHER, "generic"), survey, [OURS])).toEqual({ kind: "chained", slot: 3, attachment: { mode: "generic", programId: OURS } });
    expect(hookPosition(undefined, survey, [OURS])).toEqual({ kind: "chained", slot: 3, attachment: undefined });
    // A hook that runs something else does not run the chain.
    expect(hookPosition(hookOf(FOREIGN), survey, [OURS])).toEqual({ kind: "chained", slot: 3, attachment: undefined });
  });

  it("is chained through a previous program id too", () => {
    expect(hookPosition(hookOf(DISPATCHER), chain(DISPATCHER, [[5, OLD]]), [OURS, OLD])).toEqual({ kind: "chained", slot: 5, attachment: { mode: "driver", programId: OLD } });
  });

  it("is none when neither the hook nor a slot holds the ids", () => {
    expect(hookPosition(undefined, noChain, [OURS])).toEqual({ kind: "none" });
    expect(hookPosition(hookOf(FOREIGN), noChain, [OURS])).toEqual({ kind: "none" });
    expect(hookPosition(hookOf(DISPATCHER), chain(DISPATCHER, [[0, OTHER]]), [OURS])).toEqual({ kind: "none" });
  });

  it("ignores undefined entries: no program matches an absent id", () => {
    expect(hookPosition(undefined, noChain, [undefined])).toEqual({ kind: "none" });
    expect(hookPosition(hookOf(OURS), chain(DISPATCHER, [[1, OTHER]]), [undefined, undefined])).toEqual({ kind: "none" });
    expect(hookPosition(undefined, chain(DISPATCHER, [[2, OURS]]), [undefined, OURS])).toEqual({ kind: "chained", slot: 2, attachment: undefined });
  });

  it("prefers the hook when a program is both alone and in a slot", () => {
    expect(hookPosition(hookOf(OURS), chain(DISPATCHER, [[2, OURS]]), [OURS]).kind).toBe("alone");
  });
});

describe("placedAttachment", () => {
  const aloneAt: HookPosition = { kind: "alone", attachment: hookOf(OURS, "generic") };
  const chainedAt3: HookPosition = { kind: "chained", slot: 3, attachment: { mode: "driver", programId: OURS } };
  const chainedDetached: HookPosition = { kind: "chained", slot: 3, attachment: undefined };

  it.each<[string, HookPosition, XdpPlacement, XdpAttachment | undefined]>([
    ["alone, wanted alone", aloneAt, alone(), hookOf(OURS, "generic")],
    ["alone, wanted chained", aloneAt, chained(3), undefined],
    ["chained, wanted alone", chainedAt3, alone(), undefined],
    ["chained at the wanted slot", chainedAt3, chained(3), { mode: "driver", programId: OURS }],
    ["chained at another slot", chainedAt3, chained(4), undefined],
    ["in the wanted slot, dispatcher not attached", chainedDetached, chained(3), undefined],
    ["nowhere, wanted alone", { kind: "none" }, alone(), undefined],
    ["nowhere, wanted chained", { kind: "none" }, chained(0), undefined],
  ])("%s", (_, position, placement, expected) => {
    expect(placedAttachment(position, placement)).toEqual(expected);
  });
});

describe("claimHook", () => {
  it("accepts an empty hook, alone or chained", () => {
    expect(refusal(alone(), undefined, noChain)).toBeUndefined();
    expect(refusal(chained(0), undefined, noChain)).toBeUndefined();
  });

  it("lets a program take the hook alone from a dispatcher that runs nobody (a leftover), and removes it afterwards", () => {
    const empty = chain(DISPATCHER);
    expect(refusal(alone(), hookOf(DISPATCHER), empty)).toBeUndefined();
    const hookPlan = new HookPlan(alone(), true, hookOf(DISPATCHER), empty, layout, OURS);
    expect(hookPlan.installCommands("/p", [OURS])[0]).toContain("overwrite");
    const cleanup = hookPlan.cleanupCommands([OURS]);
    expect(cleanup).toHaveLength(1);
    expect(cleanup[0]!.slice(4, 6)).toEqual(["eth0", `${PIN_ROOT}/xdp-dispatcher/eth0`]);
  });

  it("accepts the hook when it runs our own program alone, for either placement", () => {
    expect(refusal(alone(), hookOf(OURS), noChain)).toBeUndefined();
    expect(refusal(chained(2), hookOf(OURS), noChain)).toBeUndefined();
  });

  it("refuses a foreign program and says how to free the interface", () => {
    const message = refusal(alone("eth1"), hookOf(FOREIGN, "generic"), noChain);
    expect(message).toContain("root@10.0.0.2: interface eth1 already has XDP program id 42 attached (generic mode)");
    expect(message).toContain("this firewall did not attach");
    expect(message).toContain("'ip link set dev eth1 xdp off'");
    expect(message).not.toContain("chainPriority");
    expect(message).toMatch(/or pick another interface\. Nothing was changed\.$/);
  });

  it("refuses a foreign program for a chained placement too: the dispatcher never replaces it", () => {
    const message = refusal(chained(1, "eth1"), hookOf(FOREIGN), noChain);
    expect(message).toContain("already has XDP program id 42 attached (driver mode) alone");
    expect(message).toContain("did not attach");
    expect(message).toContain("'ip link set dev eth1 xdp off'");
  });

  it("names another bpfleet resource on the hook by class and pin name, and gives the ways out of a rename or a swap", () => {
    const survey = chain(undefined, [], [[OTHER, "maglev/web"]]);
    const alonePlacement = refusal(alone(), hookOf(OTHER), survey)!;
    expect(alonePlacement).toMatch(/^root@10\.0\.0\.2: interface eth0 already runs the XDP program of bpfleet's MaglevService "web" \(id 20, driver mode, pins \/sys\/fs\/bpf\/bpfleet\/maglev\/web\), attached alone; this firewall would displace it/);
    expect(alonePlacement).toContain("give MaglevService \"web\" chainPriority 0 and this firewall chainPriority 1");
    expect(alonePlacement).toContain("`pulumi destroy --target '**pulumi-nodejs:dynamic/bpfleet:MaglevService::web'`");
    // A firewall is no renamed load balancer.
    expect(alonePlacement).not.toContain("aliases");
    expect(alonePlacement).not.toContain("xdp off");
    expect(alonePlacement).toMatch(/\nNothing was changed\.$/);

    const owners = chain(undefined, [], [[OTHER, "xdp-firewall/edge"]]);
    const chainedPlacement = refusal(chained(4), hookOf(OTHER), owners)!;
    expect(chainedPlacement).toContain("already runs the XDP program of bpfleet's XdpFirewall \"edge\" (id 20, driver mode, pins /sys/fs/bpf/bpfleet/xdp-firewall/edge), attached alone, not through bpfleet's dispatcher.");
    expect(chainedPlacement).toContain("give XdpFirewall \"edge\" a chainPriority too (e.g. 0)");
    expect(chainedPlacement).toContain("`aliases: [{ name: \"edge\" }]`");
  });

  it("names a bpfleet pin of no XDP resource kind as a pin, with the old advice", () => {
    const message = refusal(alone(), hookOf(OTHER), chain(undefined, [], [[OTHER, "tc-policy/odd"]]));
    expect(message).toContain("already has bpfleet's tc-policy/odd, XDP program id 20 attached (driver mode), which this firewall did not attach.");
    expect(message).toContain("give this firewall a chainPriority (0-7, lower runs first) and the other bpfleet resource one too. Nothing was changed.");
  });

  it("refuses a slot another program holds, naming the slot and its owner, and offers the free slots", () => {
    const owned = chain(DISPATCHER, [[3, OTHER]], [[OTHER, "maglev/web"]]);
    const taken = refusal(chained(3), hookOf(DISPATCHER), owned)!;
    expect(taken).toContain("chainPriority 3 on eth0 is taken by bpfleet's MaglevService \"web\" (pins /sys/fs/bpf/bpfleet/maglev/web).");
    expect(taken).toContain("give this firewall a free chainPriority (0, 1, 2, 4, 5, 6, 7; lower runs first)");
    const foreign = chain(DISPATCHER, [[3, FOREIGN]]);
    expect(refusal(chained(3), hookOf(DISPATCHER), foreign)).toBe("root@10.0.0.2: chainPriority 3 on eth0 is taken by program id 42. Give each program sharing the interface its own chainPriority (0-7). Nothing was changed.");
    // Moving from our slot 1 into the taken slot 3 is refused as well; slot 1 is ours, so not free.
    const moving = chain(DISPATCHER, [[1, OURS], [3, OTHER]], [[OTHER, "maglev/web"]]);
    const move = refusal(chained(3), hookOf(DISPATCHER), moving)!;
    expect(move).toContain("chainPriority 3 on eth0 is taken by bpfleet's MaglevService \"web\"");
    expect(move).toContain("a free chainPriority (0, 2, 4, 5, 6, 7;");
  });

  it("accepts a chained placement beside other members while the hook runs the dispatcher", () => {
    const survey = chain(DISPATCHER, [[0, OTHER]], [[OTHER, "xdp-firewall/edge"]]);
    expect(refusal(chained(1), hookOf(DISPATCHER), survey)).toBeUndefined();
    // Our own slot, and a move to a free one.
    expect(refusal(chained(1), hookOf(DISPATCHER), chain(DISPATCHER, [[0, OTHER], [1, OURS]]))).toBeUndefined();
    expect(refusal(chained(6), hookOf(DISPATCHER), chain(DISPATCHER, [[0, OTHER], [1, OURS]]))).toBeUndefined();
  });

  it("refuses to go alone on an interface whose dispatcher runs other members, naming them and their chainPriority", () => {
    const survey = chain(DISPATCHER, [[0, OTHER], [2, OURS], [5, 77]], [[OTHER, "xdp-firewall/edge"]]);
    const fromChain = refusal(alone(), hookOf(DISPATCHER), survey);
    expect(fromChain).toContain("interface eth0 already runs bpfleet's XDP dispatcher, which runs bpfleet's XdpFirewall \"edge\" (chainPriority 0), program id 77 (chainPriority 5)");
    expect(fromChain).not.toContain("chainPriority 2");
    expect(fromChain).toContain("give this firewall a chainPriority (0-7, lower runs first). Nothing was changed.");
    expect(fromChain).not.toContain("pulumi destroy");

    // One other member, another resource's: it is the one to take over from.
    const fresh = refusal(alone(), hookOf(DISPATCHER), chain(DISPATCHER, [[0, OTHER]], [[OTHER, "maglev/web"]]), [undefined])!;
    expect(fresh).toContain("interface eth0 runs bpfleet's XDP dispatcher for one program, that of bpfleet's MaglevService \"web\" (chainPriority 0, pins /sys/fs/bpf/bpfleet/maglev/web); attached alone, this firewall would displace it");
    expect(fresh).toContain("give this firewall a free chainPriority (1, 2, 3, 4, 5, 6, 7; lower runs first)");
    expect(fresh).toContain("`pulumi destroy --target '**pulumi-nodejs:dynamic/bpfleet:MaglevService::web'`");
  });

  it("lets the only chain member go alone (its attach replaces the dispatcher)", () => {
    expect(refusal(alone(), hookOf(DISPATCHER), chain(DISPATCHER, [[4, OURS]]))).toBeUndefined();
  });
});

describe("HookPlan", () => {
  const plan = (placement: XdpPlacement, attached: boolean, hook: XdpAttachment | undefined, survey: ChainSurvey, programId: number | undefined = OURS) =>
    new HookPlan(placement, attached, hook, survey, layout, programId);
  const nextPin = `${layout.maps}/xdp_chain_next`;
  const inSlot = (slot: number) => chain(DISPATCHER, [[slot, OURS]]);

  describe("inPlace and rebinds", () => {
    it.each<[string, HookPlan, boolean, boolean]>([
      ["alone, stays alone", plan(alone(), true, hookOf(OURS), noChain), true, false],
      ["alone, goes chained", plan(chained(2), true, hookOf(OURS), noChain), false, true],
      ["chained, stays in its slot", plan(chained(2), true, hookOf(DISPATCHER), inSlot(2)), true, false],
      ["chained, moves to another slot", plan(chained(5), true, hookOf(DISPATCHER), inSlot(2)), false, false],
      ["chained, dispatcher not attached", plan(chained(2), true, undefined, inSlot(2)), false, false],
      ["chained, goes alone", plan(alone(), true, hookOf(DISPATCHER), inSlot(2)), false, true],
      ["nowhere, attaches alone", plan(alone(), true, undefined, noChain), false, true],
      ["nowhere, enters the chain", plan(chained(0), true, undefined, noChain), false, true],
      ["nowhere, stays detached alone", plan(alone(), false, undefined, noChain), true, false],
      ["alone, detaches", plan(alone(), false, hookOf(OURS), noChain), false, false],
      // A staged program is bound to a chain only when it is attached again.
      ["chained, detaches alone", plan(alone(), false, hookOf(DISPATCHER), inSlot(2)), false, false],
    ])("%s", (_, hookPlan, inPlace, rebinds) => {
      expect(hookPlan.inPlace).toBe(inPlace);
      expect(hookPlan.rebinds).toBe(rebinds);
    });
  });

  it("binds a chained program to the interface's shared xdp_chain, one alone to none", () => {
    expect(plan(chained(0, "eth0.100"), true, undefined, noChain).sharedChain).toBe(`${PIN_ROOT}/xdp-dispatcher/eth0%100/maps/xdp_chain`);
    expect(plan(chained(0), true, undefined, noChain).sharedChain).toBe(chainMapPin("eth0"));
    expect(plan(alone(), true, undefined, noChain).sharedChain).toBeUndefined();
    expect(plan(alone(), true, undefined, noChain).nextPin).toBe(nextPin);
  });

  describe("change", () => {
    it.each<[string, HookPlan, boolean, boolean, HookChange]>([
      ["no pins before", plan(alone(), true, undefined, noChain, undefined), false, true, "new"],
      ["no pins before, even unloaded", plan(chained(1), true, undefined, noChain, undefined), false, false, "new"],
      ["a new program", plan(alone(), true, hookOf(OURS), noChain), true, true, "swap"],
      ["same program, moves slot", plan(chained(5), true, hookOf(DISPATCHER), inSlot(2)), true, false, "attach"],
      ["same program, in place", plan(alone(), true, hookOf(OURS), noChain), true, false, "keep"],
      ["same program, staged", plan(alone(), false, undefined, noChain), true, false, "keep"],
      ["same program, being detached", plan(alone(), false, hookOf(OURS), noChain), true, false, "keep"],
    ])("%s", (_, hookPlan, hadPins, loads, expected) => {
      expect(hookPlan.change(hadPins, loads)).toBe(expected);
    });
  });

  describe("installCommands", () => {
    const pin = `${layout.program}_new`;

    it("runs nothing for a staged program", () => {
      expect(plan(alone(), false, hookOf(OURS), noChain).installCommands(pin, [OURS])).toEqual([]);
      expect(plan(chained(1), false, undefined, noChain).installCommands(pin, [OURS])).toEqual([]);
    });

    it("attaches alone on an empty hook without overwrite, in the placement's mode", () => {
      expect(plan(alone("eth0", "native"), true, undefined, noChain).installCommands(pin, [])).toEqual([["bpftool", "net", "attach", "xdpdrv", "pinned", pin, "dev", "eth0"]]);
      expect(plan(alone("eth0", "generic"), true, undefined, noChain).installCommands(pin, [])).toEqual([["bpftool", "net", "attach", "xdpgeneric", "pinned", pin, "dev", "eth0"]]);
      expect(plan(alone("eth0", "auto"), true, undefined, noChain).installCommands(pin, [])).toEqual([["bpftool", "net", "attach", "xdp", "pinned", pin, "dev", "eth0"]]);
    });

    it("replaces our own program alone with overwrite, in the mode it runs in", () => {
      expect(plan(alone("eth0", "auto"), true, hookOf(OURS, "generic"), noChain).installCommands(pin, [OURS])).toEqual([["bpftool", "net", "attach", "xdpgeneric", "pinned", pin, "dev", "eth0", "overwrite"]]);
    });

    it("replaces the dispatcher in one netlink call when leaving the chain", () => {
      const leaving = plan(alone("eth0", "generic"), true, hookOf(DISPATCHER, "driver"), inSlot(2));
      expect(leaving.installCommands(pin, [OURS])).toEqual([["bpftool", "net", "attach", "xdpdrv", "pinned", pin, "dev", "eth0", "overwrite"]]);
    });

    it("enters the chain with the slot, the program pin, the next pin, the attach type and our ids", () => {
      const commands = plan(chained(3, "eth0.100", "generic"), true, hookOf(OURS), noChain).installCommands(pin, [OURS, OLD]);
      expect(commands).toHaveLength(1);
      expect(commands[0]!.slice(3)).toEqual(["bpfleet-chain", "eth0.100", `${PIN_ROOT}/xdp-dispatcher/eth0%100`, "3", pin, nextPin, "xdpgeneric", "10", "11"]);
      expect(syntaxError(scriptOf(commands[0]!))).toBeUndefined();
    });
  });

  describe("cleanupCommands", () => {
    it("leaves the old slot after moving to another one, without touching the next pin", () => {
      const commands = plan(chained(5), true, hookOf(DISPATCHER), inSlot(2)).cleanupCommands([OURS]);
      expect(commands.map((c) => c.slice(3))).toEqual([["bpfleet-chain", "eth0", DIR, "2", "", "10"]]);
      expect(syntaxError(scriptOf(commands[0]!))).toBeUndefined();
    });

    it("leaves the chain and resets the next pin after going alone", () => {
      const commands = plan(alone(), true, hookOf(DISPATCHER), inSlot(2)).cleanupCommands([OURS]);
      expect(commands.map((c) => c.slice(3))).toEqual([["bpfleet-chain", "eth0", DIR, "2", nextPin, "10"]]);
      expect(syntaxError(scriptOf(commands[0]!))).toBeUndefined();
    });

    it("runs nothing when the program stays where it was, or ran alone", () => {
      expect(plan(chained(2), true, hookOf(DISPATCHER), inSlot(2)).cleanupCommands([OURS])).toEqual([]);
      expect(plan(chained(2), true, hookOf(OURS), noChain).cleanupCommands([OURS])).toEqual([]);
      expect(plan(alone(), true, hookOf(OURS), noChain).cleanupCommands([OURS])).toEqual([]);
      // Staged: release() takes it off, not cleanup.
      expect(plan(alone(), false, hookOf(DISPATCHER), inSlot(2)).cleanupCommands([OURS])).toEqual([]);
    });
  });

  describe("prepare and release", () => {
    function recorder() {
      const runs: string[][] = [];
      const session = { run: async (argv: string[]) => (runs.push(argv), { code: 0, stdout: "", stderr: "" }) } as unknown as SshSession;
      return { runs, session };
    }

    it("loads the dispatcher for an attached chained placement, and only then", async () => {
      const chainedRun = recorder();
      await plan(chained(1), true, undefined, noChain).prepare(chainedRun.session, async () => "/var/lib/bpfleet/objects/d.o");
      expect(chainedRun.runs.map((c) => c.slice(3))).toEqual([["bpfleet-chain", "eth0", DIR, "/var/lib/bpfleet/objects/d.o"]]);
      expect(syntaxError(scriptOf(chainedRun.runs[0]!))).toBeUndefined();

      const aloneRun = recorder();
      await plan(alone(), true, undefined, noChain).prepare(aloneRun.session, async () => "unused");
      expect(aloneRun.runs).toEqual([]);
    });

    it("takes a staged program off wherever it ran", async () => {
      const fromChain = recorder();
      await plan(alone(), false, hookOf(DISPATCHER), inSlot(2)).release(fromChain.session, [OURS]);
      expect(fromChain.runs.map((c) => c.slice(3))).toEqual([["bpfleet-chain", "eth0", DIR, "2", "", "10"]]);

      const fromHook = recorder();
      await plan(alone(), false, hookOf(OURS, "generic"), noChain).release(fromHook.session, [OURS]);
      expect(fromHook.runs).toEqual([["bpftool", "net", "detach", "xdpgeneric", "dev", "eth0"]]);

      const attached = recorder();
      await plan(alone(), true, hookOf(OURS), noChain).release(attached.session, [OURS]);
      expect(attached.runs).toEqual([]);
    });

    // A staged (attached: false) chained program must not be loaded against the
    // interface's shared xdp_chain unless something pins it: it is bound when attached.
    it("does not bind a staged program to a chain map nobody creates", async () => {
      const staged = plan(chained(1), false, undefined, noChain, undefined);
      const run = recorder();
      await staged.prepare(run.session, async () => "/var/lib/bpfleet/objects/d.o");
      expect(staged.sharedChain).toBeUndefined();
      expect(staged.rebinds).toBe(false);
      expect(run.runs).toEqual([]);
    });
  });
});

describe("hookRevertShell", () => {
  const aloneAt = (mode = "driver"): HookPosition => ({ kind: "alone", attachment: hookOf(OURS, mode) });
  const chainedAt = (slot: number): HookPosition => ({ kind: "chained", slot, attachment: { mode: "driver", programId: OURS } });
  const none: HookPosition = { kind: "none" };
  const rmPins = `rm -rf -- ${layout.dir}`;
  const detachAlone = `if on_hook "$DEV" "$(id_of "$P")"; then detach_hook "$DEV"; fi`;
  const leaveSlot = (slot: number) => `lock "$DEV"\nleave "$DEV" "$DIR" ${slot} "$(id_of "$P")"`;
  const restoreOld = `mv -f "$P"_old "$P"`;
  const reattachOld = `bpftool net attach xdp pinned "$P"_old dev "$DEV" overwrite || bpftool net attach xdpgeneric pinned "$P"_old dev "$DEV" overwrite`;
  const reattachDispatcher = `bpftool net attach xdp pinned "$DIR/prog" dev "$DEV" overwrite || bpftool net attach xdpgeneric pinned "$DIR/prog" dev "$DEV" overwrite`;
  const oldIntoSlot = (slot: number) => `bpftool map update pinned "$DIR/maps/xdp_chain" key ${slot} 0 0 0 value pinned "$P"_old`;

  const cases: [string, XdpPlacement, HookPosition, HookChange, string[], string[]][] = [
    ["new, alone", alone(), none, "new", [detachAlone, rmPins], ["leave ", restoreOld]],
    ["new, chained", chained(3), none, "new", [leaveSlot(3), rmPins], [detachAlone, restoreOld]],
    ["attach, alone", alone(), none, "attach", [detachAlone], [rmPins, restoreOld]],
    ["attach, chained slot 2 -> 5", chained(5), chainedAt(2), "attach", [leaveSlot(5)], [rmPins, restoreOld, "leave \"$DEV\" \"$DIR\" 2"]],
    ["swap, alone -> alone", alone(), aloneAt("generic"), "swap", [reattachOld, restoreOld], ["leave ", rmPins]],
    ["swap, alone -> chained", chained(4), aloneAt(), "swap", [`${reattachOld}\n${leaveSlot(4)}\n${restoreOld}`], [rmPins]],
    ["swap, chained -> same slot", chained(1), chainedAt(1), "swap", [`${oldIntoSlot(1)}\n${restoreOld}`], ["leave ", "net attach", rmPins]],
    ["swap, chained -> another slot", chained(6), chainedAt(1), "swap", [`${oldIntoSlot(1)}\n${leaveSlot(6)}\n${restoreOld}`], ["net attach", rmPins]],
    ["swap, chained -> alone", alone(), chainedAt(3), "swap", [`${oldIntoSlot(3)}\n${reattachDispatcher}\n${restoreOld}`], ["leave ", rmPins]],
    ["swap, nowhere -> alone", alone(), none, "swap", [`${detachAlone}\n${restoreOld}`], ["leave ", rmPins]],
    ["swap, nowhere -> chained", chained(0), none, "swap", [`${leaveSlot(0)}\n${restoreOld}`], [rmPins]],
    ["keep, alone", alone(), aloneAt(), "keep", [], ["leave ", "net attach", "map update", restoreOld, rmPins, detachAlone]],
    ["keep, chained", chained(2), chainedAt(2), "keep", [], ["leave ", "net attach", "map update", restoreOld, rmPins]],
  ];

  it.each(cases)("%s: runs what undoes it, and parses", (_, placement, position, change, present, absent) => {
    const script = hookRevertShell(layout, placement, position, change);
    for (const line of present) expect(script).toContain(line);
    for (const line of absent) expect(script.slice(script.indexOf("\nP="))).not.toContain(line);
    expect(script).toContain(`\nP=${layout.program}\nDEV=eth0\nDIR=${DIR}\n`);
    expect(script.endsWith("\n")).toBe(true);
    expect(syntaxError(script)).toBeUndefined();
  });

  it("never stops at a failed step", () => {
    for (const [, placement, position, change] of cases) expect(hookRevertShell(layout, placement, position, change)).not.toMatch(/set -e/);
  });

  it("keeps a VLAN interface's name for the device, and uses its pin-safe form for the dispatcher dir", () => {
    const script = hookRevertShell(layout, chained(1, "eth0.100"), none, "new");
    expect(script).toContain(`\nDEV=eth0.100\nDIR=${PIN_ROOT}/xdp-dispatcher/eth0%100\n`);
    expect(syntaxError(script)).toBeUndefined();
  });

  /** Runs the script's value assignments (and its pin removal, as a printf) in a real shell. */
  function evaluated(script: string): string[] {
    const lines = script.split("\n");
    const assignments = lines.filter((l) => /^(P|DEV|DIR)=/.test(l));
    const removal = lines.find((l) => l.startsWith("rm -rf -- "))!.replace(/^rm -rf -- /, "printf '%s\\n' ");
    const out = spawnSync("sh", ["-c", `${assignments.join("\n")}\nprintf '%s\\n' "$P" "$DEV" "$DIR"\n${removal}`], { encoding: "utf8", cwd: "/tmp" });
    expect(out.status).toBe(0);
    return out.stdout.split("\n").slice(0, -1);
  }

  it("passes valid names through bare: pinName and interfaceName allow only characters a shell does not interpret", () => {
    // The most hostile names validation lets through: leading digits, '-', '_', and '.' in a VLAN name.
    const hostileButValid = pinLayout("xdp-firewall", "0-_-x");
    const script = hookRevertShell(hostileButValid, chained(7, "9a_-.b"), none, "new");
    expect(evaluated(script)).toEqual([hostileButValid.program, "9a_-.b", `${PIN_ROOT}/xdp-dispatcher/9a_-%b`, hostileButValid.dir]);
    expect(syntaxError(script)).toBeUndefined();
  });

  it("single-quotes any value a shell would interpret, and the shell gets it back unchanged", () => {
    // Not valid inputs (validation refuses them); the quoting must hold regardless.
    const dir = `${PIN_ROOT}/xdp-firewall/it's $(touch pwned) \`id\` ;x`;
    const hostile: PinLayout = { dir, program: `${dir}/prog`, maps: `${dir}/maps` };
    const iface = "e'th $(id)";
    const script = hookRevertShell(hostile, chained(2, iface), none, "new");
    expect(script).toContain(`P='${PIN_ROOT}/xdp-firewall/it'\\''s $(touch pwned) \`id\` ;x/prog'`);
    expect(script).toContain(`DEV='e'\\''th $(id)'`);
    expect(script).toContain(`rm -rf -- '${PIN_ROOT}/xdp-firewall/it'\\''s $(touch pwned) \`id\` ;x'`);
    expect(evaluated(script)).toEqual([hostile.program, iface, `${PIN_ROOT}/xdp-dispatcher/e'th $(id)`, dir]);
    expect(syntaxError(script)).toBeUndefined();
  });

  // The program's xdp_chain_next map is shared by prog and prog_old (loads reuse map
  // pins), and entering slot B wrote B+1 into it. A revert that leaves the program (or
  // prog_old) in its old slot A must write A+1 back, or the program continues the
  // chain from the wrong slot (skipping or re-running members).
  it.each<[string, HookPosition, HookChange]>([
    ["swap, chained 1 -> 6", chainedAt(1), "swap"],
    ["attach, chained 1 -> 6", chainedAt(1), "attach"],
  ])("%s: restores the next pin of the slot the program runs in again", (_, position, change) => {
    const script = hookRevertShell(layout, chained(6), position, change);
    expect(script).toContain(`NEXT=${layout.maps}/xdp_chain_next`);
    expect(script).toContain('bpftool map update pinned "$NEXT" key 0 0 0 0 value 2 0 0 0');
  });
});
