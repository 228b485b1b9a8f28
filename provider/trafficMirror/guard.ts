/**
 * TrafficMirror's lockout guard: which interfaces a change touches that could
 * carry the management SSH session, and the script the host runs by itself to
 * undo a change when the provider does not come back to disarm it (the same
 * script rolls back a change that failed half way).
 *
 * A mirror never drops a packet by design, but a change still loads a new BPF
 * object into both hooks of the interface, and a tunnel adds a device whose
 * packets leave through its underlay: a faulty object or device on the path
 * of the management session would cut it like any firewall.
 */
import type { PinLayout } from "../remote/pins";
import { sections } from "../remote/resourceSurvey";
import { shellQuote } from "../remote/quote";
import type { SshSession } from "../remote/ssh";
import { TC_DIRECTIONS, type TcDirection } from "../remote/tc";
import { tcRevertScript } from "../remote/tcHook";
import { CONFIG_MAP } from "./codec";
import { hostJson, ipRouteGet } from "../remote/hostJson";
import { runShellScript } from "../remote/shellScript";

export interface ChangedPaths {
  /** The interface the host routes the management session's replies through. */
  management: string | undefined;
  /** The interface the tunnel's packets leave through (its underlay), when there is a tunnel. */
  underlay: string | undefined;
}

const deviceOf = (json: string | undefined) => hostJson(ipRouteGet.nullable(), json || "null", { command: "ip -j route get" })?.[0]?.dev;

/** The routes to the management peer and to the tunnel's remote, in one round trip. */
export async function changedPaths(session: SshSession, tunnelRemote: string | undefined): Promise<ChangedPaths> {
  // sshd reports IPv4 peers of a dual-stack socket as ::ffff:a.b.c.d, which `ip route get` takes for IPv6.
  const peer = (await session.managementPeer())?.replace(/^::ffff:(?=\d+\.)/i, "") ?? "";
  const parts = sections((await runShellScript(session, "mirror-routes", { management: peer, underlay: tunnelRemote ?? "" })).stdout);
  return { management: deviceOf(parts.get("management")), underlay: deviceOf(parts.get("underlay")) };
}

/**
 * Whether a change needs the guard: it touches the interface that carries the
 * session, or a tunnel whose packets leave through it. Without a route to the
 * peer there is no telling which interface carries the session, so it does.
 */
export function touchesManagementPath(paths: ChangedPaths, iface: string, hasTunnel: boolean): boolean {
  if (paths.management === undefined) return true;
  return paths.management === iface || (hasTunnel && paths.underlay === paths.management);
}

export interface MirrorRevertPlan {
  layout: PinLayout;
  iface: string;
  priority: number;
  handle: number;
  /** The mirror had no program pinned before: remove everything it has. */
  fresh: boolean;
  /** Hooks on which one of the mirror's filters was before the change. */
  hookedBefore: readonly TcDirection[];
  /** The config entry before the change (absent when fresh). */
  config: Uint8Array | undefined;
  /** A tunnel device the change creates (it did not exist before). */
  newTunnel: string | undefined;
  /** The interface had a clsact qdisc before the change. */
  qdiscBefore: boolean;
}

const hexWords = (bytes: Uint8Array) => Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join(" ");

/**
 * What the host runs if the revert timer fires, or the provider rolls back a
 * failed change (tcRevertScript): the config goes back before the new tunnel
 * does, so the program never points at a device that is gone.
 */
export function mirrorRevertScript(plan: MirrorRevertPlan): string {
  const maps = !plan.fresh && plan.config ? [`bpftool map update pinned "$D/maps/${CONFIG_MAP}" key hex 00 00 00 00 value hex ${hexWords(plan.config)} 2>/dev/null`] : [];
  const filters = TC_DIRECTIONS.map((direction) => {
    const slot = { direction, priority: plan.priority, handle: plan.handle };
    return !plan.fresh && plan.hookedBefore.includes(direction) ? { slot, program: "", quiet: true } : { slot };
  });
  const after = [...(plan.fresh ? [`rmdir -- "$(dirname "$D")" 2>/dev/null`] : []), ...(plan.newTunnel ? [`ip link del dev ${shellQuote([plan.newTunnel])} 2>/dev/null`] : [])];
  return tcRevertScript({ ...plan, maps, programPin: "prog", filters, restoresProgram: !plan.fresh, after });
}
