/**
 * What every resource kind shares about where it lives: its id (host, kind,
 * pin name) and its connection (the pooled SSH session and its pin layout).
 */
import { pinLayout, type PinLayout } from "./bpfHost";
import { hostLabel, type Credentials, type HostConnection } from "./hostSchema";
import { sessionFor, type SshSession } from "./ssh";

interface Placed {
  host: HostConnection;
  name: string;
}

/** "root@10.0.0.7/xdp-firewall/edge": unique per host and pin directory. */
export function resourceId(kind: string, inputs: Placed): string {
  return `${hostLabel(inputs.host)}/${kind}/${inputs.name}`;
}

/** The host's SSH session and the resource's pin directory under /sys/fs/bpf/bpfleet/<kind>/. */
export async function connectResource(kind: string, inputs: Placed & { credentials: Credentials }): Promise<{ session: SshSession; layout: PinLayout }> {
  const session = await sessionFor(inputs.host, inputs.credentials);
  return { session, layout: pinLayout(kind, inputs.name) };
}
