/**
 * What every resource kind shares about where it lives: its id (host, kind,
 * pin name) and its connection (the pooled SSH session and its pin layout).
 */
import { pinLayout, type PinLayout } from "./pins";
import { hostLabel, type Credentials, type HostConnection } from "./hostSchema";
import { settlePendingReverts, settleStep } from "./revertTimer";
import type { ShellStep } from "./shellSteps";
import { currentOperation, sessionFor, type SshSession } from "./ssh";

interface Placed {
  host: HostConnection;
  name: string;
}

/** "root@10.0.0.7/xdp-firewall/edge": unique per host and pin directory. */
export function resourceId(kind: string, inputs: Placed): string {
  return `${hostLabel(inputs.host)}/${kind}/${inputs.name}`;
}

/**
 * The host's SSH session and the resource's pin directory under /sys/fs/bpf/bpfleet/<kind>/,
 * with any revert left pending by an earlier, cut-off run of this resource settled first.
 * With `settleInSurvey`, the settle is returned as `settle`, a step the caller must run
 * first in its survey's exec (shellSteps.ts), before it reads anything.
 */
export async function connectResource(
  kind: string,
  inputs: Placed & { credentials: Credentials },
  options: { settleInSurvey?: boolean } = {},
): Promise<{ session: SshSession; layout: PinLayout; settle?: ShellStep }> {
  const session = await sessionFor(inputs.host, inputs.credentials);
  const layout = pinLayout(kind, inputs.name);
  // A change starts from a host no earlier run's revert timer can still rewrite (revertTimer.ts);
  // a read only looks.
  const op = currentOperation()?.op;
  if (op === "read" || op === "check") return { session, layout };
  if (options.settleInSurvey) return { session, layout, settle: settleStep(layout.dir) };
  await settlePendingReverts(session, layout.dir);
  return { session, layout };
}
