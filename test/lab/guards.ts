// The lockout guard as the host sees it. A guarded change arms a revert timer
// on the host (bpfleet-guard, under /run/bpfleet/guards) before it touches the
// management path; a change that cuts SSH is undone by that timer, not by the
// provider, which can no longer reach the host.
import { setTimeout as sleep } from "node:timers/promises";
import { expect } from "vitest";
import type { Lab, LabHost } from "./lab";

export const GUARD_DIR = "/run/bpfleet/guards";

export interface ArmedGuard {
  token: string;
  /** The revert window the host's watcher sleeps for. */
  seconds: number;
}

/**
 * Watches, from inside the host, for revert timers armed there: each guard
 * leaves <token>.pid while armed, naming its watcher, whose command line holds
 * the window. Each lab host has its own /run (lab.sh); the watcher still counts
 * only processes in this host's network namespace. Returns a stop function that
 * lists the guards seen armed.
 */
export async function watchGuards(lab: Lab, host: LabHost): Promise<() => Promise<ArmedGuard[]>> {
  const script = `
me=$(readlink /proc/self/ns/net)
echo ready
while :; do
  for p in "$1"/*.pid; do
    [ -e "$p" ] || continue
    pid=$(cat "$p" 2>/dev/null)
    [ -n "$pid" ] && [ "$(readlink /proc/$pid/ns/net 2>/dev/null)" = "$me" ] || continue
    echo "armed $(basename "$p" .pid) $(tr '\\0' ' ' < /proc/$pid/cmdline 2>/dev/null)"
  done
  sleep 0.005
done`;
  const proc = lab.inHost(host, ["sh", "-c", script, "watch", GUARD_DIR], { reject: false });
  let out = "";
  proc.stdout!.on("data", (d: Buffer) => (out += d.toString()));
  while (!out.includes("ready")) await sleep(10);
  return async () => {
    proc.kill("SIGTERM");
    await proc;
    const armed = new Map<string, number>();
    for (const m of out.matchAll(/^armed (\S+) .*bpfleet-guard (\d+) /gm)) armed.set(m[1]!, Number(m[2]));
    return [...armed].map(([token, seconds]) => ({ token, seconds }));
  };
}

/** What a guard left on the host: its files (none once disarmed; <token>.fired once the host reverted). */
export async function guardFiles(lab: Lab, host: LabHost, token: string): Promise<string[]> {
  const { stdout } = await lab.inHost(host, ["sh", "-c", 'ls -1 "$0" 2>/dev/null | grep -F -- "$1" || true', GUARD_DIR, token]);
  return String(stdout).trim().split("\n").filter(Boolean).map((f) => f.slice(token.length));
}

/**
 * Runs a guarded change that cuts the host's management path and asserts that
 * the host undid it by itself: the change fails with `failure`, exactly one
 * revert was armed with a `seconds` window, it fired (nobody disarmed it), not
 * before the window and well before the default 30 s, and SSH logins work
 * again. The caller then checks what the revert restored.
 */
export async function expectRevertedByHost(
  lab: Lab,
  host: LabHost,
  seconds: number,
  change: () => Promise<unknown>,
  failure: RegExp,
): Promise<void> {
  const stop = await watchGuards(lab, host);
  const started = Date.now();
  await expect(change()).rejects.toThrow(failure);
  const elapsed = Date.now() - started;
  const armed = await stop();
  expect(armed.map((g) => g.seconds)).toEqual([seconds]);
  expect(await guardFiles(lab, host, armed[0]!.token)).toContain(".fired");
  expect(elapsed).toBeGreaterThanOrEqual(seconds * 1000);
  expect(elapsed).toBeLessThan(25_000);
  expect((await lab.ssh(host, ["true"], { reject: false })).exitCode).toBe(0);
}
