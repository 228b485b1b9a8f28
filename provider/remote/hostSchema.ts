/**
 * The `host` input every resource shares: where to reach a machine and how to
 * trust it. Credentials travel separately (`credentials`), so that the engine
 * keeps them secret in state while the address stays readable in previews.
 */
import { z } from "zod";

const hostname = z
  .string()
  .min(1, "must not be empty")
  .max(253)
  .regex(/^[A-Za-z0-9.:_-]+$/, "must be an IP address or a DNS name (letters, digits, '.', '-', ':')");

export const sshEndpointSchema = z.strictObject({
  /** IP address or DNS name of the host's sshd. */
  address: hostname,
  /** sshd port. Default 22. */
  port: z.number().int().min(1).max(65535).default(22),
  /** Login user. Default "root"; any other user runs bpfleet's commands through `sudo -n`. */
  user: z.string().regex(/^[a-z_][a-z0-9_.-]{0,31}$/, "must be a valid Unix user name").default("root"),
  /** The host's public key as in known_hosts ("ssh-ed25519 AAAA...", e.g. from `ssh-keyscan -t ed25519 <host>`, checked out of band). Recommended. */
  hostKey: z.string().regex(/^(ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp(256|384|521)) [A-Za-z0-9+/]+=*( .*)?$/, "must look like 'ssh-ed25519 AAAA...'").optional(),
  /** known_hosts file to verify the host key against when hostKey is not given. Default ~/.ssh/known_hosts. An unknown key is refused. */
  knownHostsPath: z.string().min(1).optional(),
  /** Accept whatever key the host presents. Only for throwaway machines. Default false. */
  insecureSkipHostKeyCheck: z.boolean().default(false),
});

export const hostSchema = sshEndpointSchema.extend({
  /** Run commands through `sudo -n` (passwordless sudo). Default: true unless user is root. */
  sudo: z.boolean().optional(),
  /** Reach the host through this SSH jump host (ProxyJump; same credentials). */
  jumpHost: sshEndpointSchema.optional(),
  /** SSH handshake timeout in ms. Default 15000. */
  connectTimeoutMs: z.number().int().min(100).max(600_000).default(15_000),
  /** Timeout of any single remote command in ms. Default 120000. */
  commandTimeoutMs: z.number().int().min(100).max(3_600_000).default(120_000),
});

export type SshEndpoint = z.infer<typeof sshEndpointSchema>;
export type HostConnection = z.infer<typeof hostSchema>;

export const credentialsSchema = z.strictObject({
  /** Private key text (OpenSSH or PEM). Pass a secret, e.g. `config.requireSecret("sshKey")`. */
  privateKey: z.string().min(1).optional(),
  /** Passphrase of privateKey. */
  passphrase: z.string().optional(),
  /** Password login (discouraged). */
  password: z.string().optional(),
  /** ssh-agent socket path. Default $SSH_AUTH_SOCK when neither privateKey nor password is given. */
  agentSocket: z.string().optional(),
});

export type Credentials = z.infer<typeof credentialsSchema>;

/** How the provider names a host in IDs and messages. */
export function hostLabel(host: Pick<HostConnection, "address" | "port" | "user">): string {
  return `${host.user}@${host.address}${host.port === 22 ? "" : `:${host.port}`}`;
}
