/**
 * A TrafficMirror bound to a MirrorFilterSet (issue 10): its inputs and state carry the
 * set's name, digest and count, not its filters. The filters come from the version
 * this deployment's sets registered by digest or, when the set is not part of the
 * deployment (`up --target`), from what the host holds when it is that very version:
 * the mirror's live set, else the copy the host records as applied (boundList.ts).
 * The host records the filters it applied (appliedSets.ts, one filter's text a line),
 * which `refresh` judges drift against.
 */
import { boundContent, boundRefAsRead, unknownVersionError } from "../boundList";
import { filtersOfKeys, type MirrorFilter, type TrafficMirrorInputs, type TrafficMirrorOutputs } from "./schema";

/**
 * The inputs with a bound set's filters filled in, or the inputs as they are without a
 * set. `liveSet` is the mirror's live set on the host (undefined for a fresh mirror);
 * `recorded` reads the host's applied copy, asked only when neither the deployment nor
 * the live set has the version. Refused before the host changes when none has it.
 */
export async function resolveFilterSet(
  label: string,
  inputs: TrafficMirrorInputs,
  liveSet: Record<string, MirrorFilter> | undefined,
  recorded: () => Promise<readonly string[] | undefined>,
): Promise<TrafficMirrorInputs> {
  const ref = inputs.filterSet;
  if (!ref) return inputs;
  let keys = boundContent(ref, () => liveSet && Object.keys(liveSet));
  if (!keys && liveSet) {
    const copy = await recorded();
    keys = boundContent(ref, () => copy);
  }
  if (!keys) throw unknownVersionError(label, { subject: `mirror ${inputs.name}`, listKind: "MirrorFilterSet", ref, items: "filters", where: "", holder: "the host" });
  return { ...inputs, filters: filtersOfKeys(keys) };
}

/**
 * A bound mirror's outputs: no filters of its own (the set holds them once), the set's
 * ref as `filterSet` and, from a read, the drift between the live set and the version
 * the host recorded as applied (`recorded`; the live set itself when it records none).
 */
export function boundOutputs(outputs: TrafficMirrorOutputs, liveSet: Record<string, MirrorFilter>, recorded: readonly string[] | undefined): TrafficMirrorOutputs {
  const { filterDrift: _, ...rest } = outputs;
  if (!outputs.filterSet) return rest;
  const read = boundRefAsRead(outputs.filterSet, Object.keys(liveSet), recorded);
  return { ...rest, filters: {}, filterSet: read.ref, ...(read.drift ? { filterDrift: read.drift } : {}) };
}
