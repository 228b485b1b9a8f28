import * as pulumi from "@pulumi/pulumi";
import { KindResource } from "./kindResource";
import type { z } from "zod";
import type { ruleObject, tcPolicySchema } from "../provider/tcPolicy/schema";
import { splitHost, type HostInput } from "./host";
import type { DeepInput, Override, SdkInputs } from "./inputs";
import type { ExpectationObject } from "../provider/expect/grammar";
import type { ExpectationResult } from "./expect";
import type { SharedListRef } from "./sharedList";
import type { TcRuleSet } from "./tcRuleSet";

type Schema = z.input<typeof tcPolicySchema>;

/** A rule as an object; the same as the text "<action> <protocol> [port] [from <cidr>] [to <cidr>]". */
export type TcPolicyRuleArgs = DeepInput<z.input<typeof ruleObject>>;

/** One hook's policy with its rules as a list (the schema also accepts the keyed form kept in state). */
type Direction = Override<Omit<NonNullable<Schema["ingress"]>, "ruleSet" | "drift">, { rules: (string | z.input<typeof ruleObject>)[] }>;

/**
 * The policy of one hook. `ruleSet` applies a TcRuleSet's rules instead of `rules`
 * (held once in the stack's state however many policies apply it); give one or the other.
 */
export type TcPolicyDirectionArgs = DeepInput<Direction> & {
  /**
   * A TcRuleSet whose rules this hook applies instead of `rules`: held once in the
   * stack's state however many policies bind it; this policy's state carries its name,
   * digest and count. Give `rules` or `ruleSet`, not both.
   */
  ruleSet?: TcRuleSet;
};

/** A hook's policy as the provider takes it: a TcRuleSet becomes its ref (name, digest, count). */
function directionInput(given: pulumi.Input<TcPolicyDirectionArgs> | undefined): pulumi.Input<unknown> {
  if (given === undefined) return {};
  if (pulumi.Output.isInstance(given) || given instanceof Promise || !(given as TcPolicyDirectionArgs).ruleSet) return given;
  const { ruleSet, ...rest } = given as TcPolicyDirectionArgs;
  return { ...rest, ruleSet: ruleSet!.ref };
}

/** A hook's policy as applied: a hook bound to a TcRuleSet has no `rules` of its own, its set's ref and, after a refresh that found any, its drift. */
export interface TcPolicyDirectionState {
  default: "allow" | "deny";
  rules: Record<string, "allow" | "deny">;
  ruleSet?: SharedListRef;
  drift?: Record<string, "stray" | "missing">;
}

/** Idle timeouts of tracked flows, in seconds. */
export type TcPolicyTimeoutsArgs = DeepInput<NonNullable<Schema["timeouts"]>>;

/**
 * Inputs of TcPolicy: the schema's (provider/tcPolicy/schema.ts, where each is
 * documented), with `host` carrying its credentials and rules given as lists.
 */
export type TcPolicyArgs = SdkInputs<
  Omit<Schema, "credentials" | "name" | "ingress" | "egress">,
  { host: HostInput; expect: (string | ExpectationObject)[] }
> & {
  /** Policy for packets the interface receives. Default: allow, no rules. */
  ingress?: pulumi.Input<TcPolicyDirectionArgs>;
  /** Policy for packets the interface sends. Default: allow, no rules. */
  egress?: pulumi.Input<TcPolicyDirectionArgs>;
  /** Pin directory name under /sys/fs/bpf/bpfleet/tc-policy/ (letters, digits, `_`, `-`). Default: the resource name. */
  pinName?: pulumi.Input<string>;
};

export interface TcPolicyCounters {
  ingressAllowedPackets: number;
  ingressAllowedBytes: number;
  ingressDeniedPackets: number;
  ingressDeniedBytes: number;
  egressAllowedPackets: number;
  egressAllowedBytes: number;
  egressDeniedPackets: number;
  egressDeniedBytes: number;
  flowsCreated: number;
  /** Flows removed after their idle timeout. */
  flowsExpired: number;
  /** Flows removed by a TCP RST. */
  flowsReset: number;
}

