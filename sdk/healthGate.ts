import * as pulumi from "@pulumi/pulumi";
import { KindResource } from "./kindResource";
import type { z } from "zod";
import type { counterCheckSchema, gateTargetSchema, healthGateSchema } from "../provider/healthGate/schema";
import { splitHost, type HostArgs } from "./host";
import type { DeepInput, Override, SdkInputs } from "./inputs";
import type { ExpectationObject } from "../provider/expect/grammar";

type GateInput = z.input<typeof healthGateSchema>;
type GateTargetInput = z.input<typeof gateTargetSchema>;

/**
 * One host of a wave and the bpfleet resource on it that must read back healthy: the
 * schema's target (provider/healthGate/schema.ts, where each input is documented),
 * with `host` carrying its credentials, and the resource named as the SDK names it.
 */
export type HealthGateTargetArgs = Override<SdkInputs<Omit<GateTargetInput, "name" | "host">>, {
  // An Output that resolves to undefined (a resource deliberately not attached) is a valid hook.
  hook?: pulumi.Input<DeepInput<NonNullable<GateTargetInput["hook"]>> | undefined>;
  expect?: pulumi.Input<pulumi.Input<string | DeepInput<ExpectationObject>>[]>;
}> & {
  /** The host the resource is on (the same value given to the resource). */
  host: pulumi.Input<HostArgs>;
  /** The resource's pin directory name (its `name` output). */
  pinName: pulumi.Input<string>;
  /** The program id the resource reported (its `programId` output); the pinned program must be that one. */
  programId?: pulumi.Input<number>;
};

/** A counter that must grow on every host of the wave (provider/healthGate/schema.ts). */
export type CounterCheckArgs = z.input<typeof counterCheckSchema>;

/**
 * Inputs of HealthGate: the schema's (provider/healthGate/schema.ts), with the
 * targets as above; fleet, wave and the targets are plain values, since the gate's
 * ID and per-target inputs are built from them when it is declared.
 */
export type HealthGateArgs = Override<
  SdkInputs<Omit<GateInput, "fleet" | "wave" | "targets" | "programIds" | "credentials">>,
  { canary?: boolean; counter?: pulumi.Input<CounterCheckArgs> }
> & {
  /** Fleet name for the gate's ID and messages. Default: the gate's resource name. */
  fleet?: string;
  /** Wave number, 0 first. Default 0. Changing it replaces the gate. */
  wave?: number;
  /** The wave's hosts and resources. At least one. */
  targets: HealthGateTargetArgs[];
};

/** What the gate saw on one host when it last passed. */
export interface HealthGateReport {
  host: string;
  programId: number;
  counter?: { name: string; before: number; after: number };
  probeAttempts?: number;
  /** The host's packet expectations and what each got. */
  expectResults?: Record<string, { wanted: string; got: string; met: boolean }>;
}

/**
 * A health check between rollout waves. It holds nothing on any host: create and
 * every update check that each target's resource reads back healthy (pins
 * present, the reported program attached), that the optional counter grew and
 * that the optional probe passes, and fail (failing `pulumi up`) otherwise.
 * Resources that depend on the gate are not touched when it fails.
 */
export class HealthGate extends KindResource {
  /** When the gate last passed (ISO 8601). */
  declare public readonly checkedAt: pulumi.Output<string>;
  /** Per host, what the gate saw when it last passed. */
  declare public readonly reports: pulumi.Output<HealthGateReport[]>;
  declare public readonly digest: pulumi.Output<string>;

  constructor(name: string, args: HealthGateArgs, opts?: pulumi.CustomResourceOptions) {
    const split = args.targets.map((target) => ({ target, ...splitHost(target.host) }));
    super(
      "healthGate",
      "HealthGate",
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
          expect: target.expect,
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
    );
  }
}
