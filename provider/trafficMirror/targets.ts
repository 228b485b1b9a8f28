/**
 * Where a TrafficMirror's copies go: the local interface it names, refused when
 * it cannot take them, or the tunnel it asks for when that is ready already.
 */
import { HostPreconditionError } from "../remote/preflight";
import type { SshSession } from "../remote/ssh";
import type { TrafficMirrorInputs } from "./schema";
import { linkNamed, sameTunnel, tunnelAlias, tunnelDeviceName, tunnelSpecOf, type LinkInfo } from "./tunnel";

export function interfaceList(links: readonly LinkInfo[]): string {
  return links.map((l) => l.ifname).join(", ");
}

/** The local target, refused when it is missing, down, loopback, the mirrored interface itself, or a tunnel this mirror owns. */
export function resolveLocalTarget(session: SshSession, links: readonly LinkInfo[], mirrored: LinkInfo, name: string, pinName: string): LinkInfo {
  const target = linkNamed(links, name);
  if (!target) {
    throw new HostPreconditionError(`${session.label}: target interface "${name}" does not exist on the host (it has: ${interfaceList(links)}). Nothing was changed.`);
  }
  if (target.ifindex === mirrored.ifindex) {
    throw new HostPreconditionError(
      `${session.label}: target interface "${name}" is the mirrored interface ${mirrored.ifname} itself: every copy sent out of it would be mirrored again (a loop). Pick another target. Nothing was changed.`,
    );
  }
  if (target.ifname === "lo") {
    throw new HostPreconditionError(`${session.label}: target interface "lo" would hand every copy back to this host's own network stack as if it had been received. Use a dummy or veth. Nothing was changed.`);
  }
  if (target.alias === tunnelAlias(pinName)) {
    // It would be removed as a leftover tunnel right after the mirror pointed at it.
    throw new HostPreconditionError(`${session.label}: target interface "${name}" is a tunnel this mirror created; give target.tunnel with its parameters instead. Nothing was changed.`);
  }
  if (!target.up) {
    throw new HostPreconditionError(`${session.label}: target interface "${name}" is down, so every copy would be dropped. Bring it up (ip link set ${target.ifname} up); bpfleet does not manage it. Nothing was changed.`);
  }
  return target;
}

/** The tunnel `inputs` asks for, when it exists on the host already as this mirror's, up and with its parameters. */
export function readyTunnel(links: readonly LinkInfo[], inputs: TrafficMirrorInputs): LinkInfo | undefined {
  const spec = inputs.target.tunnel;
  if (!spec) return undefined;
  const link = links.find((l) => l.ifname === tunnelDeviceName(inputs.name, spec));
  return link && link.alias === tunnelAlias(inputs.name) && link.up && sameTunnel(tunnelSpecOf(link), spec) ? link : undefined;
}
