/**
 * The XDP hook of an interface, through bpftool: what is attached, and the
 * commands that attach, replace and detach a pinned program.
 */
import { hostJson, netShow, xdpOfNetShow } from "./hostJson";
import type { SshSession } from "./ssh";

export type XdpMode = "native" | "generic" | "auto";

export interface XdpAttachment {
  /** As bpftool reports it: "driver", "generic", "offload" (or "multi"). */
  mode: string;
  programId: number;
}

export async function xdpAttachment(session: SshSession, iface: string): Promise<XdpAttachment | undefined> {
  const result = await session.run(["bpftool", "-j", "net", "show", "dev", iface]);
  return xdpOfNetShow(hostJson(netShow, result.stdout, { host: session.label, command: `bpftool -j net show dev ${iface}` }));
}

const ATTACH_TYPE: Record<XdpMode, string> = { native: "xdpdrv", generic: "xdpgeneric", auto: "xdp" };
const ATTACH_TYPE_OF_REPORTED_MODE: Record<string, string> = { driver: "xdpdrv", generic: "xdpgeneric", offload: "xdpoffload" };

/**
 * Attaches the pinned program to `iface`. With `replacing`, the program already
 * there is swapped in one netlink call, in the mode it is attached in, so packets
 * never pass unfiltered.
 */
export function attachXdpCommand(iface: string, programPin: string, mode: XdpMode, replacing?: XdpAttachment): string[] {
  const type = replacing ? (ATTACH_TYPE_OF_REPORTED_MODE[replacing.mode] ?? ATTACH_TYPE[mode]) : ATTACH_TYPE[mode];
  return ["bpftool", "net", "attach", type, "pinned", programPin, "dev", iface, ...(replacing ? ["overwrite"] : [])];
}

export async function detachXdp(session: SshSession, iface: string, attachment: XdpAttachment): Promise<void> {
  const type = ATTACH_TYPE_OF_REPORTED_MODE[attachment.mode] ?? "xdp";
  await session.run(["bpftool", "net", "detach", type, "dev", iface]);
}
