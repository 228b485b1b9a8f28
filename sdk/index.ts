export type { HostArgs, SshEndpointArgs } from "./host";
export type { ExpectationArgs, ExpectationResult } from "./expect";
export { XdpFirewall, type XdpFirewallArgs } from "./xdpFirewall";
export { DenyList, type DenyListArgs, type DenyListRef } from "./denyList";
export {
  TrafficMirror,
  type TrafficMirrorArgs,
  type TrafficMirrorFilter,
  type TrafficMirrorFilterArgs,
  type TrafficMirrorTargetArgs,
  type VxlanTunnelArgs,
  type GretapTunnelArgs,
} from "./trafficMirror";
export { MirrorFilterSet, type MirrorFilterSetArgs } from "./mirrorFilterSet";
export { Fleet, type FleetArgs, type FleetHost, type FleetMember, type FleetHealthArgs, type FleetHealthTarget, type FleetHostStatus } from "./fleet";
export { HealthGate, type HealthGateArgs, type HealthGateTargetArgs, type CounterCheckArgs, type HealthGateReport } from "./healthGate";
export { MaglevService, type MaglevServiceArgs, type MaglevBackendArgs, type MaglevVipArgs } from "./maglevService";
export { MaglevBackendSet, type MaglevBackendSetArgs } from "./maglevBackendSet";
export { TcRuleSet, type TcRuleSetArgs } from "./tcRuleSet";
export type { SharedListRef } from "./sharedList";
export { TcPolicy, type TcPolicyArgs, type TcPolicyDirectionArgs, type TcPolicyDirectionState, type TcPolicyRuleArgs, type TcPolicyTimeoutsArgs, type TcPolicyCounters } from "./tcPolicy";
