// Test fleet ("lab") for vitest tests and scripts: a thin typed wrapper around
// test/lab/lab.sh, which does the real work (namespaces, bridge, sshds).
//
//   const lab = await createLab("fw", { hosts: 2, clients: 1 });
//   await lab.ssh(lab.hosts[0], ["bpftool", "map", "list"]);      // as the provider would
//   await lab.inHost(lab.hosts[0], ["ls", "/sys/fs/bpf"]);          // directly, same bpffs as sshd
//   await lab.inClient(lab.clients[0], ["ping", "-c1", lab.hosts[0].address]);
//   await lab.destroy();
//
// Every lab created here is removed on process exit, SIGINT, SIGTERM, SIGHUP
// and (in a forked test worker) loss of the runner, even if the test forgot or
// failed. (A SIGKILLed run leaves it behind; the next
// `createLab` with the same name, or `lab.sh down-all`, cleans it.)
import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import * as path from "node:path";
import { execa, type Options, type ResultPromise } from "execa";
import { z } from "zod";

/** Path of lab.sh (override with BPFLEET_LAB_SH). */
export const LAB_SH: string = process.env.BPFLEET_LAB_SH ?? path.join(__dirname, "lab.sh");

const HostSchema = z.object({
  name: z.string(), // "h1"
  netns: z.string(), // "bfl<lab>-h1"
  address: z.string(), // 10.200.<k>.(10+i)
  address6: z.string(), // fd00:bf:<k>::(10+i)
  port: z.number(),
  user: z.string(), // "root"
  hostKey: z.string(), // "ssh-ed25519 AAAA..."
  interface: z.string(), // "eth0"
  mac: z.string(),
  sshdPid: z.number(),
});
const ClientSchema = z.object({
  name: z.string(), // "c1"
  netns: z.string(),
  address: z.string(), // 10.200.<k>.(200+j)
  address6: z.string(),
  interface: z.string(),
  mac: z.string(),
});
export const LabInfoSchema = z.object({
  name: z.string(),
  dir: z.string(),
  privateKeyPath: z.string(),
  publicKey: z.string(),
  knownHostsPath: z.string(),
  bridge: z.string(),
  subnet4: z.string(),
  subnet6: z.string(),
  gateway4: z.string(),
  gateway6: z.string(),
  sudoUser: z.string(), // non-root user with passwordless sudo, same key
  hosts: z.array(HostSchema),
  clients: z.array(ClientSchema),
});

export type LabHost = z.infer<typeof HostSchema>;
export type LabClient = z.infer<typeof ClientSchema>;
export type LabInfo = z.infer<typeof LabInfoSchema>;

/**
 * The execa options the helpers take (a subset, so that results keep
 * `stdout: string`). Pass `reject: false` to inspect a failing command.
 */
export interface RunOptions {
  input?: string | Uint8Array;
  reject?: boolean;
  timeout?: number;
  env?: Record<string, string>;
  cancelSignal?: AbortSignal;
  stdin?: "ignore" | "pipe" | "inherit";
  stdout?: "pipe" | "inherit" | "ignore";
  stderr?: "pipe" | "inherit" | "ignore";
}
/** What the helpers return: execa's promise, also the subprocess (kill() works). */
export type Run = ResultPromise<{}>;

export interface SshOptions extends RunOptions {
  /** Login user (default: the host's user, root). */
  user?: string;
  /** Private key file (default: the lab key). */
  identity?: string;
  /** known_hosts file checked with StrictHostKeyChecking=yes (default: the lab's). */
  knownHosts?: string;
  /** Connect to the IPv6 address instead of the IPv4 one. */
  ipv6?: boolean;
}

export interface Lab extends LabInfo {
  /** Path of lab.json. */
  readonly jsonPath: string;
  host(name: string): LabHost;
  client(name: string): LabClient;
  /**
   * Run argv inside the host: its netns, and the mount (bpffs, /tmp) and UTS
   * namespaces of its sshd (so its own /run too). Returns execa's promise/subprocess (kill() works).
   */
  inHost(host: LabHost | string, argv: string[], opts?: RunOptions): Run;
  /**
   * Writes `contents` to `path` inside the host. A host has its own /tmp, so a
   * file of the test process (e.g. a BPF object under a /tmp checkout) is not
   * visible there by its path.
   */
  putFile(host: LabHost | string, path: string, contents: string | Buffer): Promise<void>;
  /** Run argv inside a client's netns. */
  inClient(client: LabClient | string, argv: string[], opts?: RunOptions): Run;
  /** ssh argv (without the remote command) with strict host-key checking against the lab's known_hosts. */
  sshArgs(host: LabHost | string, opts?: SshOptions): string[];
  /** Run argv on the host over SSH (argv is shell-quoted for the remote shell). */
  ssh(host: LabHost | string, argv: string[], opts?: SshOptions): Run;
  /** Remove the lab (idempotent). */
  destroy(): Promise<void>;
}

function run(file: string, args: string[], opts: RunOptions): Run {
  return execa(file, args, opts as Options) as unknown as Run;
}

