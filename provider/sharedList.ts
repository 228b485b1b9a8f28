/**
 * A list resource: content many host resources share, held once in the stack's state
 * (issue 10). DenyList (deny entries) and TcRuleSet (TcPolicy rules) are both one:
 * a resource that touches no host, whose state holds its canonical keys as one text
 * (sharedContent.contentText: sorted, one key a line), and the digest and count each
 * host resource carries instead of the content. `check` registers the old and the new
 * version by digest for the host resources of the deployment (sharedContent.ts).
 *
 * One provider, parameterised by the kind's property name and its item schema, so
 * every kind with large shared content behaves the same way in state, preview and
 * refresh.
 */
import type * as pulumi from "@pulumi/pulumi";
import { z } from "zod";
import { checkInputs } from "./dynamicAdapter";
import { contentDigest, contentText, parseContentText, registerContent } from "./sharedContent";

/** The form of a list in a host resource's inputs and state: which list, which version, how many keys. */
export const sharedListRef = z.object({
  name: z.string().min(1),
  digest: z.string().regex(/^[0-9a-f]{64}$/, "must be the list's sha256 digest (64 hex digits)"),
  count: z.number().int().nonnegative(),
});
export type SharedListRef = z.infer<typeof sharedListRef>;

/**
 * Where a host resource reports how its host differs from the list it recorded as
 * applied: the stray and missing keys themselves, never the whole list.
 */
export const sharedListDrift = z.record(z.string(), z.enum(["stray", "missing"]));
export type SharedListDrift = z.infer<typeof sharedListDrift>;

/**
 * The list property: accepted as the SDK's text, as a list as written (where a bad item
 * is named by its index), or keyed by item (a record, as an earlier release kept it);
 * always becomes the canonical text. `items` validates and canonicalises the items into
 * a record keyed by canonical text (its values, e.g. a rule's action or a filter's
 * fields, are the kind's own: only the keys are held).
 */
export function sharedTextProperty(items: z.ZodType<Record<string, unknown>, unknown>) {
  return z
    .preprocess((raw) => (typeof raw === "string" ? parseContentText(raw) : raw), items)
    .transform((record) => contentText(Object.keys(record)))
    .default("");
}

/** A list's canonical form, computed in the program (the SDK sends the text and puts the ref on each host resource). */
export interface CanonicalList<V> {
  /** The canonical items keyed by their canonical text. */
  items: Record<string, V>;
  /** The keys sorted, one per line: what the list's state holds (sharedContent.contentText). */
  text: string;
  digest: string;
  count: number;
}

/** The canonical form of a list as written, by the kind's item schema; undefined when an item is invalid (the list's check then names it). */
export function canonicalList<V>(items: z.ZodType<Record<string, V>, unknown>, written: readonly unknown[]): CanonicalList<V> | undefined {
  const parsed = items.safeParse(written);
  if (!parsed.success) return undefined;
  const keys = Object.keys(parsed.data);
  return { items: parsed.data, text: contentText(keys), digest: contentDigest(keys), count: keys.length };
}

export interface SharedListKind {
  /** The state property holding the text, e.g. "entries". */
  property: string;
  /** The id's prefix, e.g. "deny-list": the id is `<prefix>/<first 16 hex digits of the digest>`. */
  idPrefix: string;
  schema: z.ZodObject<z.ZodRawShape>;
}

/** The keys a list's state holds (old inputs or outputs): its text, or the keyed record an earlier release kept. */
export function heldKeys(state: unknown, property: string): string[] | undefined {
  const held = (state as Record<string, unknown> | undefined)?.[property];
  if (typeof held === "string") return parseContentText(held);
  if (held && typeof held === "object" && !Array.isArray(held)) return Object.keys(held);
  return undefined;
}

/** The schema, then both versions of the list registered by digest: the new one to apply, the old one as what was applied before. */
export function checkSharedList(kind: SharedListKind, olds: unknown, news: Record<string, unknown>): pulumi.dynamic.CheckResult {
  const result = checkInputs(kind.schema, news);
  const text = (result.inputs as Record<string, unknown> | undefined)?.[kind.property];
  if (typeof text === "string") registerContent(parseContentText(text));
  const old = heldKeys(olds, kind.property);
  if (old) registerContent(old);
  return result;
}

export interface SharedListOutputs {
  /** sha256 of the sorted canonical keys, one per line (sharedContent.contentDigest). */
  digest: string;
  count: number;
}

type Held = Record<string, string>;

/** The dynamic provider of a list kind. It never reaches a host. */
export function sharedListProvider(kind: SharedListKind) {
  // The text is held once, in the inputs; the outputs carry only what identifies it.
  // Each resource step of an `up` checkpoints the whole state (the file backend marshals
  // it to JSON and hashes it with MD5): with 100 firewalls and a 100k list, a second copy
  // of the list in the outputs cost about a quarter of the CLI's CPU for a one-entry
  // `up` (bench/deny-list-engine.ts --consumers 100). Refresh needs no copy either: a
  // read that returns no inputs leaves the resource's inputs as they are (the engine's
  // RefreshStep keeps them).
  const outputsOf = (inputs: Held): SharedListOutputs => {
    const keys = parseContentText(inputs[kind.property]!);
    return { digest: contentDigest(keys), count: keys.length };
  };
  return {
    check: async (olds: unknown, news: Record<string, unknown>): Promise<pulumi.dynamic.CheckResult> => checkSharedList(kind, olds, news),
    // The engine hands diff the old outputs: the digest says whether the content changed.
    diff: async (_id: string, olds: SharedListOutputs, news: Held): Promise<pulumi.dynamic.DiffResult> => ({
      changes: olds.digest !== outputsOf(news).digest,
      replaces: [],
      deleteBeforeReplace: false,
    }),
    create: async (inputs: Held): Promise<pulumi.dynamic.CreateResult> => ({ id: `${kind.idPrefix}/${outputsOf(inputs).digest.slice(0, 16)}`, outs: outputsOf(inputs) }),
    update: async (_id: string, _olds: SharedListOutputs, news: Held): Promise<pulumi.dynamic.UpdateResult> => ({ outs: outputsOf(news) }),
    // Nothing on a host to read: the list is its inputs, which a read without inputs leaves
    // as they are. Outputs of an earlier release also held the text; that copy is dropped.
    read: async (id: string, props: SharedListOutputs & Partial<Held>): Promise<pulumi.dynamic.ReadResult> => ({ id, props: { digest: props.digest, count: props.count } }),
    delete: async (): Promise<void> => {},
  };
}

/**
 * How a host's content differs from the version it recorded as applied: keys it holds
 * beyond it ("stray") and keys of it that it lacks ("missing"), sorted; undefined when
 * they agree, so a resource without drift carries no drift property at all.
 */
export function contentDrift(applied: Iterable<string>, onHost: Iterable<string>): SharedListDrift | undefined {
  const want = new Set(applied);
  const have = new Set(onHost);
  const drift: SharedListDrift = {};
  for (const key of [...new Set([...want, ...have])].sort()) {
    if (want.has(key) && !have.has(key)) drift[key] = "missing";
    else if (have.has(key) && !want.has(key)) drift[key] = "stray";
  }
  return Object.keys(drift).length > 0 ? drift : undefined;
}
