// The SDK's Args types as they were written by hand before they were derived from
// the schemas (commit aa98d70, doc comments stripped): test/unit/sdkArgs.test.ts proves
// the derived types accept exactly what these did, so no user program changes.
import type * as pulumi from "@pulumi/pulumi";

export interface SshEndpointArgs {
    address: pulumi.Input<string>;
    port?: pulumi.Input<number>;
    user?: pulumi.Input<string>;
    hostKey?: pulumi.Input<string>;
    knownHostsPath?: pulumi.Input<string>;
    insecureSkipHostKeyCheck?: pulumi.Input<boolean>;
}

export interface HostArgs extends SshEndpointArgs {
    privateKey?: pulumi.Input<string>;
    passphrase?: pulumi.Input<string>;
    password?: pulumi.Input<string>;
    agentSocket?: pulumi.Input<string>;
    sudo?: pulumi.Input<boolean>;
    jumpHost?: pulumi.Input<SshEndpointArgs>;
    connectTimeoutMs?: pulumi.Input<number>;
    commandTimeoutMs?: pulumi.Input<number>;
}

export interface XdpFirewallArgs {
    host: pulumi.Input<HostArgs>;
    interface: pulumi.Input<string>;
    deny?: pulumi.Input<pulumi.Input<string>[]>;
    mode?: pulumi.Input<"native" | "generic" | "auto">;
    attached?: pulumi.Input<boolean>;
    chainPriority?: pulumi.Input<number>;
    lockoutGuard?: pulumi.Input<boolean>;
    lockoutRevertSeconds?: pulumi.Input<number>;
    allowManagementDeny?: pulumi.Input<boolean>;
    bootRestore?: pulumi.Input<boolean>;
    expect?: pulumi.Input<pulumi.Input<string | ExpectationArgs>[]>;
    pinName?: pulumi.Input<string>;
}

export interface ExpectationArgs {
    hook?: pulumi.Input<string>;
    reply?: pulumi.Input<boolean>;
    protocol: pulumi.Input<string>;
    source: pulumi.Input<string>;
    sourcePort?: pulumi.Input<number | string>;
    destination: pulumi.Input<string>;
    destinationPort?: pulumi.Input<number | string>;
    flags?: pulumi.Input<pulumi.Input<string>[] | string>;
    verdict?: pulumi.Input<string>;
    backend?: pulumi.Input<string>;
}

export interface TcPolicyRuleArgs {
  action: pulumi.Input<"allow" | "deny">;
    protocol: pulumi.Input<"tcp" | "udp" | "icmp" | "any">;
    port?: pulumi.Input<number | string>;
    from?: pulumi.Input<string>;
    to?: pulumi.Input<string>;
}

export interface TcPolicyDirectionArgs {
    default?: pulumi.Input<"allow" | "deny">;
    rules?: pulumi.Input<pulumi.Input<string | TcPolicyRuleArgs>[]>;
}

export interface TcPolicyTimeoutsArgs {
    tcpEstablished?: pulumi.Input<number>;
    tcpTransitory?: pulumi.Input<number>;
    other?: pulumi.Input<number>;
}

export interface TcPolicyArgs {
    host: pulumi.Input<HostArgs>;
    interface: pulumi.Input<string>;
    ingress?: pulumi.Input<TcPolicyDirectionArgs>;
    egress?: pulumi.Input<TcPolicyDirectionArgs>;
    stateful?: pulumi.Input<boolean>;
    timeouts?: pulumi.Input<TcPolicyTimeoutsArgs>;
    attached?: pulumi.Input<boolean>;
    allowLockout?: pulumi.Input<boolean>;
    lockoutGuard?: pulumi.Input<boolean>;
    lockoutRevertSeconds?: pulumi.Input<number>;
    priority?: pulumi.Input<number>;
    expect?: pulumi.Input<pulumi.Input<string | ExpectationArgs>[]>;
    pinName?: pulumi.Input<string>;
}

export interface TrafficMirrorFilterArgs {
    protocol?: pulumi.Input<"tcp" | "udp" | "sctp" | "icmp" | "icmpv6" | number>;
    source?: pulumi.Input<string>;
    destination?: pulumi.Input<string>;
    sourcePort?: pulumi.Input<number | string>;
    destinationPort?: pulumi.Input<number | string>;
}

