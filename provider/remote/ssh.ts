/**
 * SSH transport: one pooled ssh2 connection per host per provider process,
 * host keys verified, per-command timeouts, sudo for non-root users, jump hosts.
 * Every command is an argv array (or a list of them) quoted by shellQuote.
 */
import { AsyncLocalStorage } from "node:async_hooks";
import { Client, type ClientChannel, type ConnectConfig } from "ssh2";
import { hostKeyCheck } from "./hostKeys";
import { hostLabel, type Credentials, type HostConnection, type SshEndpoint } from "./hostSchema";
import { shellAnd, shellQuote } from "./quote";

export interface ExecResult {
  code: number;
  stdout: string;
  stderr: string;
}

export interface ExecOptions {
  /** Bytes written to the command's stdin, then closed. */
  stdin?: string | Buffer;
  timeoutMs?: number;
  /** Return non-zero exits instead of throwing. */
  allowFailure?: boolean;
  /** Run as the login user, without sudo. */
  asLoginUser?: boolean;
  /**
   * How the operation's step list names this exec, instead of the summary of its
   * command line: one exec that runs several steps (shellSteps.ts) is named by them.
   */
  describe?: string;
}

/**
 * A remote command that did not succeed. The first line of the message says, in one
 * line, which host, which step (what the command does) and why (the cause the host
 * reported, or the exit code spelled out); the command and its stderr follow.
 */
export class RemoteCommandError extends Error {
  /** What the command does, e.g. "bpftool batch" or "script: mkdir, cat, setsid". */
  readonly step: string;
  /** Why it failed, in words. */
  readonly explanation: string;
  /** True when the connection dropped while the command ran: it may or may not have completed on the host. */
  readonly connectionLost: boolean;
  /** The step's number within its operation (see withOperation), when it ran in one. */
  readonly at: number | undefined;
  /**
   * True when this command's own session dropped the connection (fault injection): the
   * other commands in flight on it then fail too, as its consequence, not its cause.
   */
  readonly droppedConnection: boolean;

  constructor(
    readonly host: string,
    readonly command: string,
    readonly result: ExecResult | undefined,
    reason: string,
    options: { connectionLost?: boolean; droppedConnection?: boolean; at?: number; step?: string } = {},
  ) {
    const stderr = result?.stderr.trim();
    // An exec of several steps (shellSteps.ts) is named by them, not by its wrapper's text.
    const step = options.step ?? describeStep(command);
    const cause = explainFailure(reason, result, options.connectionLost ?? false);
    super(`${host}: ${step}: ${cause}\n  command: ${abbreviate(command, 600)}${stderr ? `\n  stderr: ${stderr.slice(0, 4000)}` : ""}`);
    this.step = step;
    this.explanation = cause;
    this.connectionLost = options.connectionLost ?? false;
    this.at = options.at;
    this.droppedConnection = options.droppedConnection ?? false;
  }
}

// The tools whose use names a step; anything else (shell functions, echo text) is noise.
const STEP_TOOLS = new Set(["bpftool", "ip", "tc", "mkdir", "rm", "rmdir", "mv", "cp", "ln", "cat", "tee", "setsid", "flock", "sha256sum", "mount", "umount", "sysctl", "kill", "chmod", "install", "truncate", "ethtool", "systemctl", "true"]);
// Tools whose subcommand is the step ("bpftool batch", "ip link", "tc filter").
const SUBCOMMAND_TOOLS = new Set(["bpftool", "ip", "tc"]);

