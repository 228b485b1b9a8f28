/**
 * Several remote steps in one exec session. Every exec costs the host a login
 * shell's start-up (sshd runs `$SHELL -c`; Debian's bash then reads root's
 * ~/.bashrc) and costs the provider a round trip, so an operation that ran a
 * dozen small scripts one by one paid for a dozen. runSteps sends shipped
 * scripts and quoted commands as one exec (sh/steps.sh) and still returns each
 * step's own exit status, stdout and stderr: a failure names its step, as if it
 * had run alone, and the steps after it do not run.
 *
 * A StepQueue holds steps whose answers nobody waits for (a copy to record, a
 * revert to arm) until the next exec of the same operation carries them.
 */
import { randomBytes } from "node:crypto";
import { shellQuote } from "./quote";
import { shellScript, scriptArgs } from "./shellScript";
import { currentOperation, describeStep, RemoteCommandError, type ExecResult, type SshSession } from "./ssh";

export interface ShellStep {
  /** What `sh -c` runs: a shipped script with its prelude, or a quoted command. */
  readonly text: string;
  readonly args: readonly string[];
  readonly stdin?: string | Buffer;
  /** Return a failure instead of throwing, and go on with the next step. */
  readonly allowFailure?: boolean;
  /** The command line as it would run alone: names the step in errors and in the operation's steps. */
  readonly command: string;
  /** A command step's argv: alone, it runs as session.run would run it. */
  readonly argv?: readonly string[];
  /** The caller's own error for this step's failure (e.g. a revert that had fired), instead of RemoteCommandError. */
  readonly failure?: (result: ExecResult) => Error | undefined;
  /** Told the step's result once it ran, or undefined when it surely did not run. */
  readonly onResult?: (result: ExecResult | undefined) => void;
}

type StepOptions = Pick<ShellStep, "stdin" | "allowFailure" | "failure" | "onResult">;

/** sh/<name>.sh with `args` (positional, or by the names its first line gives them), as a step. */
export function scriptStep(name: string, args: readonly string[] | Readonly<Record<string, string>>, options: StepOptions = {}): ShellStep {
  const positional = Array.isArray(args) ? (args as readonly string[]) : scriptArgs(name, args as Readonly<Record<string, string>>);
  const text = shellScript(name);
  return { ...options, text, args: positional, command: shellQuote(["sh", "-c", text, "bpfleet", ...positional]) };
}

/** A command given as argv (quoted by shellQuote), as a step. */
export function commandStep(argv: readonly string[], options: StepOptions = {}): ShellStep {
  const command = shellQuote(argv);
  return { ...options, text: command, args: [], command, argv };
}

/** The step list's name for one exec of several steps: theirs, joined by " + " (ssh.ts stepNamed finds one). */
export function stepsDescription(steps: readonly ShellStep[]): string {
  return steps.map((s) => describeStep(s.command)).join(" + ");
}

/**
 * Runs `steps` in order in one exec (a single step runs exactly as it would alone)
 * and returns the results of those that ran. The first failing step without
 * allowFailure throws (its own error, naming it) and the rest do not run.
 */
export async function runSteps(session: SshSession, steps: readonly ShellStep[]): Promise<ExecResult[]> {
  if (steps.length === 0) return [];
  const at = (currentOperation()?.execs ?? 0) + 1;
  const results = steps.length === 1 ? [await runOne(session, steps[0]!)] : await runMany(session, steps);
  for (const [i, step] of steps.entries()) step.onResult?.(results[i]);
  for (const [i, result] of results.entries()) {
    const step = steps[i]!;
    if (result.code === 0 || step.allowFailure) continue;
    throw step.failure?.(result) ?? new RemoteCommandError(session.label, step.command, result, `exit code ${result.code}`, { at: currentOperation() ? at : undefined });
  }
  return results;
}

