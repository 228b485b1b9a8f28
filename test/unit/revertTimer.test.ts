// The revert timer's host half (sh/revert-*.sh) run for real by the local sh, in a
// scratch guard directory: arming, firing, disarming, the late disarm, the bound on
// fired guards, and settling one resource's pending reverts.
import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { GUARD_LOG_BYTES, KEPT_FIRED_GUARDS } from "../../provider/remote/revertTimer";
import { scriptArgs, shellScript } from "../../provider/remote/shellScript";

const scratch = mkdtempSync(join(tmpdir(), "bpfleet-revert-unit-"));
afterAll(() => rmSync(scratch, { recursive: true, force: true }));

function run(name: string, values: Record<string, string>, input?: string) {
  return spawnSync("sh", ["-c", shellScript(name), "bpfleet", ...scriptArgs(name, values)], { input, encoding: "utf8", timeout: 20000 });
}

let n = 0;
/** A fresh guard directory (not made yet: arm makes it) under a root-only parent. */
function guards(): string {
  const parent = join(scratch, `run${++n}`);
  mkdirSync(parent, { mode: 0o700 });
  return join(parent, "guards");
}

function arm(dir: string, token: string, seconds: number, revert: string) {
  return run("revert-arm", { guards: dir, token, seconds: String(seconds), keep: String(KEPT_FIRED_GUARDS), log_bytes: String(GUARD_LOG_BYTES) }, revert);
}

async function until(what: () => boolean, ms = 8000): Promise<void> {
  const end = Date.now() + ms;
  while (!what()) {
    if (Date.now() > end) throw new Error("timed out");
    await new Promise((r) => setTimeout(r, 100));
  }
}