/** A few words naming what a command line does: its tools and their subcommands. */
export function describeStep(commandLine: string): string {
  const scriptMatch = /^'?sh'? '?-c'? '((?:[^']|'\\'')*)'/.exec(commandLine);
  // Quoted text is data (messages, paths), not commands.
  const text = (scriptMatch ? scriptMatch[1]!.replace(/'\\''/g, "'") : commandLine).replace(/"(?:[^"\\]|\\.)*"|'[^']*'/g, (quoted) => (scriptMatch ? "X" : quoted.replace(/^'|'$/g, "")));
  const words: string[] = [];
  for (const segment of text.split(/&&|\|\||[;|\n()`{}]|\$\(/)) {
    const tokens = segment.trim().split(/\s+/).filter(Boolean);
    const at = tokens.findIndex((t) => STEP_TOOLS.has(t.replace(/^.*\//, "")));
    if (at < 0) continue;
    const tool = tokens[at]!.replace(/^.*\//, "");
    let word = tool;
    if (SUBCOMMAND_TOOLS.has(tool)) {
      const sub = tokens.slice(at + 1).filter((t) => /^[a-z]+$/.test(t)).slice(0, tool === "bpftool" ? 2 : 1);
      if (tool === "bpftool" && sub[0] === "batch") sub.splice(1);
      word = [tool, ...sub].join(" ");
    }
    if (!words.includes(word)) words.push(word);
    if (words.length >= 5) break;
  }
  const summary = words.join(", ") || abbreviate(text.trim().split(/\s+/).slice(0, 3).join(" "), 60);
  return scriptMatch ? `script (${summary})` : summary;
}

function abbreviate(text: string, max: number): string {
  return text.length <= max ? text : `${text.slice(0, max)}… (${text.length - max} more characters)`;
}

// errno values a tool reports as its exit code (-errno & 0xff), with what they mean here.
const ERRNO_EXITS: Record<number, string> = {
  [256 - 2]: "ENOENT: no such file or directory",
  [256 - 7]: "E2BIG: argument list too long (a full BPF hash map)",
  [256 - 12]: "ENOMEM: out of memory",
  [256 - 13]: "EACCES: permission denied (often the verifier)",
  [256 - 16]: "EBUSY: device or resource busy",
  [256 - 17]: "EEXIST: already exists",
  [256 - 22]: "EINVAL: invalid argument",
  [256 - 28]: "ENOSPC: no space left (a full BPF map, or a full disk)",
  [256 - 95]: "EOPNOTSUPP: operation not supported",
};

// stderr patterns whose cause is known, most specific first.
const KNOWN_CAUSES: readonly [RegExp, (m: RegExpExecArray, command: string) => string][] = [
  [/XDP program already attached/i, () => "the interface already has an XDP program attached (the kernel refused to attach another; see `bpftool net show`)"],
  [/(?:update|batch).*No space left on device|No space left on device.*(?:update|map)/i, () => "a BPF map is full (No space left on device): the change needs more entries than the map holds"],
  [/(?:update|batch).*Argument list too long|E2BIG/i, () => "a BPF map is full (Argument list too long): the change needs more entries than the map holds"],
  [/No space left on device/i, () => "the host's disk is full (No space left on device)"],
  [/Read-only file system/i, () => "the host's file system is read-only"],
  [/sudo: a (?:terminal|password) is required/i, () => "sudo asks for a password: give the login user passwordless sudo for bpfleet's commands"],
  [/chain slot (\d+) of (\S+) holds program id (\d+)/, (m) => `chain slot ${m[1]} of ${m[2]} is held by another program (id ${m[3]}): another stack or resource claimed the same chainPriority`],
  [/Killed|Terminated/, () => "the command was killed on the host"],
];

/** The cause of a failed command in words: the host's own explanation when it gave one. */
function explainFailure(reason: string, result: ExecResult | undefined, connectionLost: boolean): string {
  if (connectionLost) return `the SSH connection was lost while the command ran (${reason}); it may or may not have completed on the host`;
  const stderr = result?.stderr ?? "";
  for (const [pattern, explain] of KNOWN_CAUSES) {
    const m = pattern.exec(stderr);
    if (m) return `${explain(m, "")} (${reason})`;
  }
  const errno = result ? ERRNO_EXITS[result.code] : undefined;
  // The host's last words are usually its reason: "Error: ...", "interface x has ...".
  const last = stderr.trim().split("\n").map((l) => l.trim()).filter((l) => l && !/^(?:\+ |libbpf: )/.test(l)).pop();
  const said = last ? `: ${abbreviate(last.replace(/^Error:\s*/, ""), 300)}` : "";
  return `${reason}${errno ? ` (${errno})` : ""}${said}`;
}

export class SshError extends Error {}

/**
 * One provider operation (create, update, delete or read of one resource): its
 * remote commands are counted, so a failure can say which step it was, and a
 * test can count the round trips an operation costs and inject a fault at step k.
 * Operations run concurrently in one provider process; AsyncLocalStorage keeps
 * each one's count apart.
 */
export interface Operation {
  readonly kind: string;
  readonly op: string;
  /** Remote commands started so far (the current step's number). */
  execs: number;
  /** SSH logins opened so far (pooled ones and the lockout guard's fresh ones). */
  logins: number;
  /** What each step ran, in order. */
  readonly steps: string[];
  /**
   * Revert timers this operation armed (or queued to arm) and has not seen disarmed
   * or fired: when it fails, its report asks the host whether they are still pending,
   * so it does not call a change "new" that a timer is about to undo.
   */
  readonly unsettledTimers: { token: string; seconds: number }[];
}

const operations = new AsyncLocalStorage<Operation>();

/** Runs `fn` as one counted operation. */
export function withOperation<T>(kind: string, op: string, fn: () => Promise<T>): Promise<T> {
  return operations.run({ kind, op, execs: 0, logins: 0, steps: [], unsettledTimers: [] }, fn);
}

export function currentOperation(): Operation | undefined {
  return operations.getStore();
}

/**
 * Fault injection for tests, read from BPFLEET_FAULT in the provider process:
 * "<kind>:<op>:<k>:<mode>", kind and op may be "*", and k a step number or "@<name>",
 * the first step whose description is <name> (e.g. "@bpftool batch", "@tc filter"), so
 * that a test names the step it cuts and survives steps added before it. At that
 * remote command of a matching operation, mode
 *   fail       the command does not run and fails (the connection stays up);
 *   cut        the connection is destroyed before the command runs;
 *   cut-after  the command runs to the end on the host, then the connection is destroyed
 *              before its result arrives.
 * Unset (the default), nothing is injected.
 */
interface Fault {
  mode: "fail" | "cut" | "cut-after";
}

function injectedFault(operation: Operation | undefined, step: number): Fault | undefined {
  const spec = process.env.BPFLEET_FAULT;
  if (!spec || !operation) return undefined;
  const [kind, op, k, mode] = spec.split(":");
  if ((kind !== "*" && kind !== operation.kind) || (op !== "*" && op !== operation.op)) return undefined;
  // "@<name>": the first step whose description (describeStep) is exactly <name>, or
  // the first exec of several steps (shellSteps.ts: "a + b + c") that runs one so named.
  const named = k?.startsWith("@") ? k.slice(1) : undefined;
  if (named !== undefined ? stepNamed(operation.steps, named) !== step - 1 : Number(k) !== step) return undefined;
  if (mode !== "fail" && mode !== "cut" && mode !== "cut-after") throw new Error(`BPFLEET_FAULT: unknown mode ${mode} (fail, cut or cut-after)`);
  return { mode };
}

/** The index of the first exec in `steps` that is, or runs, the step `name` (-1: none). */
export function stepNamed(steps: readonly string[], name: string): number {
  return steps.findIndex((s) => s === name || s.split(" + ").includes(name));
}

export class SshSession {
  readonly label: string;
  private closed = false;
  private peer: Promise<string | undefined> | undefined;

  constructor(
    private readonly client: Client,
    readonly host: HostConnection,
    private readonly jump: Client | undefined,
  ) {
    this.label = hostLabel(host);
    client.on("close", () => (this.closed = true));
    client.on("end", () => (this.closed = true));
  }

  get isOpen(): boolean {
    return !this.closed;
  }

  /** Runs argv commands joined by &&, as root (through sudo when needed). Throws on a non-zero exit. */
  async run(commands: readonly string[] | readonly (readonly string[])[], options: ExecOptions = {}): Promise<ExecResult> {
    const list = (typeof commands[0] === "string" ? [commands] : commands) as readonly (readonly string[])[];
    return this.execScript(shellAnd(list), options);
  }

  /**
   * Runs a fixed sh script as root. `script` must be a constant of this codebase;
   * values reach it only as positional arguments ($1, $2, ...), quoted here.
   */
  async runScript(script: string, args: readonly string[], options: ExecOptions = {}): Promise<ExecResult> {
    return this.execScript(shellQuote(["sh", "-c", script, "bpfleet", ...args]), options);
  }

  private execScript(commandLine: string, options: ExecOptions): Promise<ExecResult> {
    const wire = this.wantsSudo() && !options.asLoginUser ? shellQuote(["sudo", "-n", "--", "sh", "-c", commandLine]) : commandLine;
    const timeoutMs = options.timeoutMs ?? this.host.commandTimeoutMs;
    const operation = currentOperation();
    const step = operation ? ++operation.execs : 0;
    const at = operation ? step : undefined;
    const named = options.describe;
    operation?.steps.push(named ?? describeStep(commandLine));
    const fault = injectedFault(operation, step);
    const lost = (why: string, result?: ExecResult, droppedConnection = false) =>
      new RemoteCommandError(this.label, commandLine, result, why, { connectionLost: true, droppedConnection, at, step: named });
    return new Promise<ExecResult>((resolve, reject) => {
      if (this.closed) return reject(new SshError(`${this.label}: the SSH connection is closed`));
      if (fault?.mode === "fail") return reject(new RemoteCommandError(this.label, commandLine, undefined, "injected failure (BPFLEET_FAULT)", { at, step: named }));
      if (fault?.mode === "cut") {
        this.cut();
        return reject(lost("connection cut (BPFLEET_FAULT)", undefined, true));
      }
      this.client.exec(wire, (err, channel: ClientChannel) => {
        if (err) {
          return reject(this.closed ? lost(`connection lost before the command started (${err.message})`) : new RemoteCommandError(this.label, commandLine, undefined, `could not start the command: ${err.message}`, { at, step: named }));
        }
        const stdout: Buffer[] = [];
        const stderr: Buffer[] = [];
        let settled = false;
        const timer = setTimeout(() => {
          if (settled) return;
          settled = true;
          channel.close();
          reject(new RemoteCommandError(this.label, commandLine, collect(), `timed out after ${timeoutMs} ms`, { at, step: named }));
        }, timeoutMs);
        const collect = (code = -1): ExecResult => ({
          code,
          stdout: Buffer.concat(stdout).toString("utf8"),
          stderr: Buffer.concat(stderr).toString("utf8"),
        });
        channel.on("data", (d: Buffer) => stdout.push(d));
        channel.stderr.on("data", (d: Buffer) => stderr.push(d));
        channel.on("close", (code: number | null | undefined, signal?: string) => {
          if (settled) return;
          settled = true;
          clearTimeout(timer);
          if (fault?.mode === "cut-after") {
            this.cut();
            return reject(lost("connection cut after the command ran (BPFLEET_FAULT)", undefined, true));
          }
          // No exit status and no signal: the channel closed because the connection went away.
          if ((code === null || code === undefined) && !signal) return reject(lost("the connection closed without an exit status", collect()));
          const result = collect(code ?? 128);
          if (result.code !== 0 && !options.allowFailure) {
            reject(new RemoteCommandError(this.label, commandLine, result, `exit code ${result.code}${signal ? ` (signal ${signal})` : ""}`, { at, step: named }));
          } else {
            resolve(result);
          }
        });
        if (options.stdin !== undefined) channel.end(options.stdin);
        else channel.end();
      });
    });
  }

  /** Drops the connection the hard way (fault injection): no goodbye, as a cut cable. */
  private cut(): void {
    this.closed = true;
    this.client.destroy();
    this.jump?.destroy();
  }

  /**
   * The address this provider's SSH session comes from, as the host sees it
   * (first field of $SSH_CONNECTION): what a deny rule must never cover.
   */
  managementPeer(): Promise<string | undefined> {
    this.peer ??= this.run(["sh", "-c", 'printf %s "$SSH_CONNECTION"'], { asLoginUser: true }).then(
      (result) => result.stdout.trim().split(/\s+/)[0] || undefined,
    );
    return this.peer;
  }

  /**
   * Seeds managementPeer with what a survey read from $SSH_CONNECTION itself (a root
   * login sees it; sudo clears it), saving the round trip.
   */
  notePeer(peer: string | undefined): void {
    this.peer ??= Promise.resolve(peer);
  }

  /**
   * A guess of managementPeer with no round trip: this end's address of the TCP
   * connection, which is what the host sees unless something translates it (NAT, a
   * proxy). Only for a plan the host checks against $SSH_CONNECTION before it acts
   * on it (sh/firewall-update-check.sh); undefined through a jump host. ssh2 keeps
   * the socket it opened in `_sock` (not part of its typed interface).
   */
  peerGuess(): string | undefined {
    if (this.jump) return undefined;
    const address = (this.client as unknown as { _sock?: { localAddress?: unknown } })._sock?.localAddress;
    return typeof address === "string" && address !== "" ? address.replace(/^::ffff:(?=\d+\.)/i, "") : undefined;
  }

  /** Whether scripts run with the login's environment ($SSH_CONNECTION): a root login, no sudo. */
  get seesLoginEnvironment(): boolean {
    return !this.wantsSudo();
  }

  private wantsSudo(): boolean {
    return this.host.sudo ?? this.host.user !== "root";
  }

  close(): void {
    this.closed = true;
    this.client.end();
    this.jump?.end();
  }
}

function authConfig(endpoint: SshEndpoint, credentials: Credentials): ConnectConfig {
  const config: ConnectConfig = { username: endpoint.user };
  if (credentials.privateKey) config.privateKey = credentials.privateKey;
  if (credentials.passphrase) config.passphrase = credentials.passphrase;
  if (credentials.password) config.password = credentials.password;
  const agent = credentials.agentSocket ?? (credentials.privateKey || credentials.password ? undefined : process.env.SSH_AUTH_SOCK);
  if (agent) config.agent = agent;
  return config;
}

function openClient(endpoint: SshEndpoint, credentials: Credentials, timeoutMs: number, sock?: ConnectConfig["sock"]): Promise<Client> {
  const label = hostLabel(endpoint);
  const check = hostKeyCheck(endpoint);
  let keyRejected = false;
  const auth = authConfig(endpoint, credentials);
  if (!auth.privateKey && !auth.password && !auth.agent) {
    return Promise.reject(new SshError(`${label}: no SSH credentials: give credentials.privateKey, credentials.password, or run an ssh-agent (SSH_AUTH_SOCK)`));
  }
  return new Promise((resolve, reject) => {
    const client = new Client();
    const operation = currentOperation();
    if (operation) operation.logins++;
    client.once("ready", () => resolve(client));
    client.once("error", (err: Error & { level?: string }) => {
      client.end();
      if (keyRejected) {
        reject(new SshError(`${label}: host key verification failed: the key the host presented does not match the ${check.describe}. If the host was reinstalled, update host.hostKey; nothing was changed on the host.`));
      } else if (err.level === "client-authentication") {
        reject(new SshError(`${label}: SSH authentication failed for user ${endpoint.user} (${err.message})`));
      } else {
        reject(new SshError(`${label}: cannot connect over SSH: ${err.message}`));
      }
    });
    client.connect({
      ...auth,
      host: endpoint.address,
      port: endpoint.port,
      readyTimeout: timeoutMs,
      keepaliveInterval: 10_000,
      sock,
      hostVerifier: (key: Buffer) => {
        const ok = check.verify(key);
        if (!ok) keyRejected = true;
        return ok;
      },
    });
  });
}

async function openSession(host: HostConnection, credentials: Credentials): Promise<SshSession> {
  if (!host.jumpHost) return new SshSession(await openClient(host, credentials, host.connectTimeoutMs), host, undefined);
  const jump = await openClient(host.jumpHost, credentials, host.connectTimeoutMs);
  const stream = await new Promise<ClientChannel>((resolve, reject) =>
    jump.forwardOut("127.0.0.1", 0, host.address, host.port, (err, channel) =>
      err ? reject(new SshError(`${hostLabel(host.jumpHost!)}: jump host cannot reach ${host.address}:${host.port}: ${err.message}`)) : resolve(channel),
    ),
  );
  try {
    return new SshSession(await openClient(host, credentials, host.connectTimeoutMs, stream), host, jump);
  } catch (err) {
    jump.end();
    throw err;
  }
}

const pool = new Map<string, Promise<SshSession>>();

function poolKey(host: HostConnection, credentials: Credentials): string {
  return JSON.stringify([host, credentials.privateKey ? "key" : credentials.password ? "pw" : "agent"]);
}

/** The pooled session to a host, opened on first use and reopened if it dropped. */
export async function sessionFor(host: HostConnection, credentials: Credentials): Promise<SshSession> {
  const key = poolKey(host, credentials);
  const existing = pool.get(key);
  if (existing) {
    const session = await existing.catch(() => undefined);
    if (session?.isOpen) return session;
    pool.delete(key);
  }
  const opening = openSession(host, credentials);
  pool.set(key, opening);
  opening.catch(() => pool.delete(key));
  return opening;
}

/** A brand-new session, not from the pool (close it when done): its login proves that the management path works. */
export function freshSession(host: HostConnection, credentials: Credentials): Promise<SshSession> {
  return openSession(host, credentials);
}

/** A brand-new login, not from the pool: proves that the management path still works. */
export async function freshLogin(host: HostConnection, credentials: Credentials): Promise<void> {
  const session = await openSession(host, credentials);
  try {
    await session.run(["true"], { timeoutMs: host.connectTimeoutMs });
  } finally {
    session.close();
  }
}

/** Forgets (and closes) the pooled session to a host, e.g. after its management path was cut. */
export function dropSession(host: HostConnection, credentials: Credentials): void {
  const key = poolKey(host, credentials);
  pool.get(key)?.then((s) => s.close(), () => undefined);
  pool.delete(key);
}

export function closeAllSessions(): void {
  for (const opening of pool.values()) opening.then((s) => s.close(), () => undefined);
  pool.clear();
}
