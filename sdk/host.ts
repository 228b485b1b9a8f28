import * as pulumi from "@pulumi/pulumi";

/** How to reach and trust an SSH endpoint. */
export interface SshEndpointArgs {
  /** IP address or DNS name of the host's sshd. */
  address: pulumi.Input<string>;
  /** sshd port. Default 22. */
  port?: pulumi.Input<number>;
  /** Login user. Default "root"; any other user runs bpfleet's commands through `sudo -n`. */
  user?: pulumi.Input<string>;
  /** The host's public key as in known_hosts ("ssh-ed25519 AAAA..."). Recommended. */
  hostKey?: pulumi.Input<string>;
  /** known_hosts file to verify against when hostKey is not given. Default ~/.ssh/known_hosts. */
  knownHostsPath?: pulumi.Input<string>;
  /** Accept any host key. Only for throwaway machines. Default false. */
  insecureSkipHostKeyCheck?: pulumi.Input<boolean>;
}

/** A Linux host reached over SSH. Credentials are kept as Pulumi secrets. */
export interface HostArgs extends SshEndpointArgs {
  /** Private key text (OpenSSH or PEM). Pass a secret, e.g. `config.requireSecret("sshKey")`. */
  privateKey?: pulumi.Input<string>;
  /** Passphrase of privateKey. */
  passphrase?: pulumi.Input<string>;
  /** Password login (discouraged). */
  password?: pulumi.Input<string>;
  /** ssh-agent socket path. Default $SSH_AUTH_SOCK when neither privateKey nor password is given. */
  agentSocket?: pulumi.Input<string>;
  /** Run commands through sudo. Default: true unless user is root. */
  sudo?: pulumi.Input<boolean>;
  /** Reach the host through this jump host (same credentials). */
  jumpHost?: pulumi.Input<SshEndpointArgs>;
  /** SSH handshake timeout in ms. Default 15000. */
  connectTimeoutMs?: pulumi.Input<number>;
  /** Timeout of any single remote command in ms. Default 120000. */
  commandTimeoutMs?: pulumi.Input<number>;
}

const CREDENTIAL_KEYS = ["privateKey", "passphrase", "password", "agentSocket"] as const;

/**
 * Splits a host into its endpoint (readable in previews and state) and its
 * credentials (a secret), so the engine keeps key material encrypted in state.
 */
export function splitHost(host: pulumi.Input<HostArgs>): { host: pulumi.Output<unknown>; credentials: pulumi.Output<unknown> } {
  const all = pulumi.output(host);
  const endpoint = pulumi.unsecret(
    all.apply((h) => Object.fromEntries(Object.entries(h).filter(([k, v]) => v !== undefined && !(CREDENTIAL_KEYS as readonly string[]).includes(k)))),
  );
  const credentials = pulumi.secret(
    all.apply((h) => Object.fromEntries(Object.entries(h).filter(([k, v]) => v !== undefined && (CREDENTIAL_KEYS as readonly string[]).includes(k)))),
  );
  return { host: endpoint, credentials };
}