/** Quote argv for a POSIX shell (the remote login shell of an ssh command). */
export function shellQuote(argv: readonly string[]): string {
  return argv.map((a) => (/^[A-Za-z0-9_\/.:=@%+,-]+$/.test(a) ? a : `'${a.replace(/'/g, `'\\''`)}'`)).join(" ");
}

// ---------------------------------------------------------------- cleanup

const live = new Set<string>();
let hooksInstalled = false;

/** Synchronous: it must run inside 'exit' handlers. */
function destroyAllSync(): void {
  for (const name of live) {
    try {
      execFileSync(LAB_SH, ["down", name], { stdio: "ignore", timeout: 60_000 });
    } catch {
      // best effort; `lab.sh down-all` is the backstop
    }
  }
  live.clear();
}

function installCleanupHooks(): void {
  if (hooksInstalled) return;
  hooksInstalled = true;
  process.on("exit", destroyAllSync);
  // In a forked test worker, losing the IPC channel means the runner is gone
  // (killed): nobody will wait for this test any more.
  if (process.connected) process.once("disconnect", destroyAllSync);
  for (const sig of ["SIGINT", "SIGTERM", "SIGHUP"] as const) {
    process.once(sig, () => {
      destroyAllSync();
      // Our listener replaced the default action (terminate); restore it unless
      // someone else (e.g. the test runner) handles the signal.
      if (process.listenerCount(sig) === 0) process.kill(process.pid, sig);
    });
  }
}

// ---------------------------------------------------------------- createLab

export interface CreateLabOptions {
  hosts: number;
  clients?: number;
}

/**
 * Create lab `name` (1-7 chars [a-z0-9]; an existing lab of that name is
 * removed first) and return it once every host's sshd accepts logins.
 */
export async function createLab(name: string, { hosts, clients = 0 }: CreateLabOptions): Promise<Lab> {
  if (!/^[a-z0-9]{1,7}$/.test(name)) throw new Error(`lab name '${name}' must be 1-7 characters [a-z0-9]`);
  installCleanupHooks();
  live.add(name);
  let jsonPath: string;
  try {
    const r = await execa(LAB_SH, ["up", name, "--hosts", String(hosts), "--clients", String(clients)], {
      timeout: 300_000,
    });
    jsonPath = r.stdout.trim().split("\n").pop() ?? "";
  } catch (err) {
    await execa(LAB_SH, ["down", name], { reject: false });
    live.delete(name);
    throw err;
  }
  return openLab(jsonPath, { own: true });
}

/** Wrap an existing lab.json (e.g. made by `lab.sh up` in CI). With own=false, process exit leaves it alone. */
export function openLab(jsonPath: string, { own = false }: { own?: boolean } = {}): Lab {
  const info = LabInfoSchema.parse(JSON.parse(readFileSync(jsonPath, "utf8")));
  if (own) {
    installCleanupHooks();
    live.add(info.name);
  }
  const host = (h: LabHost | string): LabHost => {
    if (typeof h !== "string") return h;
    const found = info.hosts.find((x) => x.name === h || x.netns === h);
    if (!found) throw new Error(`lab ${info.name}: no host ${h}`);
    return found;
  };
  const client = (c: LabClient | string): LabClient => {
    if (typeof c !== "string") return c;
    const found = info.clients.find((x) => x.name === c || x.netns === c);
    if (!found) throw new Error(`lab ${info.name}: no client ${c}`);
    return found;
  };
  const sshArgs = (h: LabHost | string, o: SshOptions = {}): string[] => {
    const t = host(h);
    return [
      "-F", "/dev/null", // ignore ~/.ssh/config
      "-i", o.identity ?? info.privateKeyPath,
      "-o", "IdentitiesOnly=yes",
      "-o", "IdentityAgent=none",
      "-o", "BatchMode=yes",
      "-o", "StrictHostKeyChecking=yes",
      "-o", `UserKnownHostsFile=${o.knownHosts ?? info.knownHostsPath}`,
      "-o", "GlobalKnownHostsFile=/dev/null",
      "-o", "ConnectTimeout=5",
      "-o", "LogLevel=ERROR",
      "-p", String(t.port),
      `${o.user ?? t.user}@${o.ipv6 ? t.address6 : t.address}`,
    ];
  };
  return {
    ...info,
    jsonPath,
    host,
    client,
    sshArgs,
    inHost(h, argv, opts = {}) {
      const t = host(h);
      return run("nsenter", ["-t", String(t.sshdPid), "-m", "-n", "-u", "--", ...argv], opts);
    },
    async putFile(h, path, contents) {
      const t = host(h);
      await run("nsenter", ["-t", String(t.sshdPid), "-m", "-n", "-u", "--", "sh", "-c", 'cat > "$0"', path], { input: contents });
    },
    inClient(c, argv, opts = {}) {
      return run("ip", ["netns", "exec", client(c).netns, ...argv], opts);
    },
    ssh(h, argv, opts = {}) {
      const { user, identity, knownHosts, ipv6, ...runOpts } = opts;
      return run("ssh", [...sshArgs(h, { user, identity, knownHosts, ipv6 }), shellQuote(argv)], {
        stdin: "ignore",
        ...runOpts,
      });
    },
    async destroy() {
      await execa(LAB_SH, ["down", info.name], { timeout: 120_000 });
      live.delete(info.name);
    },
  };
}
