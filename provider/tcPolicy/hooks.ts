/**
 * Which TC filters are a TcPolicy's (its handle, running its programs), the
 * plan of its two hooks, and the slots it cannot take.
 */
import { HostPreconditionError } from "../remote/preflight";
import type { SshSession } from "../remote/ssh";
import type { TcFilter, TcFilterSlot } from "../remote/tc";
import { TcHookPlan } from "../remote/tcHook";
import { PROGRAMS } from "./codec";
import type { PolicyHostState } from "./hostState";
import { KIND, placementOf } from "./outputs";
import type { Direction, TcPolicyInputs } from "./schema";

/** The kernel keeps 15 characters of a program's name. */
const kernelName = (direction: Direction) => PROGRAMS[direction].slice(0, 15);

export function isOurs(filter: TcFilter, host: PolicyHostState): boolean {
  return filter.programId === host.programs[filter.direction]?.id || filter.programName === kernelName(filter.direction);
}

/** The policy's hooks as the survey found them. */
export function hookPlan(host: PolicyHostState, inputs: TcPolicyInputs): TcHookPlan {
  return new TcHookPlan(KIND, placementOf(inputs), host.filters, (f) => isOurs(f, host), (d) => host.programs[d]?.id, host.hookQdisc);
}

/**
 * The kernel keeps one filter kind and protocol per priority, and would refuse
 * the policy's bpf filters (protocol all) beside another with EINVAL.
 */
export function refuseProtocolClash(session: SshSession, host: PolicyHostState, iface: string, slot: TcFilterSlot): void {
  const clash = host.filters.find((f) => f.direction === slot.direction && f.priority === slot.priority && (f.kind !== "bpf" || f.protocol !== "all"));
  if (clash) {
    throw new HostPreconditionError(
      `${session.label}: ${iface} ${slot.direction} has a ${clash.kind} filter for protocol ${clash.protocol} at priority ${slot.priority}; ` +
        `the kernel keeps one filter kind and protocol per priority, so the policy's bpf filters (protocol all) cannot join it. Choose another priority. Nothing was changed.`,
    );
  }
}

/**
 * This policy's filters at a priority other than `inputs.priority`: those of the
 * priority before a change of it (or of a run that died half way through one).
 */
export function strayFilters(host: PolicyHostState, hook: TcHookPlan): TcFilterSlot[] {
  return host.filters
    .filter((f) => f.handle === hook.slot(f.direction).handle && f.priority !== hook.placement.priority && isOurs(f, host))
    .map((f) => ({ ...hook.slot(f.direction), priority: f.priority }));
}
