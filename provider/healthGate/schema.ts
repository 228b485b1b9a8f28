/**
 * Inputs of HealthGate: the hosts of one rollout wave and what "healthy" means
 * for them. A gate holds nothing on any host; it is a check that runs on create
 * and on every update, and an update happens whenever `digest` (the wave's
 * resource outputs) or any other input changes.
 */
import { z } from "zod";
import { credentialsSchema, hostSchema } from "../remote/hostSchema";
import { interfaceName, pinName } from "../validation";
import { KNOWN_COUNTERS } from "./counters";
import type { ExpectKind } from "../expect/grammar";
import type { ExpectationResult } from "../expect/hostRun";
import { expectationSet } from "../expect/schema";

/** Where the resource's program must be attached. */
export const hookSchema = z.strictObject({
  /** Interface the program must be attached to. */
  interface: interfaceName,
  /** "xdp", or a TC hook ("tc-ingress", "tc-egress"; clsact or tcx). */
  type: z.enum(["xdp", "tc-ingress", "tc-egress"]),
});

/**
 * A command run on the host (as root, through sudo for other users) whose exit
 * status 0 means healthy. Always an argv array: each word is quoted for the
 * remote shell, so a probe can never be a shell snippet by accident.
 */
export const probeArgv = z
  .array(z.string().refine((word) => !word.includes("\0"), "must not contain a NUL byte"), {
    error: (issue) =>
      issue.code === "invalid_type" ? 'must be an argv array such as ["curl", "-fsS", "http://127.0.0.1/healthz"], never a shell string' : undefined,
  })
  .min(1, 'must name a command: an argv array such as ["curl", "-fsS", "http://127.0.0.1/healthz"]')
  .refine((argv) => argv[0] !== "", { message: "the command (first word) must not be empty", path: [0] });

export const gateTargetSchema = z.strictObject({
  /** How messages and outputs name the host (the fleet's host name). Default: user@address. */
  label: z.string().min(1).max(128).optional(),
  host: hostSchema,
  /** Resource kind as in pin paths: /sys/fs/bpf/bpfleet/<kind>/<name>/. */
  kind: z.string().regex(/^[a-z][a-z0-9-]{0,63}$/, "must be a bpfleet kind such as \"xdp-firewall\""),
  /** The resource's pin directory name under /sys/fs/bpf/bpfleet/<kind>/. */
  name: pinName,
  /**
   * The program pin inside the pin directory: a pin name, or a directory and a pin name
   * (a TcPolicy keeps its programs under `progs/`: "progs/tc_policy_ingress"). Default "prog".
   */
  program: z
    .string()
    .max(129, "must be at most 129 characters")
    .regex(/^[A-Za-z0-9][A-Za-z0-9_-]*(\/[A-Za-z0-9][A-Za-z0-9_-]*)?$/, "must be a pin name, or a directory and a pin name (\"progs/tc_policy_ingress\"), each starting with a letter or digit and containing only letters, digits, '_' and '-'")
    .default("prog"),
  /** The hook the program must be attached to. Omit for a resource that is loaded but deliberately not attached. */
  hook: hookSchema.optional(),
  /** Probe command for this host; none by default. */
  probe: probeArgv.optional(),
  /**
   * Packet expectations the gate proves on this host (the `expect` grammar of the
   * target's kind, e.g. "tcp 10.0.0.5:33000 > 10.0.0.7:80 syn: pass"), through a probe
   * copy of what is attached, as the resource's own create/update does; any miss fails
   * the gate, and with it the rollout. Backend expectations are the balancer's own.
   * None by default.
   */
  expect: z.union([z.array(z.unknown()), z.record(z.string(), z.string())]).optional(),
}).superRefine((target, ctx) => {
  // Canonicalised by the target's kind's grammar; a kind without expectations takes none.
  if (target.expect === undefined) return;
  const kind = GATE_EXPECT_KINDS[target.kind];
  if (!kind) {
    ctx.addIssue({ code: "custom", path: ["expect"], message: `a ${target.kind} target has no packet expectations (xdp-firewall, tc-policy and maglev do)` });
    return;
  }
  const parsed = expectationSet(kind).safeParse(target.expect);
  if (!parsed.success) for (const issue of parsed.error.issues) ctx.addIssue({ code: "custom", path: ["expect", ...issue.path] as (string | number)[], message: issue.message });
  else target.expect = parsed.data;
});