export interface TrafficMirrorFilter {
  protocol?: "tcp" | "udp" | "sctp" | "icmp" | "icmpv6" | number;
  source?: string;
  destination?: string;
  sourcePort?: number | string;
  destinationPort?: number | string;
}

export interface VxlanTunnelArgs {
  type: pulumi.Input<"vxlan">;
    remote: pulumi.Input<string>;
    vni: pulumi.Input<number>;
    port?: pulumi.Input<number>;
    local?: pulumi.Input<string>;
    ttl?: pulumi.Input<number>;
}

export interface GretapTunnelArgs {
  type: pulumi.Input<"gretap">;
    remote: pulumi.Input<string>;
    key?: pulumi.Input<number>;
    local?: pulumi.Input<string>;
    ttl?: pulumi.Input<number>;
}

export interface TrafficMirrorTargetArgs {
    interface?: pulumi.Input<string>;
    tunnel?: pulumi.Input<VxlanTunnelArgs | GretapTunnelArgs>;
}

export interface TrafficMirrorArgs {
    host: pulumi.Input<HostArgs>;
    interface: pulumi.Input<string>;
    direction?: pulumi.Input<"ingress" | "egress" | "both" | "none">;
    filters?: pulumi.Input<pulumi.Input<TrafficMirrorFilterArgs>[]>;
    sampleRate?: pulumi.Input<number>;
    target: pulumi.Input<TrafficMirrorTargetArgs>;
    priority?: pulumi.Input<number>;
    lockoutGuard?: pulumi.Input<boolean>;
    lockoutRevertSeconds?: pulumi.Input<number>;
    pinName?: pulumi.Input<string>;
}

export interface MaglevVipArgs {
    address: pulumi.Input<string>;
    port: pulumi.Input<number>;
    protocol: pulumi.Input<"tcp" | "udp">;
}

export interface MaglevBackendArgs {
    address: pulumi.Input<string>;
    port?: pulumi.Input<number>;
    weight?: pulumi.Input<number>;
    mac?: pulumi.Input<string>;
}

export interface MaglevServiceArgs {
    host: pulumi.Input<HostArgs>;
    interface: pulumi.Input<string>;
    vips: pulumi.Input<pulumi.Input<string | MaglevVipArgs>[]>;
    backends: pulumi.Input<pulumi.Input<string | MaglevBackendArgs>[]>;
    mode?: pulumi.Input<"dsr" | "nat" | "ipip">;
    tableSize?: pulumi.Input<number>;
    connectionTable?: pulumi.Input<boolean>;
    xdpMode?: pulumi.Input<"native" | "generic" | "auto">;
    chainPriority?: pulumi.Input<number>;
    lockoutGuard?: pulumi.Input<boolean>;
    lockoutRevertSeconds?: pulumi.Input<number>;
    expect?: pulumi.Input<pulumi.Input<string | ExpectationArgs>[]>;
    pinName?: pulumi.Input<string>;
}

export interface HealthGateTargetArgs {
    host: pulumi.Input<HostArgs>;
    label?: pulumi.Input<string>;
    kind: pulumi.Input<string>;
    pinName: pulumi.Input<string>;
    program?: pulumi.Input<string>;
    hook?: pulumi.Input<{ interface: pulumi.Input<string>; type: pulumi.Input<"xdp" | "tc-ingress" | "tc-egress"> } | undefined>;
    programId?: pulumi.Input<number>;
    probe?: pulumi.Input<pulumi.Input<string>[]>;
    expect?: pulumi.Input<pulumi.Input<string | ExpectationArgs>[]>;
}

export interface CounterCheckArgs {
    name: string;
    minIncrease?: number;
    windowSeconds: number;
}

export interface HealthGateArgs {
    fleet?: string;
    wave?: number;
    canary?: boolean;
    targets: HealthGateTargetArgs[];
    digest: pulumi.Input<string>;
    counter?: pulumi.Input<CounterCheckArgs>;
    probeTimeoutSeconds?: pulumi.Input<number>;
    probeAttempts?: pulumi.Input<number>;
    probeIntervalSeconds?: pulumi.Input<number>;
    notReached?: pulumi.Input<pulumi.Input<string>[]>;
}
