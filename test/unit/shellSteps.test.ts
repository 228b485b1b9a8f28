// sh/steps.sh run for real (locally, as the host would run it) and parsed by
// shellSteps.ts: each step's own stdout, stderr and exit status, its own stdin
// bytes (also when a step before it left its stdin unread), its own arguments
// (past $9 too), and the first failure ending the run.
import { spawnSync } from "node:child_process";
import { describe, expect, it } from "vitest";
import { armRevert } from "../../provider/remote/revertTimer";
import { commandStep, parseSteps, scriptStep, StepQueue, stepsDescription, type ShellStep } from "../../provider/remote/shellSteps";
import { shellScript } from "../../provider/remote/shellScript";
import { currentOperation, stepNamed, withOperation, type SshSession } from "../../provider/remote/ssh";

/** What runSteps sends, run by a local sh. */
function runLocally(steps: ShellStep[]) {
  const marker = "bpfleet-test0123";
  const args: string[] = [marker];
  const stdin: Buffer[] = [];
  for (const s of steps) {
    if (s.stdin !== undefined) stdin.push(Buffer.from(s.stdin));
    args.push(s.text, String(s.args.length), s.stdin === undefined ? "none" : String(Buffer.byteLength(s.stdin)), s.allowFailure ? "yes" : "no", ...s.args);
  }
  const r = spawnSync("sh", ["-c", shellScript("steps"), "bpfleet", ...args], { input: Buffer.concat(stdin), encoding: "utf8" });
  return { code: r.status, results: parseSteps(marker, { code: r.status ?? -1, stdout: r.stdout, stderr: r.stderr }, steps.length) };
}

const step = (text: string, args: string[] = [], options: Partial<ShellStep> = {}): ShellStep => ({ text, args, command: text, ...options });

describe("sh/steps.sh: several steps in one exec", () => {
  it("gives each step its own output, stderr, status and arguments", () => {
    const many = Array.from({ length: 12 }, (_, i) => `a${i + 1}`);
    const { code, results } = runLocally([
      step('printf "%s|" "$@"; echo "$0" >&2', ["x y", "$(touch /tmp/never)", "it's"]),
      step("printf 'no newline'"),
      step('echo "${10} ${11} ${12} $#"', many),
      step("printf 'line\\n\\n'"),
    ]);
    expect(code).toBe(0);
    expect(results).toEqual([
      { code: 0, stdout: "x y|$(touch /tmp/never)|it's|", stderr: "bpfleet\n" },
      { code: 0, stdout: "no newline", stderr: "" },
      { code: 0, stdout: "a10 a11 a12 12\n", stderr: "" },
      { code: 0, stdout: "line\n\n", stderr: "" },
    ]);
  });

  it("gives each step exactly its own stdin, even after a step that read none of its own", () => {
    const big = "z".repeat(200_000);
    const { results } = runLocally([
      step("true", [], { stdin: "unread by the step\n" }),
      step("wc -c", [], { stdin: big }),
      step("cat", []),
      step("cat", [], { stdin: "third\n" }),
    ]);
    expect(results.map((r) => r.stdout.trim())).toEqual(["", "200000", "", "third"]);
  });

  it("stops at the first failure, unless the step allows it", () => {
    const { code, results } = runLocally([step("echo one"), step("echo two; exit 3", [], { allowFailure: true }), step("echo oops >&2; exit 5"), step("echo never")]);
    expect(code).toBe(5);
    expect(results).toEqual([
      { code: 0, stdout: "one\n", stderr: "" },
      { code: 3, stdout: "two\n", stderr: "" },
      { code: 5, stdout: "", stderr: "oops\n" },
    ]);
  });

  it("runs shipped scripts as they run alone, and names the exec by its steps", () => {
    const files = scriptStep("files-present", ["/etc/hostname", "/nonexistent"]);
    const { results } = runLocally([files, commandStep(["printf", "%s", "a b"])]);
    expect(results.map((r) => r.stdout)).toEqual(["yes\nno\n", "a b"]);
    const name = stepsDescription([files, commandStep(["bpftool", "batch", "file", "-"])]);
    expect(name).toBe("script (for f in) + bpftool batch");
    expect(stepNamed(["script (cat)", name], "bpftool batch")).toBe(1);
    expect(stepNamed(["bpftool batch"], "bpftool batch")).toBe(0);
    expect(stepNamed(["script (cat)"], "bpftool batch")).toBe(-1);
  });
});