/**
 * Stateless rules and stateful flow tracking on the TC ingress and egress hooks
 * of one interface (clsact), IPv4 and IPv6. Other TC filters on the interface are
 * left alone: the policy's filters have their own priority (`priority`, default 2)
 * and handle, and a packet it passes goes on to the next filter.
 */
export class TcPolicy extends KindResource {
  declare public readonly interface: pulumi.Output<string>;
  /** The pin directory name under /sys/fs/bpf/bpfleet/tc-policy/. */
  declare public readonly name: pulumi.Output<string>;
  /** The policies as loaded on the host: rules keyed by canonical text (or a TcRuleSet's ref, and drift). */
  declare public readonly ingress: pulumi.Output<TcPolicyDirectionState>;
  declare public readonly egress: pulumi.Output<TcPolicyDirectionState>;
  declare public readonly stateful: pulumi.Output<boolean>;
  declare public readonly timeouts: pulumi.Output<{ tcpEstablished: number; tcpTransitory: number; other: number }>;
  /** Whether both hooks run the policy's programs. */
  declare public readonly attached: pulumi.Output<boolean>;
  /** Kernel program ids and tags, by hook. */
  declare public readonly programs: pulumi.Output<Record<"ingress" | "egress", { id: number; tag: string }>>;
  /** sha256 of the BPF object that is loaded. */
  declare public readonly objectSha256: pulumi.Output<string>;
  /** Summed over CPUs, as of the last create/update/refresh. */
  declare public readonly counters: pulumi.Output<TcPolicyCounters>;
  /** Packets each rule decided, by hook and rule text (for a hook bound to a TcRuleSet, only the rules that decided any). */
  declare public readonly ruleHits: pulumi.Output<Record<"ingress" | "egress", Record<string, number>>>;
  /** Entries in the flow table. */
  declare public readonly liveFlows: pulumi.Output<number>;
  /** Priority and handle of the policy's TC filters (what `tc filter show` lists). */
  declare public readonly tcPriority: pulumi.Output<number>;
  declare public readonly tcHandle: pulumi.Output<number>;
  /** Whether the policy added the interface's clsact qdisc (removed again on delete when no filter is left). */
  declare public readonly qdiscCreated: pulumi.Output<boolean>;

  /** The canonical expectation texts (keys of `expect`, "<text>": "<outcome>"). */
  declare public readonly expect: pulumi.Output<Record<string, string>>;
  /** Each expectation's last result on the host, by canonical text: what it wanted, what it got, whether it was met. */
  declare public readonly expectResults: pulumi.Output<Record<string, ExpectationResult>>;

  constructor(name: string, args: TcPolicyArgs, opts?: pulumi.CustomResourceOptions) {
    const { host, credentials } = splitHost(args.host);
    super(
      "tcPolicy",
      "TcPolicy",
      name,
      {
        host,
        credentials,
        interface: args.interface,
        name: args.pinName ?? name,
        ingress: directionInput(args.ingress),
        egress: directionInput(args.egress),
        stateful: args.stateful,
        timeouts: args.timeouts,
        attached: args.attached,
        allowLockout: args.allowLockout,
        lockoutGuard: args.lockoutGuard,
        lockoutRevertSeconds: args.lockoutRevertSeconds,
        priority: args.priority,
        expect: args.expect,
        programs: undefined,
        objectSha256: undefined,
        counters: undefined,
        expectResults: undefined,
        ruleHits: undefined,
        liveFlows: undefined,
        tcPriority: undefined,
        tcHandle: undefined,
        qdiscCreated: undefined,
      },
      { ...opts, additionalSecretOutputs: [...(opts?.additionalSecretOutputs ?? []), "credentials"] },
    );
  }
}
