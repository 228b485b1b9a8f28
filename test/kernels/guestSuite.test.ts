// Part of the kernel suite (test/kernel/) inside a Debian 12 guest: its 6.1 kernel
// under qemu (test/kernels/boot.sh), the machine's node, bpftool and checkout over
// the read-only 9p share. The part is the TC policy (the one object whose kernel
// features differ across supported kernels: flow expiry on lookup, no BPF timers,
// with waits derived from measured latency), the XDP chain and the packet builder.
// Measured in the emulated 6.1 guest on a shared 2-core machine (load 4-8):
// tcPolicy.test.ts 170-246 s, xdpChain 34 s, packets 1 s, this whole step 299-440 s
// with boot and vitest's start (about 90 s); with all of
// test/kernel the next file after tcPolicy (Maglev or the firewall) had not finished
// 270 s later (the full suite took 22 min). The XDP objects load and run a packet on
// every kernel in the matrix (matrix.test.ts); their verdict suites run on the machine's.
import { spawn } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, relative } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

const root = join(__dirname, "../..");
const SUITE = "bookworm";
const FILES = ["packets", "tcPolicy", "xdpChain"].map((f) => `test/kernel/${f}.test.ts`);

interface VitestJson {
  numPassedTests: number;
  numPendingTests: number;
  numFailedTests: number;
  numTotalTests: number;
  testResults: { name: string; status: string; message?: string; startTime: number; endTime: number; assertionResults: { fullName: string; status: string; failureMessages: string[] }[] }[];
}

let out: string;
let result: VitestJson;
let seconds: number;
let guestLog = "";

beforeAll(async () => {
  if (process.getuid?.() !== 0) throw new Error("boots a qemu guest that loads BPF: run as root");
  // The guest mounts its own tmpfs on /tmp, /var/tmp, /run, /root; boot.sh binds a checkout there into the guest.
  const fetch = spawn("bash", [join(__dirname, "fetch.sh")], { env: { ...process.env, SUITES: SUITE }, stdio: ["ignore", "ignore", "inherit"] });
  const fetched = await new Promise<number | null>((resolve) => fetch.on("exit", resolve));
  if (fetched !== 0) throw new Error(`test/kernels/fetch.sh failed (exit ${fetched})`);
  // The guest's writable share (its /tmp/out): the job, its log, vitest's JSON.
  out = mkdtempSync(join(tmpdir(), "kmx-suite-"));
  const job = join(out, "job-src.sh");
  // node_modules and the checkout are read-only in the guest: the config is loaded by
  // vite's module runner (the default loader writes a bundle into node_modules/.vite-temp),
  // and temporary files go to the guest's own tmpfs.
  writeFileSync(
    job,
    [
      "set -e",
      `cd '${root}'`,
      "export TMPDIR=/tmp",
      `npx vitest run ${FILES.join(" ")} --configLoader runner --reporter=default --reporter=json --outputFile=/tmp/out/vitest.json`,
      "",
    ].join("\n"),
  );
  const started = Date.now();
  // Asynchronously: a worker blocked for minutes loses its RPC link to vitest.
  const guest = spawn("bash", [join(__dirname, "boot.sh"), SUITE, out, job], { stdio: ["ignore", "inherit", "inherit"] });
  await new Promise<number | null>((resolve) => guest.on("exit", resolve));
  seconds = (Date.now() - started) / 1000;
  guestLog = existsSync(join(out, "log")) ? readFileSync(join(out, "log"), "utf8") : "(no log)";
  const file = join(out, "vitest.json");
  if (!existsSync(file)) throw new Error(`the guest wrote no vitest result; its log ends:\n${guestLog.slice(-4000)}`);
  result = JSON.parse(readFileSync(file, "utf8")) as VitestJson;
  const perFile = result.testResults.map((f) => `${relative(root, f.name)} ${((f.endTime - f.startTime) / 1000).toFixed(0)} s`).join(", ");
  console.log(`test/kernel in the ${SUITE} guest: ${result.numPassedTests} passed, ${result.numPendingTests} skipped, ${result.numFailedTests} failed of ${result.numTotalTests} in ${seconds.toFixed(0)} s (boot included; ${perFile})`);
}, 1_800_000);

afterAll(() => {
  if (out) rmSync(out, { recursive: true, force: true });
});

describe("test/kernel's TC policy, XDP chain and packet files inside Debian 12's kernel (6.1, qemu)", () => {
  it("ran every file of the chosen part", () => {
    expect(result.testResults.map((f) => relative(root, f.name)).sort()).toEqual([...FILES].sort());
    expect(result.numPassedTests, "the guest's files ran their tests").toBeGreaterThan(100);
  });

  it("nothing failed", () => {
    const failures = result.testResults.flatMap((f) => [
      ...(f.status === "failed" && f.assertionResults.length === 0 ? [`${relative(root, f.name)}: ${f.message ?? "failed to run"}`] : []),
      ...f.assertionResults.filter((a) => a.status === "failed").map((a) => `${relative(root, f.name)} > ${a.fullName}: ${a.failureMessages.join("\n").slice(0, 1500)}`),
    ]);
    expect(failures.join("\n\n"), "the guest's failures").toBe("");
    expect(result.numFailedTests).toBe(0);
  });
});
