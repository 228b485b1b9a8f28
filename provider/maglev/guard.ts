/**
 * MaglevService's refusal of a change that would balance the provider's own
 * SSH session away from the host.
 */
import { HostPreconditionError } from "../remote/preflight";
import type { SshSession } from "../remote/ssh";
import type { Vip } from "./schema";

/** Refuses a TCP VIP that is the very address and port this provider's SSH session talks to. */
export async function guardManagementPath(session: SshSession, vips: Record<string, Vip>): Promise<void> {
  const result = await session.run(["sh", "-c", 'printf %s "$SSH_CONNECTION"'], { asLoginUser: true, allowFailure: true });
  const [, , serverAddress, serverPort] = result.stdout.trim().split(/\s+/);
  if (!serverAddress || !serverPort) return;
  const address = serverAddress.replace(/^::ffff:/, "");
  const hit = Object.entries(vips).find(([, v]) => v.protocol === "tcp" && v.port === Number(serverPort) && v.address === address);
  if (hit) {
    throw new HostPreconditionError(
      `${session.label}: VIP ${hit[0]} is the address and port of this provider's own SSH session: balancing it would send the management connection to the backends and lock the host out. Nothing was changed.`,
    );
  }
}
