import * as pulumi from "@pulumi/pulumi";
import type { z } from "zod";
import type { credentialsSchema, hostSchema, sshEndpointSchema } from "../provider/remote/hostSchema";
import type { DeepInput } from "./inputs";

/** How to reach and trust an SSH endpoint (fields documented in provider/remote/hostSchema.ts). */
export type SshEndpointArgs = DeepInput<z.input<typeof sshEndpointSchema>>;

/** A host's endpoint and credentials, as users write them (the SDK splits the two, see splitHost). */
export type HostInput = z.input<typeof hostSchema> & z.input<typeof credentialsSchema>;

/** A Linux host reached over SSH. Credentials are kept as Pulumi secrets. */
export type HostArgs = DeepInput<HostInput>;

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
