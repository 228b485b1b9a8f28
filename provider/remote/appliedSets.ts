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
import { contentText as appliedText, parseContentText as parseAppliedText, registeredContent } from "../sharedContent";
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

/** Where holdAppliedStep moves the copy while the maps change (the base of patchAppliedStep). */
export function heldPath(kind: string, name: string): string {
  return `${APPLIED_DIR}/${kind}/.${name}.old`;
}

export async function removeApplied(session: SshSession, kind: string, name: string): Promise<void> {
  await session.run(["rm", "-f", "--", appliedPath(kind, name), heldPath(kind, name)]);
}

// As steps of a larger exec (shellSteps.ts), for a kind that saves round trips.

/** readApplied's answer, from sh/applied-read.sh's result. */
export function parseAppliedRead(result: ExecResult): string[] | undefined {
  const [marker, ...rest] = result.stdout.split("\n");
  return marker === "present" ? parseAppliedText(rest.join("\n")) : undefined;
}

/** Records `keys` as what the resource has applied on the host (sh/applied-write.sh: root-only directories, written whole or not at all). */
export function writeAppliedStep(kind: string, name: string, keys: Iterable<string>): ShellStep {
  return scriptStep("applied-write", { state: STATE_DIR, dir: APPLIED_DIR, kind, name }, { stdin: appliedText(keys) });
}

export function removeAppliedStep(kind: string, name: string): ShellStep {
  return commandStep(["rm", "-f", "--", appliedPath(kind, name), heldPath(kind, name)]);
}

/** Which version the host records as applied, by digest and count, without its keys (sh/applied-digest.sh). */
export interface AppliedVersion {
  digest: string;
  count: number;
}

export function readAppliedDigestStep(kind: string, name: string): ShellStep {
  return scriptStep("applied-digest", { path: appliedPath(kind, name) });
}

/** readAppliedDigestStep's answer: the version, or undefined when the host records none. */
export function parseAppliedDigest(result: ExecResult): AppliedVersion | undefined {
  const line = result.stdout.trim();
  if (line === "absent") return undefined;
  const m = /^present ([0-9a-f]{64}) (\d+)$/.exec(line);
  if (!m) throw new Error(`unexpected answer from sh/applied-digest.sh: ${JSON.stringify(line.slice(0, 200))}`);
  return { digest: m[1]!, count: Number(m[2]) };
}

/**
 * Moves the copy aside before the maps change (sh/applied-hold.sh): no record while
 * they change, and the base patchAppliedStep starts from.
 */
export function holdAppliedStep(kind: string, name: string): ShellStep {
  return scriptStep("applied-hold", { path: appliedPath(kind, name), held: heldPath(kind, name) });
}

/**
 * The stdin of sh/applied-patch.sh: the keys to remove ("-KEY") and to add ("+KEY"),
 * one a line. A key is one canonical entry: a line break in one would add or remove
 * another, so it is refused.
 */
export function appliedPatchText(add: readonly string[], remove: readonly string[]): string {
  const lines: string[] = [];
  for (const [sign, keys] of [["-", remove], ["+", add]] as const) {
    for (const key of keys) {
      if (key === "" || /[\n\r]/.test(key)) throw new Error(`bpfleet: applied copy key ${JSON.stringify(key)} is empty or holds a line break`);
      lines.push(`${sign}${key}`);
    }
  }
  return lines.length ? `${lines.join("\n")}\n` : "";
}

/**
 * Brings the held copy (holdAppliedStep) to the version `digest` by the difference
 * (`add`, `remove`) from it; the host checks the result's digest and, when it is not
 * `digest`, records nothing and the step fails with code 3 (allowed): the caller then
 * writes the copy whole (writeAppliedStep). `onPatched` tells which.
 */
export function patchAppliedStep(kind: string, name: string, digest: string, add: readonly string[], remove: readonly string[], onPatched: (patched: boolean) => void): ShellStep {
  return scriptStep(
    "applied-patch",
    { state: STATE_DIR, dir: APPLIED_DIR, kind, name, digest },
    { stdin: appliedPatchText(add, remove), allowFailure: true, onResult: (result) => onPatched(result?.code === 0) },
  );
}

/**
 * The keys of the copy the host records as applied, from its digest (`version`, read
 * with the survey): a version this deployment's lists registered is taken from there,
 * with no read. Only a version the controller does not know (a host that drifted from
 * the stack's record, missed an update, or is adopted) is read whole, and only when
 * it is needed: as the baseline of the update, or as the entries themselves.
 */
export async function appliedEntries(
  version: AppliedVersion | undefined,
  needed: { baseline: boolean; wanted: string | undefined },
  read: () => Promise<string[] | undefined>,
): Promise<{ entries: readonly string[] | undefined; read: boolean }> {
  if (!version) return { entries: undefined, read: false };
  const registered = registeredContent(version.digest);
  if (registered) return { entries: registered, read: false };
  if (!needed.baseline && version.digest !== needed.wanted) return { entries: undefined, read: false };
  const entries = await read();
  return { entries, read: true };
}
