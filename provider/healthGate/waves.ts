/**
 * Rollout waves of a fleet: a pure function of the host list and the wave
 * options, so that the same program always yields the same waves and a table
 * of cases can prove it. Hosts keep the order they were given in; the canary
 * wave is the first `canary` hosts.
 */
import { z } from "zod";

/** Default share of the fleet per wave after the canary: one quarter, as in Kubernetes' rolling updates. */
export const DEFAULT_WAVE_PERCENT = 25;

export class WavePlanError extends Error {}

/**
 * How a fleet of `hostCount` hosts is cut into waves. The constraints that
 * depend on the fleet (a wave cannot be larger than the fleet) are part of the
 * schema, so every message names the option that broke them.
 */
export function waveOptionsSchema(hostCount: number) {
  return z
    .strictObject({
      /** Hosts in the first (canary) wave. 0 means no canary wave. Default 1. At most the number of hosts. */
      canary: z
        .number()
        .int("must be a whole number")
        .min(0, "must be 0 (no canary wave) or more")
        .max(hostCount, `must be at most ${hostCount} (the number of hosts)`)
        .default(Math.min(1, hostCount)),
      /** Hosts per wave after the canary. 1 to the number of hosts. Exclusive with `percent`. */
      size: z
        .number()
        .int("must be a whole number")
        .min(1, "must be at least 1")
        .max(hostCount, `must be at most ${hostCount} (the number of hosts)`)
        .optional(),
      /**
       * Hosts per wave after the canary, as a percentage of the whole fleet (not of
       * what is left), rounded up, so every wave has at least one host. 1 to 100.
       * Exclusive with `size`. Default 25 when neither is given.
       */
      percent: z.number().min(1, "must be from 1 to 100").max(100, "must be from 1 to 100").optional(),
    })
    .refine((o) => o.size === undefined || o.percent === undefined, { message: "give either size or percent, not both", path: ["percent"] });
}

export type WaveOptions = z.input<ReturnType<typeof waveOptionsSchema>>;

/** The number of hosts per wave after the canary that `options` asks for. */
export function waveSizeOf(hostCount: number, options: { size?: number; percent?: number }): number {
  if (options.size !== undefined) return options.size;
  return Math.max(1, Math.ceil(((options.percent ?? DEFAULT_WAVE_PERCENT) * hostCount) / 100));
}

/**
 * Cuts `hosts` into waves: the canary wave (when canary > 0), then waves of the
 * configured size; the last wave takes what is left. Throws WavePlanError with
 * the option and the rule it broke.
 */
export function planWaves<T>(hosts: readonly T[], options: WaveOptions = {}): T[][] {
  if (hosts.length === 0) throw new WavePlanError("hosts: a fleet needs at least one host");
  const parsed = waveOptionsSchema(hosts.length).safeParse(options);
  if (!parsed.success) {
    throw new WavePlanError(parsed.error.issues.map((issue) => `${issue.path.join(".") || "waves"}: ${issue.message}`).join("; "));
  }
  const { canary } = parsed.data;
  const size = waveSizeOf(hosts.length, parsed.data);
  const waves: T[][] = canary > 0 ? [hosts.slice(0, canary)] : [];
  for (let start = canary; start < hosts.length; start += size) waves.push(hosts.slice(start, start + size));
  return waves;
}
