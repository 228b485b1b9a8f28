/**
 * DenyList: a fleet's deny entries, held once (issue 10). It touches no host: its
 * state holds the entries (as one sorted text, one entry per line, so a preview shows
 * `+`/`-` per entry once), and the digest and count that each XdpFirewall given the
 * list carries instead of the entries. `check` registers the old and the new version
 * for the firewalls of this deployment (sharedContent.ts).
 */
import type * as pulumi from "@pulumi/pulumi";
import { exitWhenCliGone } from "../cliWatch";
import { contentDigest, parseContentText } from "../sharedContent";
import { checkDenyList, type DenyListInputs, type DenyListOutputs } from "./schema";

// The entries are held once, in the inputs; the outputs carry only what identifies them.
// Each resource step of an `up` checkpoints the whole state (the file backend marshals
// it to JSON and hashes it with MD5): with 100 firewalls and a 100k list, a second copy
// of the list in the outputs cost about a quarter of the CLI's CPU for a one-entry
// `up` (bench/deny-list-engine.ts --consumers 100). Refresh needs no copy either: a read that
// returns no inputs leaves the resource's inputs as they are (the engine's RefreshStep).
function outputsOf(inputs: DenyListInputs): DenyListOutputs {
  const keys = parseContentText(inputs.entries);
  return { digest: contentDigest(keys), count: keys.length };
}

exitWhenCliGone();

export const provider = {
  check: async (olds: unknown, news: Record<string, unknown>): Promise<pulumi.dynamic.CheckResult> => checkDenyList(olds, news),
  // The engine hands diff the old outputs: the digest says whether the content changed.
  diff: async (_id: string, olds: DenyListOutputs, news: DenyListInputs): Promise<pulumi.dynamic.DiffResult> => ({
    changes: olds.digest !== outputsOf(news).digest,
    replaces: [],
    deleteBeforeReplace: false,
  }),
  create: async (inputs: DenyListInputs): Promise<pulumi.dynamic.CreateResult> => ({ id: `deny-list/${outputsOf(inputs).digest.slice(0, 16)}`, outs: outputsOf(inputs) }),
  update: async (_id: string, _olds: DenyListOutputs, news: DenyListInputs): Promise<pulumi.dynamic.UpdateResult> => ({ outs: outputsOf(news) }),
  // Nothing on a host to read: the list is its inputs, which a read without inputs leaves
  // as they are. Outputs of an earlier release also held the entries; those are dropped.
  read: async (id: string, props: DenyListOutputs & Partial<DenyListInputs>): Promise<pulumi.dynamic.ReadResult> => ({ id, props: { digest: props.digest, count: props.count } }),
  delete: async (): Promise<void> => {},
};
