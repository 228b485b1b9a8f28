/**
 * What a host must offer a TcPolicy before anything changes: an Ethernet
 * interface (the programs parse Ethernet frames), and the kernel's BTF (the
 * object's flow clock is a CO-RE relocation).
 */
import { HostPreconditionError } from "../remote/preflight";
import type { SshSession } from "../remote/ssh";
import type { PolicyHostState } from "./hostState";

export function requireEthernet(session: SshSession, host: PolicyHostState, iface: string): void {
  const link = host.links.find((l) => l.ifname === iface);
  if (!link) {
    throw new HostPreconditionError(`${session.label}: interface "${iface}" does not exist on the host (it has: ${host.links.map((l) => l.ifname).join(", ")}). Nothing was changed.`);
  }
  if (link.linkType !== "ether") {
    throw new HostPreconditionError(
      `${session.label}: interface "${iface}" is not an Ethernet interface (link type ${link.linkType}); the policy parses Ethernet frames and would judge these packets wrongly. ` +
        `Attach it to an Ethernet interface (the physical NIC, a veth or a bridge). Nothing was changed.`,
    );
  }
}

/**
 * The object picks its flow clock when it loads (the coarse clock where the
 * kernel has it, a CO-RE relocation that libbpf resolves against the kernel's
 * BTF), so libbpf refuses it on a kernel that does not expose its BTF.
 */
export function requireKernelBtf(session: SshSession, host: PolicyHostState): void {
  if (host.kernelBtf) return;
  throw new HostPreconditionError(
    `${session.label}: the kernel does not expose its BTF (/sys/kernel/btf/vmlinux is missing), which loading the TcPolicy object needs; use a kernel built with CONFIG_DEBUG_INFO_BTF=y (distribution kernels usually are; Debian 11's 5.10 is). Nothing was changed.`,
  );
}
