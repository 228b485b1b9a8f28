import * as pulumi from "@pulumi/pulumi";
import { kindProvider } from "./kindProvider";
import { splitHost, type HostArgs } from "./host";

/** One host of a wave and the bpfleet resource on it that must read back healthy. */
export interface HealthGateTargetArgs {
  /** The host the resource is on (the same value given to the resource). */
  host: pulumi.Input<HostArgs>;
  /** How messages and outputs name the host, e.g. "web-3". Default: user@address. */
  label?: pulumi.Input<string>;
  /** Resource kind as in pin paths, e.g. "xdp-firewall" (/sys/fs/bpf/bpfleet/<kind>/<pinName>/). */
  kind: pulumi.Input<string>;
  /** The resource's pin directory name (its `name` output). */
  pinName: pulumi.Input<string>;
  /** The program pin inside the pin directory. Default "prog". */
  program?: pulumi.Input<string>;
  /**
   * The hook the program must be attached to: `{ interface: "eth0", type: "xdp" }`
   * ("xdp", "tc-ingress" or "tc-egress"). Omit (or resolve to undefined) for a
   * resource that is deliberately loaded but not attached.
   */
  hook?: pulumi.Input<{ interface: pulumi.Input<string>; type: pulumi.Input<"xdp" | "tc-ingress" | "tc-egress"> } | undefined>;
  /** The program id the resource reported (its `programId` output); the pinned program must be that one. */
  programId?: pulumi.Input<number>;
  /**
   * A command that must exit 0 on this host, as an argv array
   * (`["curl", "-fsS", "http://127.0.0.1/healthz"]`), never a shell string: each
   * word is quoted for the remote shell. Runs as root (through sudo for other users).
   */
  probe?: pulumi.Input<pulumi.Input<string>[]>;
}

/** A counter that must grow on every host of the wave. */
export interface CounterCheckArgs {
  /** Counter name as in the resource's `counters` output, e.g. "passPackets" (XdpFirewall). */
  name: string;
  /** Minimum growth within the window. Default 1. */
  minIncrease?: number;
  /** Seconds between the two readings; the probe runs in between. More than 0, at most 600. */
  windowSeconds: number;
}

export interface HealthGateArgs {
  /** Fleet name for the gate's ID and messages. Default: the gate's resource name. */
  fleet?: string;
  /** Wave number, 0 first. Default 0. Changing it replaces the gate. */
  wave?: number;
  /** Whether this is the canary wave; messages say so. Default false. */
  canary?: boolean;
  /** The wave's hosts and resources. At least one. */
  targets: HealthGateTargetArgs[];
  /**
   * sha256 (hex) of the wave's resource outputs. The gate runs on create and
   * whenever an input changes, so a digest that follows the resources' outputs
   * makes it run again exactly when the wave changed.
   */
  digest: pulumi.Input<string>;
  /** Optional counter check; none by default. */
  counter?: pulumi.Input<CounterCheckArgs>;
  /** Seconds one probe run may take. Default 30, at most 3600. */
  probeTimeoutSeconds?: pulumi.Input<number>;
  /** Probe runs before a host counts as unhealthy. Default 3, 1 to 20. */
  probeAttempts?: pulumi.Input<number>;
  /** Seconds between probe runs. Default 2, 0 to 600. */
  probeIntervalSeconds?: pulumi.Input<number>;
  /** Names of hosts of later waves, listed by a failure's message as untouched. Default none. */
  notReached?: pulumi.Input<pulumi.Input<string>[]>;
}

/** What the gate saw on one host when it last passed. */
export interface HealthGateReport {
  host: string;
  programId: number;
  counter?: { name: string; before: number; after: number };
  probeAttempts?: number;
}

const provider = kindProvider("healthGate");

/**
 * A health check between rollout waves. It holds nothing on any host: create and
 * every update check that each target's resource reads back healthy (pins
 * present, the reported program attached), that the optional counter grew and
 * that the optional probe passes, and fail (failing `pulumi up`) otherwise.
 * Resources that depend on the gate are not touched when it fails.
 */
export class HealthGate extends pulumi.dynamic.Resource {
  /** When the gate last passed (ISO 8601). */
  declare public readonly checkedAt: pulumi.Output<string>;
  /** Per host, what the gate saw when it last passed. */
  declare public readonly reports: pulumi.Output<HealthGateReport[]>;
  declare public readonly digest: pulumi.Output<string>;

  constructor(name: string, args: HealthGateArgs, opts?: pulumi.CustomResourceOptions) {
    const split = args.targets.map((target) => ({ target, ...splitHost(target.host) }));
    super(
      provider,
      name,
      {
        fleet: args.fleet ?? name,
        wave: args.wave ?? 0,
        canary: args.canary,
        targets: split.map(({ target, host }) => ({
          label: target.label,
          host,
          kind: target.kind,
          name: target.pinName,
          program: target.program,
          hook: target.hook,
          probe: target.probe,
        })),
        programIds: args.targets.map((target) => (target.programId === undefined ? null : target.programId)),
        credentials: pulumi.secret(pulumi.all(split.map((s) => s.credentials))),
        digest: args.digest,
        counter: args.counter,
        probeTimeoutSeconds: args.probeTimeoutSeconds,
        probeAttempts: args.probeAttempts,
        probeIntervalSeconds: args.probeIntervalSeconds,
        notReached: args.notReached,
        checkedAt: undefined,
        reports: undefined,
      },
      { ...opts, additionalSecretOutputs: [...(opts?.additionalSecretOutputs ?? []), "credentials"] },
      "bpfleet",
      "HealthGate",
    );
  }
}