/** The expectation grammar of each kind a gate target can be (by pin directory). */
export const GATE_EXPECT_KINDS: Readonly<Record<string, ExpectKind>> = { "xdp-firewall": "xdpFirewall", "tc-policy": "tcPolicy", maglev: "maglevService" };

export const counterCheckSchema = z.strictObject({
  /** Counter that must grow, as named in the resource's `counters` output, e.g. "passPackets". */
  name: z.enum(KNOWN_COUNTERS as [string, ...string[]], { error: `must be one of ${KNOWN_COUNTERS.join(", ")}` }),
  /** How much it must grow within the window. Default 1. */
  minIncrease: z.number().int("must be a whole number").min(1, "must be at least 1").default(1),
  /** Seconds between the two readings (the probe runs in between). More than 0, at most 600. */
  windowSeconds: z.number().positive("must be more than 0 seconds").max(600, "must be at most 600 seconds"),
});

export const healthGateSchema = z.object({
  /** Name of the fleet, for the ID and messages. */
  fleet: z.string().min(1).max(128),
  /** Wave number, 0 first. Changing it replaces the gate (which re-runs it). */
  wave: z.number().int().min(0),
  /** Whether this is the canary wave (messages say so). Default false. */
  canary: z.boolean().default(false),
  /** The wave's hosts and resources, in fleet order. At least one. */
  targets: z.array(gateTargetSchema).min(1, "a wave has at least one host"),
  /**
   * The kernel program id each target's resource reported, by position (null: not
   * checked); the pinned program must be that one, which proves the wave's change
   * is what runs. Kept out of `targets` because it is unknown during a preview of
   * a changing wave, and an unknown inside `targets` would leave it unchecked.
   */
  programIds: z.array(z.number().int().positive().nullable()).default([]),
  /** SSH credentials of the targets, by position (a secret). A missing entry means ssh-agent. */
  credentials: z.array(credentialsSchema).default([]),
  /** sha256 of the wave's resource outputs: a new value means the wave changed and the gate runs again. */
  digest: z.string().regex(/^[0-9a-f]{64}$/, "must be a sha256 in hex"),
  /** Optional: a counter that must grow on every host of the wave within a window. */
  counter: counterCheckSchema.optional(),
  /** Seconds one probe run may take. Default 30, at most 3600. */
  probeTimeoutSeconds: z.number().positive("must be more than 0 seconds").max(3600, "must be at most 3600 seconds").default(30),
  /** Probe runs before a host counts as unhealthy. Default 3, 1 to 20. */
  probeAttempts: z.number().int("must be a whole number").min(1, "must be at least 1").max(20, "must be at most 20").default(3),
  /** Seconds between probe runs. Default 2, 0 to 600. */
  probeIntervalSeconds: z.number().min(0, "must be 0 seconds or more").max(600, "must be at most 600 seconds").default(2),
  /** Names of the hosts of later waves, for the message a failure prints. */
  notReached: z.array(z.string()).default([]),
});

export type HealthGateInputs = z.infer<typeof healthGateSchema>;
export type GateTarget = z.infer<typeof gateTargetSchema>;

/** What the gate saw on one host when it passed. */
export interface TargetReport {
  host: string;
  programId: number;
  /** The counter's two readings, when a counter check was asked for. */
  counter?: { name: string; before: number; after: number };
  /** Probe runs it took to pass, when there is a probe. */
  probeAttempts?: number;
  /** The target's expectations and what each got. */
  expectResults?: Record<string, ExpectationResult>;
}

export interface HealthGateOutputs extends HealthGateInputs {
  /** When the gate last passed (ISO 8601). */
  checkedAt: string;
  /** Per host, in target order. */
  reports: TargetReport[];
}
