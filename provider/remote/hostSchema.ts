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
  /** sshd port; default 22. */
  port: z.number().int().min(1).max(65535).default(22),
  /** Login user; default root. Anyone else runs our commands through `sudo -n`. */
  user: z.string().regex(/^[a-z_][a-z0-9_.-]{0,31}$/, "must be a valid Unix user name").default("root"),
  /** The host's public key as in known_hosts: "ssh-ed25519 AAAA...". */
  hostKey: z.string().regex(/^(ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp(256|384|521)) [A-Za-z0-9+/]+=*( .*)?$/, "must look like 'ssh-ed25519 AAAA...'").optional(),
  /** A known_hosts file to verify the host key against; default ~/.ssh/known_hosts when no hostKey is given. */
  knownHostsPath: z.string().min(1).optional(),
  /** Accept whatever key the host presents. Only for throwaway machines. */
  insecureSkipHostKeyCheck: z.boolean().default(false),
});

export const hostSchema = sshEndpointSchema.extend({
  /** Run commands through `sudo -n`; default true when user is not root. */
  sudo: z.boolean().optional(),
  /** Reach the host through this SSH jump host (ProxyJump). */
  jumpHost: sshEndpointSchema.optional(),
  /** Milliseconds to wait for the SSH handshake; default 15000. */
  connectTimeoutMs: z.number().int().min(100).max(600_000).default(15_000),
  /** Milliseconds any single remote command may take; default 120000. */
  commandTimeoutMs: z.number().int().min(100).max(3_600_000).default(120_000),
});

export type SshEndpoint = z.infer<typeof sshEndpointSchema>;
export type HostConnection = z.infer<typeof hostSchema>;

export const credentialsSchema = z.strictObject({
  /** OpenSSH or PEM private key text. */
  privateKey: z.string().min(1).optional(),
  /** Passphrase of the private key. */
  passphrase: z.string().optional(),
  /** Password login (discouraged). */
  password: z.string().optional(),
  /** Path of an ssh-agent socket; default $SSH_AUTH_SOCK when no key or password is given. */
  agentSocket: z.string().optional(),
});

export type Credentials = z.infer<typeof credentialsSchema>;

/** How the provider names a host in IDs and messages. */
export function hostLabel(host: Pick<HostConnection, "address" | "port" | "user">): string {
  return `${host.user}@${host.address}${host.port === 22 ? "" : `:${host.port}`}`;
}
