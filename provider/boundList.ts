/**
 * A host resource bound to a list held once per fleet (issue 10): the part that does
 * not depend on what the list holds. A resource binds a list as a ref (name, digest,
 * count; sharedList.ts); TcPolicy's hooks bind a TcRuleSet this way, a MaglevService a
 * MaglevBackendSet, a TrafficMirror a MirrorFilterSet, an XdpFirewall a DenyList (which
 * resolves its version here too, and keeps its own refusal, naming the version its host
 * records). Each kind says how its host holds the content and what the host
 * records as applied; how a ref becomes content, and how refresh reports a bound list,
 * is the same for every kind.
 */
import { HostPreconditionError } from "./remote/preflight";
import { contentDigest, registeredContent } from "./sharedContent";
import { contentDrift, type SharedListDrift, type SharedListRef } from "./sharedList";

/**
 * The keys of the version `ref` names: the one this deployment's list registered by
 * digest (the list's check runs before any resource bound to it), else the host's own
 * content when it is that very version (`up --target` without the list). `onHost` is
 * asked only when the version is not registered. Undefined when neither has it: the
 * caller refuses, saying which list to target.
 */
export function boundContent(ref: SharedListRef, onHost: () => readonly string[] | undefined): readonly string[] | undefined {
  const registered = registeredContent(ref.digest);
  if (registered) return registered;
  const held = onHost();
  return held && contentDigest(held) === ref.digest ? held : undefined;
}

/**
 * A bound list as `refresh` reports it: the ref of the version the host recorded as
 * applied (the host's own content when it records nothing), unchanged when that is
 * `ref`'s version, and the difference between the host's content and that record
 * (stray and missing keys, never the whole list).
 */
export function boundRefAsRead(ref: SharedListRef, onHost: readonly string[], recorded: readonly string[] | undefined): { ref: SharedListRef; drift?: SharedListDrift } {
  const baseline = recorded ?? onHost;
  const digest = contentDigest(baseline);
  const drift = contentDrift(baseline, onHost);
  return { ref: digest === ref.digest ? ref : { ...ref, digest, count: baseline.length }, ...(drift ? { drift } : {}) };
}

/** What unknownVersionError names: whose content, of which list, and where it would go. */
export interface UnknownVersion {
  /** Whose content it is, e.g. "policy edge", "mirror tap". */
  subject: string;
  /** The list kind, e.g. "TcRuleSet". */
  listKind: string;
  ref: SharedListRef;
  /** What the list's keys are, e.g. "rules", "filters". */
  items: string;
  /** Where on the host it applies, e.g. " on ingress"; "" when the resource has one place. */
  where: string;
  /** What holds other content, e.g. "the hook". */
  holder: string;
}

/** The refusal when boundContent found the version nowhere, before the host is touched. */
export function unknownVersionError(label: string, v: UnknownVersion): HostPreconditionError {
  return new HostPreconditionError(
    `${label}: ${v.subject} must apply version ${v.ref.digest.slice(0, 12)} of ${v.listKind} '${v.ref.name}' (${v.ref.count} ${v.items})${v.where}, which is not part of this deployment, and ${v.holder} holds other ${v.items}. ` +
      `With \`pulumi up --target\`, target the ${v.listKind} resource '${v.ref.name}' too. Nothing was changed.`,
  );
}
