// End to end: the provider's processes do not outlive a killed `pulumi` (issue 15,
// finding 7). The CLI starts each plugin in a process group of its own, so killing
// the CLI's group leaves them; they must notice and exit by themselves.
import { readdirSync, readFileSync, readlinkSync } from "node:fs";
import { resolve } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { execa } from "execa";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createLab, type Lab } from "../lab/lab";
import { PulumiProject } from "./pulumiProject";

let lab: Lab;
let project: PulumiProject;
const leftovers: number[] = [];

/** Processes whose working directory is the project and whose command line runs the dynamic provider (or its launcher). */
function providerProcesses(dir: string): number[] {
  const pids: number[] = [];
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const cmdline = readFileSync(`/proc/${entry}/cmdline`, "utf8").replaceAll("\0", " ");
      if (!/dynamic-provider|pulumi-resource-pulumi-nodejs/.test(cmdline)) continue;
      if (readlinkSync(`/proc/${entry}/cwd`) !== dir) continue;
      pids.push(Number(entry));
    } catch {
      // gone meanwhile
    }
  }
  return pids;
}

function alive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    return stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3) !== "Z";
  } catch {
    return false;
  }
}

beforeAll(async () => {
  lab = await createLab("e2eproc", { hosts: 1, clients: 1 });
  project = await PulumiProject.create("processes", resolve(__dirname, "../../examples/quickstart/index.ts"));
  await project.ok(["config", "set", "labFile", lab.jsonPath]);
}, 600_000);

afterAll(async () => {
  for (const pid of leftovers) if (alive(pid)) process.kill(pid, "SIGKILL");
  // The killed run left its stack with a pending operation: the lab and the directory go whole.
  project?.remove();
  await lab?.destroy();
}, 120_000);

describe("a killed pulumi", () => {
  it("SIGKILL of the pulumi process group: the provider's processes exit by themselves within seconds", async () => {
    // Its own process group (setsid), as a terminal or CI job would have it.
    const up = execa("pulumi", ["up", "--yes", "--skip-preview", "--non-interactive"], { cwd: project.dir, env: project.env, detached: true, reject: false });
    let pids: number[] = [];
    for (let i = 0; i < 600 && pids.length < 2; i++) {
      await sleep(100);
      pids = providerProcesses(project.dir);
    }
    expect(pids.length, "the dynamic provider (launcher and node) never started").toBeGreaterThanOrEqual(2);
    process.kill(-up.pid!, "SIGKILL");
    await up;
    leftovers.push(...pids);
    const started = Date.now();
    while (pids.some(alive) && Date.now() - started < 15_000) await sleep(100);
    expect(pids.filter(alive), "provider processes still running 15 s after the CLI was killed").toEqual([]);
  }, 300_000);
});
