/**
 * SSH transport: one pooled ssh2 connection per host per provider process,
 * host keys verified, per-command timeouts, sudo for non-root users, jump hosts.
 * Every command is an argv array (or a list of them) quoted by shellQuote.
 */
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
}

export class RemoteCommandError extends Error {
  constructor(
    readonly host: string,
    readonly command: string,
    readonly result: ExecResult | undefined,
    reason: string,
  ) {
    const stderr = result?.stderr.trim();
    super(`${host}: ${reason}\n  command: ${command}${stderr ? `\n  stderr: ${stderr.slice(0, 4000)}` : ""}`);
  }
}

export class SshError extends Error {}

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
    return new Promise<ExecResult>((resolve, reject) => {
      if (this.closed) return reject(new SshError(`${this.label}: the SSH connection is closed`));
      this.client.exec(wire, (err, channel: ClientChannel) => {
        if (err) return reject(new RemoteCommandError(this.label, commandLine, undefined, `could not start the command: ${err.message}`));
        const stdout: Buffer[] = [];
        const stderr: Buffer[] = [];
        let settled = false;
        const timer = setTimeout(() => {
          if (settled) return;
          settled = true;
          channel.close();
          reject(new RemoteCommandError(this.label, commandLine, collect(), `timed out after ${timeoutMs} ms`));
        }, timeoutMs);
        const collect = (code = -1): ExecResult => ({
          code,
          stdout: Buffer.concat(stdout).toString("utf8"),
          stderr: Buffer.concat(stderr).toString("utf8"),
        });
        channel.on("data", (d: Buffer) => stdout.push(d));
        channel.stderr.on("data", (d: Buffer) => stderr.push(d));
        channel.on("close", (code: number | null, signal?: string) => {
          if (settled) return;
          settled = true;
          clearTimeout(timer);
          const result = collect(code ?? (signal ? 128 : -1));
          if (result.code !== 0 && !options.allowFailure) {
            reject(new RemoteCommandError(this.label, commandLine, result, `command failed with exit code ${result.code}${signal ? ` (signal ${signal})` : ""}`));
          } else {
            resolve(result);
          }
        });
        if (options.stdin !== undefined) channel.end(options.stdin);
        else channel.end();
      });
    });
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
