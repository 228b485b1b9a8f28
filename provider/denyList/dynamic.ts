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

// The entries are in the outputs too (the list's state holds them twice, still once per
// fleet): refresh has only the outputs to answer with, and must hand the engine the
// inputs back whole (with no inputs in a read result, a refresh left the list's inputs
// at an earlier version in the lab, and the next preview showed that diff again).
function outputsOf(inputs: DenyListInputs): DenyListOutputs & DenyListInputs {
  const keys = parseContentText(inputs.entries);
  return { entries: inputs.entries, digest: contentDigest(keys), count: keys.length };
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
  // Nothing on a host to read: the state is the list, and its inputs are given back whole.
  // (An earlier release's state holds the entries keyed by entry; check accepts that too.)
  read: async (id: string, props: DenyListOutputs & Partial<DenyListInputs>): Promise<pulumi.dynamic.ReadResult> =>
    props.entries ? { id, props, inputs: { entries: props.entries } } : { id, props },
  delete: async (): Promise<void> => {},
};