async function runOne(session: SshSession, step: ShellStep): Promise<ExecResult> {
  const options = { allowFailure: true, ...(step.stdin !== undefined ? { stdin: step.stdin } : {}) };
  return step.argv ? session.run(step.argv, options) : session.runScript(step.text, step.args, options);
}

async function runMany(session: SshSession, steps: readonly ShellStep[]): Promise<ExecResult[]> {
  const marker = `bpfleet-${randomBytes(8).toString("hex")}`;
  const args: string[] = [marker];
  const stdin: Buffer[] = [];
  for (const step of steps) {
    const bytes = step.stdin === undefined ? "none" : String(Buffer.byteLength(step.stdin));
    if (step.stdin !== undefined) stdin.push(Buffer.from(step.stdin));
    args.push(step.text, String(step.args.length), bytes, step.allowFailure ? "yes" : "no", ...step.args);
  }
  const wrapper = await session.runScript(shellScript("steps"), args, {
    allowFailure: true,
    describe: stepsDescription(steps),
    ...(stdin.length ? { stdin: Buffer.concat(stdin) } : {}),
  });
  return parseSteps(marker, wrapper, steps.length);
}

/** Splits sh/steps.sh's framed output into each step's result; a step that began and never ended failed with -1. */
export function parseSteps(marker: string, wrapper: ExecResult, count: number): ExecResult[] {
  const results: ExecResult[] = [];
  const errs = splitStderr(marker, wrapper.stderr);
  for (let k = 1; k <= count; k++) {
    const begin = `@@${marker} ${k}\n`;
    const start = wrapper.stdout.indexOf(begin);
    if (start < 0) break;
    const from = start + begin.length;
    const end = new RegExp(`\\n@@${marker} ${k} (\\d+)\\n`).exec(wrapper.stdout.slice(from));
    const stdout = end ? wrapper.stdout.slice(from, from + end.index) : wrapper.stdout.slice(from);
    results.push({ code: end ? Number(end[1]) : -1, stdout, stderr: errs.get(k) ?? "" });
    if (!end) break;
  }
  return results;
}

function splitStderr(marker: string, stderr: string): Map<number, string> {
  const out = new Map<number, string>();
  const parts = stderr.split(new RegExp(`^@@${marker} (\\d+)\\n`, "m"));
  for (let i = 1; i + 1 < parts.length; i += 2) out.set(Number(parts[i]), parts[i + 1]!);
  return out;
}

/**
 * Steps of one operation on one host that wait for the next exec: `add` queues,
 * `run` sends the queue and its own steps in one exec (returning its own steps'
 * results), `flush` sends the queue alone. A queued step's failure is thrown by
 * the exec that carried it, naming that step. An operation that fails drops what
 * is still queued (`discard`): it never ran, and its owners are told so.
 */
export class StepQueue {
  private pending: ShellStep[] = [];
  private carrier: (() => Promise<SshSession>) | undefined;

  constructor(readonly session: SshSession) {}

  /**
   * The next exec goes over the session `open` gives (closed after it), not the
   * queue's own: the lockout guard's fresh login, which proves the management path
   * by carrying the disarm and the change's cleanup (lockout.ts).
   */
  carryOver(open: () => Promise<SshSession>): void {
    this.carrier = open;
  }

  get size(): number {
    return this.pending.length;
  }

  add(...steps: ShellStep[]): void {
    this.pending.push(...steps);
  }

  async run(steps: readonly ShellStep[] = []): Promise<ExecResult[]> {
    const queued = this.pending;
    const open = this.carrier;
    this.pending = [];
    this.carrier = undefined;
    const session = open ? await open() : this.session;
    try {
      const results = await runSteps(session, [...queued, ...steps]);
      return results.slice(queued.length);
    } finally {
      if (session !== this.session) session.close();
    }
  }

  async flush(): Promise<void> {
    if (this.pending.length || this.carrier) await this.run();
  }

  discard(): void {
    this.carrier = undefined;
    for (const step of this.pending.splice(0)) step.onResult?.(undefined);
  }
}
