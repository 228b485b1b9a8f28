/**
 * The management SSH session as the host saw it at a firewall's last create or update:
 * the address it came from (the first field of the host's $SSH_CONNECTION) and the
 * interface the host routes that address over. Kept in the firewall's state (output
 * only, never an input: `diff` compares inputs, `read` strips it from the inputs it
 * reports) so an update planned without a survey can name the address the host will
 * see when this end's own socket address is not it (NAT, a TCP proxy, a bastion that
 * forwards ports, a jump host) and the interface that carries it when that is not the
 * firewall's. Only ever a candidate: sh/firewall-update-check.sh compares it with
 * $SSH_CONNECTION and `ip route get` on the host before the change runs, so a stale
 * record costs the survey, never a wrong plan.
 */
import { isIP } from "node:net";
import type { ExecResult } from "../remote/ssh";

export interface ManagementSession {
  /** The address the session came from, as the host saw it (IPv4 without the `::ffff:` of a dual-stack socket). */
  address: string;
  /** The interface the host routes replies to `address` over, when it could tell. */
  interface?: string;
}

/** An address as the host and this end compare it: a dual-stack socket's `::ffff:10.0.0.1` is 10.0.0.1. */
export function peerAddress(address: string): string {
  return address.replace(/^::ffff:(?=\d+\.)/i, "");
}

/** A session record, or undefined when `address` is not an address (nothing reported, a state edited by hand). */
export function managementSession(address: string | undefined, iface: string | undefined): ManagementSession | undefined {
  if (!address || isIP(peerAddress(address)) === 0) return undefined;
  // An interface name is at most 15 bytes, no spaces or slashes (the kernel's rule, IFNAMSIZ).
  const named = iface && /^[^\s/]{1,15}$/.test(iface) ? iface : undefined;
  return named ? { address: peerAddress(address), interface: named } : { address: peerAddress(address) };
}

/**
 * What a state holds under `managementSession`, checked: a state written before the
 * field existed has none, and a value that is not a record of an address is ignored
 * (the survey then finds the address again).
 */
export function recordedSession(state: { managementSession?: unknown }): ManagementSession | undefined {
  const value = state.managementSession;
  if (!value || typeof value !== "object") return undefined;
  const { address, interface: iface } = value as Record<string, unknown>;
  return managementSession(typeof address === "string" ? address : undefined, typeof iface === "string" ? iface : undefined);
}

/**
 * The addresses an update planned without a survey may see the session come from:
 * this end's socket address (`guess`, right unless something translates it) and the
 * address the host reported last time; at most two, no duplicates, none when neither
 * is known.
 */
export function candidatePeers(guess: string | undefined, recorded: ManagementSession | undefined): string[] {
  const peers = [guess, recorded?.address].filter((p): p is string => !!p && isIP(peerAddress(p)) !== 0).map(peerAddress);
  return [...new Set(peers)];
}

/** What sh/firewall-update-check.sh reports on success: "<address the host saw> <interface it routes it over>". */
export function sessionFromCheck(result: ExecResult | undefined): ManagementSession | undefined {
  const [address, iface] = (result?.stdout ?? "").trim().split(/\s+/);
  return managementSession(address, iface);
}
