/**
 * Content held once per fleet (issue 10). A list resource (e.g. DenyList) keeps a
 * large set in its own state, once (as contentText: one canonical key a line);
 * every host resource that applies it carries only its digest and counts. The
 * content reaches the host resources through this registry, which lives in the
 * dynamic-provider process: the engine runs every step of one deployment in one
 * such process, and calls the list's `check` (with its old and its new inputs)
 * before any resource that depends on the list is updated. So `check` registers both versions here by digest, and a
 * host resource's create/update finds the version it must apply (and usually the
 * one it applied before) by digest.
 *
 * What the registry cannot know (a `--target` run without the list, `refresh`,
 * `destroy`) is answered from what the host itself records as applied (see
 * provider/remote/appliedSets.ts), never from an assumption that every host saw
 * every version.
 */
import { createHash } from "node:crypto";

/**
 * A set's content as text: its canonical keys sorted, one per line (an empty set is
 * empty text). The form a list resource keeps in state and a host keeps as its
 * applied copy, byte for byte.
 */
export function contentText(keys: Iterable<string>): string {
  const sorted = [...keys].sort();
  return sorted.length ? `${sorted.join("\n")}\n` : "";
}

export function parseContentText(text: string): string[] {
  return text.split("\n").filter((line) => line !== "");
}

/**
 * A frozen array's digest, remembered: the registered versions of a list and the plans
 * between them are frozen, and they are the same arrays for every host of a deployment.
 * Hashing a 100k-entry list costs ~15 ms, and each host's update asked for it three to
 * four times (the index memo's key, the applied copy's digest, the patch's digest):
 * about 50 ms of provider CPU per host, paid host after host. A frozen array cannot
 * change after it was hashed, so the digest stays true.
 */
const frozenDigests = new WeakMap<readonly string[], string>();

/** sha256 of the sorted, canonical keys, one per line: what identifies a set's content. */
export function contentDigest(keys: Iterable<string>): string {
  if (!Array.isArray(keys) || !Object.isFrozen(keys)) return digestOf(keys);
  let digest = frozenDigests.get(keys);
  if (digest === undefined) frozenDigests.set(keys, (digest = digestOf(keys)));
  return digest;
}

function digestOf(keys: Iterable<string>): string {
  const sorted = [...keys].sort();
  return createHash("sha256").update(sorted.join("\n")).update("\n").digest("hex");
}

/**
 * One registry per process, whatever the number of copies of this module: a package
 * installed through a symlink (a `file:` dependency, as the repository's own
 * quickstart uses) is loaded once by its link path and once by its real path in the
 * same provider process, and a module-level Map would split the list's `check` from
 * the firewalls that look the list up.
 */
const REGISTRY = Symbol.for("bpfleet.sharedContent.registry");
const registry: Map<string, readonly string[]> = ((globalThis as Record<symbol, unknown>)[REGISTRY] ??= new Map<string, readonly string[]>()) as Map<string, readonly string[]>;

/** Records a set's canonical keys under its digest; returns the digest. */
export function registerContent(keys: Iterable<string>): string {
  // Frozen: every host resource of the deployment shares this array (and its digest).
  const sorted = Object.freeze([...keys].sort());
  const digest = contentDigest(sorted);
  if (!registry.has(digest)) registry.set(digest, sorted);
  return digest;
}

/** The keys registered under `digest` in this deployment, or undefined. */
export function registeredContent(digest: string): readonly string[] | undefined {
  return registry.get(digest);
}

/** For tests: forget everything registered. */
export function clearRegisteredContent(): void {
  registry.clear();
}