/**
 * A session that runs its commands with the local sh, as the host's would: enough of
 * SshSession for runSteps, StepQueue and the revert timer. Counts its execs.
 */
class LocalSession {
  readonly label = "local";
  execs: string[] = [];
  async runScript(text: string, args: readonly string[], options: { stdin?: string | Buffer; allowFailure?: boolean; describe?: string } = {}) {
    this.execs.push(options.describe ?? "script");
    const r = spawnSync("sh", ["-c", text, "bpfleet", ...args], { input: options.stdin, encoding: "utf8" });
    const result = { code: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
    if (result.code !== 0 && !options.allowFailure) throw new Error(`exit ${result.code}`);
    return result;
  }
  async run(argv: readonly string[], options: { stdin?: string | Buffer; allowFailure?: boolean } = {}) {
    return this.runScript('exec "$@"', argv, options);
  }
}

describe("StepQueue: steps nobody waits for ride in the next exec", () => {
  it("sends what is queued with the next exec, in order, and names a queued step that failed", async () => {
    const session = new LocalSession();
    const queue = new StepQueue(session as unknown as SshSession);
    queue.add(commandStep(["printf", "a"]), commandStep(["printf", "b"]));
    const [own] = await queue.run([commandStep(["printf", "c"])]);
    expect(own!.stdout).toBe("c");
    expect(session.execs).toEqual(["printf a + printf b + printf c"]);
    queue.add(commandStep(["sh", "-c", "echo no space >&2; exit 28"]));
    let ran = false;
    await expect(queue.run([{ ...commandStep(["true"]), onResult: (r) => (ran = r !== undefined) }])).rejects.toThrow(/exit code 28[\s\S]*no space/);
    expect(ran).toBe(false);
    expect(session.execs).toHaveLength(2);
    await queue.flush();
    expect(session.execs).toHaveLength(2);
  });

  it("a revert whose queued arm never ran is not disarmed (nothing waits on the host)", async () => {
    const session = new LocalSession();
    const queue = new StepQueue(session as unknown as SshSession);
    const timer = await armRevert(session as unknown as SshSession, "true\n", 30, queue);
    expect(session.execs).toHaveLength(0);
    queue.discard();
    await timer.disarm();
    expect(session.execs).toHaveLength(0);
    expect(timer.disarmStep().command).toMatch(/^sh -c /);
  });
});

describe("revert timers an operation has not seen settled (what its failure report asks the host about)", () => {
  /** Answers every script with `code` without running it: only the provider's bookkeeping is under test. */
  const answering = (code: () => number) => ({ label: "fake", runScript: async () => ({ code: code(), stdout: "", stderr: "" }) }) as unknown as SshSession;

  it("a timer is listed from its arming until its disarm is answered, and stays listed when the disarm found it fired", async () => {
    let code = 0;
    const session = answering(() => code);
    await withOperation("k", "update", async () => {
      const listed = () => currentOperation()!.unsettledTimers.map((t) => t.token);
      const timer = await armRevert(session, "true\n", 30);
      expect(listed()).toEqual([timer.token]);
      expect(currentOperation()!.unsettledTimers[0]!.seconds).toBe(30);
      await timer.disarm();
      expect(listed()).toEqual([]);
      const fired = await armRevert(session, "true\n", 20);
      code = 7;
      await expect(fired.disarm()).rejects.toThrow(/fired before it could be disarmed/);
      expect(listed()).toEqual([fired.token]);
    });
  });

  it("a queued arm that never ran settles at its disarm, with no exec", async () => {
    const session = new LocalSession();
    await withOperation("k", "create", async () => {
      const queue = new StepQueue(session as unknown as SshSession);
      const timer = await armRevert(session as unknown as SshSession, "true\n", 30, queue);
      expect(currentOperation()!.unsettledTimers).toHaveLength(1);
      queue.discard();
      await timer.disarm();
      expect(currentOperation()!.unsettledTimers).toEqual([]);
      expect(session.execs).toHaveLength(0);
    });
  });
});