describe("revert timer scripts", () => {
  it("an armed revert fires after its seconds, keeping its marker and log", async () => {
    const dir = guards();
    const marker = join(scratch, "fired-1");
    expect(arm(dir, "t1", 1, `echo reverting; touch '${marker}'\n`).status).toBe(0);
    expect(readFileSync(join(dir, "t1.sh"), "utf8")).toContain("echo reverting");
    await until(() => existsSync(join(dir, "t1.fired")));
    expect(existsSync(marker)).toBe(true);
    expect(readFileSync(join(dir, "t1.log"), "utf8")).toBe("reverting\n");
    expect(readdirSync(dir).sort()).toEqual(["t1.fired", "t1.log"]);
    // Too late to disarm: exit 7 with the revert's log on stderr, and the guard is cleaned up.
    const late = run("revert-disarm", { guards: dir, token: "t1" });
    expect(late.status).toBe(7);
    expect(late.stderr).toBe("reverting\n");
    expect(readdirSync(dir)).toEqual([]);
  });

  it("a disarmed revert never runs", async () => {
    const dir = guards();
    const marker = join(scratch, "fired-2");
    expect(arm(dir, "t2", 2, `touch '${marker}'\n`).status).toBe(0);
    expect(run("revert-disarm", { guards: dir, token: "t2" }).status).toBe(0);
    expect(readdirSync(dir)).toEqual([]);
    await new Promise((r) => setTimeout(r, 3000));
    expect(existsSync(marker)).toBe(false);
    expect(readdirSync(dir)).toEqual([]);
  });

  it("revert-now runs an armed revert at once, exactly once, and marks it fired; a disarmed one it refuses", async () => {
    const dir = guards();
    const marker = join(scratch, "fired-now");
    expect(arm(dir, "t5", 2, `echo reverting; echo x >> '${marker}'\n`).status).toBe(0);
    const now = run("revert-now", { guards: dir, token: "t5", log_bytes: String(GUARD_LOG_BYTES) });
    expect(now.status).toBe(0);
    expect(now.stdout).toBe("reverting\n");
    expect(readFileSync(marker, "utf8")).toBe("x\n");
    expect(readdirSync(dir).sort()).toEqual(["t5.fired", "t5.log"]);
    // The watcher is gone and its time passes: the revert ran once.
    await new Promise((r) => setTimeout(r, 3000));
    expect(readFileSync(marker, "utf8")).toBe("x\n");
    // A second call finds it fired (7); a disarmed guard is not run (8).
    expect(run("revert-now", { guards: dir, token: "t5", log_bytes: "100" }).status).toBe(7);
    expect(arm(dir, "t6", 60, `echo y >> '${marker}'\n`).status).toBe(0);
    expect(run("revert-disarm", { guards: dir, token: "t6" }).status).toBe(0);
    const refused = spawnSync("sh", ["-c", shellScript("revert-now").replace("1 2 3 4 5 6 7 8 9 10", "1"), "bpfleet", ...scriptArgs("revert-now", { guards: dir, token: "t6", log_bytes: "100" })], { encoding: "utf8" });
    expect(refused.status).toBe(8);
    expect(readFileSync(marker, "utf8")).toBe("x\n");
  });

  it(`keeps only the newest ${KEPT_FIRED_GUARDS} fired guards`, () => {
    const dir = guards();
    mkdirSync(dir, { mode: 0o700 });
    for (let i = 0; i < KEPT_FIRED_GUARDS + 3; i++) {
      writeFileSync(join(dir, `old${i}.fired`), "fired\n");
      writeFileSync(join(dir, `old${i}.log`), "x");
      spawnSync("touch", ["-d", `@${1_000_000 + i}`, join(dir, `old${i}.fired`)]);
    }
    expect(arm(dir, "t3", 60, "true\n").status).toBe(0);
    const fired = readdirSync(dir).filter((f) => f.endsWith(".fired")).sort();
    expect(fired).toEqual(Array.from({ length: KEPT_FIRED_GUARDS }, (_, i) => `old${i + 3}.fired`).sort());
    expect(readdirSync(dir).filter((f) => f.endsWith(".log"))).toHaveLength(KEPT_FIRED_GUARDS);
    expect(run("revert-disarm", { guards: dir, token: "t3" }).status).toBe(0);
  });

  it("refuses a guard directory others may write, before anything is armed", () => {
    const dir = guards();
    mkdirSync(dir, { mode: 0o777 });
    spawnSync("chmod", ["0777", dir]);
    const result = arm(dir, "t4", 60, "true\n");
    expect(result.status).not.toBe(0);
    expect(result.stderr).toMatch(/writable by group or others \(mode 777\)/);
    expect(readdirSync(dir)).toEqual([]);
  });

  it("settle runs now exactly the pending reverts that name the pin directory", () => {
    const dir = guards();
    const pins = "/sys/fs/bpf/bpfleet/xdp-firewall/edge";
    const ran = (tag: string) => join(scratch, `settled-${tag}`);
    expect(arm(dir, "a", 60, `rm -rf -- ${pins}\ntouch '${ran("a")}'\n`).status).toBe(0);
    expect(arm(dir, "b", 60, `P=${pins}/prog\ntouch '${ran("b")}'\n`).status).toBe(0);
    // Another resource whose name starts with this one's: not settled.
    expect(arm(dir, "c", 60, `rm -rf -- ${pins}2\ntouch '${ran("c")}'\n`).status).toBe(0);
    const result = run("revert-settle", { guards: dir, pin_dir: pins });
    expect(result.stdout).toBe("2\n");
    expect([existsSync(ran("a")), existsSync(ran("b")), existsSync(ran("c"))]).toEqual([true, true, false]);
    expect(readdirSync(dir).sort()).toEqual(["c.pid", "c.sh"]);
    expect(run("revert-disarm", { guards: dir, token: "c" }).status).toBe(0);
  });

  it("settle finds nothing where there is no guard directory, and trusts none others may write", () => {
    const dir = guards();
    expect(run("revert-settle", { guards: dir, pin_dir: "/x" }).stdout).toBe("0\n");
    expect(existsSync(dir)).toBe(false);
    mkdirSync(dir, { mode: 0o700 });
    writeFileSync(join(dir, "p.sh"), `touch '${join(scratch, "planted")}' # /x\n`);
    spawnSync("chmod", ["0777", dir]);
    expect(run("revert-settle", { guards: dir, pin_dir: "/x" }).stdout).toBe("0\n");
    expect(existsSync(join(scratch, "planted"))).toBe(false);
  });
});
