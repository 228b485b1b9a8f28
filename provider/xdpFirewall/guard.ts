/**
 * XdpFirewall's lockout guard: the refusal of deny entries that would drop the
 * provider's own session, and the script the host runs by itself to undo a
 * change when the provider does not come back to disarm it.
 */
import { parsePrefix, prefixContains, type Prefix } from "../cidr";
import { batchText, type MapOperation } from "../remote/mapOperations";
import { HostPreconditionError } from "../remote/preflight";
import type { SshSession } from "../remote/ssh";
import type { HookChange, HookPlan } from "../remote/xdpHook";
import type { XdpFirewallInputs } from "./schema";

/** Refuses deny entries that would drop this provider's own SSH session. */
/**
 * The entries of `deny` that cover `address`, remembered per list and peer: the
 * firewalls of a fleet share one DenyList's record (and usually one management
 * address), and parsing every entry cost each host O(entries).
 */
const coveringByList = new WeakMap<Record<string, unknown>, Map<string, string[]>>();

function entriesCovering(deny: Record<string, unknown>, peer: string, address: Prefix): string[] {
  let byPeer = coveringByList.get(deny);
  if (!byPeer) coveringByList.set(deny, (byPeer = new Map()));
  let covering = byPeer.get(peer);
  if (!covering) byPeer.set(peer, (covering = Object.keys(deny).filter((entry) => prefixContains(parsePrefix(entry), address))));
  return covering;
}

/**
 * `knownPeer`: the peer an update planned without a survey assumes, which its exec
 * checks on the host before it changes anything (lifecycle.ts optimisticUpdate).
 */
export async function refuseManagementDeny(session: SshSession, inputs: XdpFirewallInputs, knownPeer?: string): Promise<void> {
  if (inputs.allowManagementDeny || !inputs.attached) return;
  const peer = knownPeer ?? (await session.managementPeer());
  if (!peer) return;
  let address;
  try {
    address = parsePrefix(peer.replace(/^::ffff:/, ""));
  } catch {
    return;
  }
  const covering = entriesCovering(inputs.deny, peer, address);
  if (covering.length > 0) {
    throw new HostPreconditionError(
      `${session.label}: deny entr${covering.length === 1 ? "y" : "ies"} ${covering.join(", ")} would drop ${peer}, the address this provider's SSH session comes from, and lock the host out of management. ` +
        `Remove the entry, or set allowManagementDeny: true if another path manages this host. Nothing was changed.`,
    );
  }
}

/**
 * What the host runs if the revert timer fires: restore the entries, then put the
 * hook back as it was (see hookRevertShell). Every value is quoted.
 */
export function revertScript(hook: HookPlan, inverse: MapOperation[], change: HookChange): string {
  const batch = inverse.length > 0 ? `bpftool batch file - <<'BPFLEET_BATCH'\n${batchText(inverse)}BPFLEET_BATCH\n` : "";
  return batch + hook.revertShell(change);
}

