export type { HostArgs, SshEndpointArgs } from "./host";
export { XdpFirewall, type XdpFirewallArgs } from "./xdpFirewall";
export {
  TrafficMirror,
  type TrafficMirrorArgs,
  type TrafficMirrorFilter,
  type TrafficMirrorFilterArgs,
  type TrafficMirrorTargetArgs,
  type VxlanTunnelArgs,
  type GretapTunnelArgs,
} from "./trafficMirror";
