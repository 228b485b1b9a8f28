/**
 * What a host records as the content it applied (issue 10): for a resource whose
 * large content is held once per fleet (a DenyList), the host keeps a copy of the
 * set it last applied, sorted, one key per line, at
 * /var/lib/bpfleet/applied/<kind>/<name>. Its sha256 is the set's digest
 * (sharedContent.contentDigest), so the host can say which version it holds.
 *
 * It is the baseline an update plans from (the old version need not be in the
 * deployment: a host that missed an update, a failed wave, a `--target` run) and
 * the one `refresh` judges drift against: the maps are compared with it, and only
 * the stray and missing entries are reported. The copy is written after the maps
 * were written, so it never claims what the maps do not hold; when it is missing
 * (a firewall from before this layout, a half-finished run) the maps themselves
 * are dumped instead.
 */
import { contentText as appliedText, parseContentText as parseAppliedText } from "../sharedContent";
import { STATE_DIR } from "./hostDirs";
import { runShellScript } from "./shellScript";
import { commandStep, scriptStep, type ShellStep } from "./shellSteps";
import type { ExecResult, SshSession } from "./ssh";

export const APPLIED_DIR = `${STATE_DIR}/applied`;

export function appliedPath(kind: string, name: string): string {
  return `${APPLIED_DIR}/${kind}/${name}`;
}

/** The file's text for a set: sorted keys, one per line (empty set: empty file), as a list resource holds it in state. */
export { appliedText, parseAppliedText };

/** What the host records as applied, or undefined when it records nothing. */
export async function readApplied(session: SshSession, kind: string, name: string): Promise<string[] | undefined> {
  return parseAppliedRead(await runShellScript(session, "applied-read", { path: appliedPath(kind, name) }));
}

export async function removeApplied(session: SshSession, kind: string, name: string): Promise<void> {
  await session.run(["rm", "-f", "--", appliedPath(kind, name)]);
}

// As steps of a larger exec (shellSteps.ts), for a kind that saves round trips.

export function readAppliedStep(kind: string, name: string): ShellStep {
  return scriptStep("applied-read", { path: appliedPath(kind, name) });
}

/** readApplied's answer, from readAppliedStep's result. */
export function parseAppliedRead(result: ExecResult): string[] | undefined {
  const [marker, ...rest] = result.stdout.split("\n");
  return marker === "present" ? parseAppliedText(rest.join("\n")) : undefined;
}

/** Records `keys` as what the resource has applied on the host (sh/applied-write.sh: root-only directories, written whole or not at all). */
export function writeAppliedStep(kind: string, name: string, keys: Iterable<string>): ShellStep {
  return scriptStep("applied-write", { state: STATE_DIR, dir: APPLIED_DIR, kind, name }, { stdin: appliedText(keys) });
}

export function removeAppliedStep(kind: string, name: string): ShellStep {
  return commandStep(["rm", "-f", "--", appliedPath(kind, name)]);
}
