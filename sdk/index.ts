export type { HostArgs, SshEndpointArgs } from "./host";
export { XdpFirewall, type XdpFirewallArgs } from "./xdpFirewall";
