/**
 * The remote shell bpfleet runs on a host lives in real files, sh/<name>.sh, shipped
 * in the package (the build copies them beside this module into dist/, so the
 * compiled provider finds them as the source does under tsx and vitest). A script
 * runs as `sh -c TEXT` through SshSession.runScript: values reach it only as
 * positional arguments, each quoted by shellQuote, or on stdin; nothing is pasted
 * into its text.
 *
 * TEXT is the script with the functions of the shared prelude (sh/prelude.sh) that
 * it calls put in front, and its full-line comments left out: the command line
 * stays as short as the script, and an error's step summary (describeStep) names
 * the script's own tools, not the prelude's. So a line of a multi-line quoted
 * string must not start with '#'.
 */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import type { ExecOptions, ExecResult, SshSession } from "./ssh";

/** Where the shipped scripts are: provider/remote/sh in the source, dist/provider/remote/sh in the package. */
export const SCRIPT_DIR = join(__dirname, "sh");

const SCRIPT_NAME = /^[a-z][A-Za-z0-9-]*$/;
const texts = new Map<string, string>();

function readShipped(name: string): string {
  if (!SCRIPT_NAME.test(name)) throw new Error(`bpfleet: bad shell script name ${JSON.stringify(name)}`);
  const path = join(SCRIPT_DIR, `${name}.sh`);
  try {
    return readFileSync(path, "utf8");
  } catch (err) {
    throw new Error(`bpfleet: the shell script ${path} is missing (${(err as Error).message}); the package was built without its provider/remote/sh files (npm run build copies them)`);
  }
}

let preludeDefinitions: Map<string, string> | undefined;

/** The prelude's functions by name, each its definition's text without the comments above it. */
function prelude(): Map<string, string> {
  if (preludeDefinitions) return preludeDefinitions;
  const definitions = new Map<string, string>();
  const lines = readShipped("prelude").split("\n");
  for (let i = 0; i < lines.length; i++) {
    const head = /^([a-z_][a-z0-9_]*)\(\) \{/.exec(lines[i]!);
    if (!head) continue;
    let end = i;
    // A one-line definition ends on its own line; a longer one at the first "}" in column 0.
    if (!/\}\s*$/.test(lines[i]!)) while (end < lines.length && lines[end] !== "}") end++;
    definitions.set(head[1]!, lines.slice(i, end + 1).join("\n"));
    i = end;
  }
  preludeDefinitions = definitions;
  return definitions;
}

/** The prelude functions `text` calls, and the ones those call, in the prelude's order. */
function preludeFor(text: string): string[] {
  const all = prelude();
  const used = new Set<string>();
  const visit = (body: string) => {
    for (const [name, definition] of all) {
      if (used.has(name) || !new RegExp(`(^|[^A-Za-z0-9_])${name}([^A-Za-z0-9_]|$)`, "m").test(body)) continue;
      used.add(name);
      visit(definition);
    }
  };
  visit(text);
  return [...all.keys()].filter((name) => used.has(name)).map((name) => all.get(name)!);
}

/** The text of named prelude functions, for a script still written inline in TypeScript. */
export function preludeFunctions(...names: string[]): string {
  const all = prelude();
  return names
    .map((name) => {
      const definition = all.get(name);
      if (definition === undefined) throw new Error(`bpfleet: the shell prelude defines no function ${name}`);
      return definition;
    })
    .join("\n");
}

/** A script's text as `sh -c` runs it: the prelude functions it calls, then its own lines without full-line comments. */
export function withPrelude(script: string): string {
  const body = script
    .split("\n")
    .filter((line) => !/^\s*#/.test(line))
    .join("\n")
    .replace(/^\n+/, "");
  return [...preludeFor(body), body].join("\n");
}

/** The text `sh -c` runs for sh/<name>.sh (withPrelude). */
export function shellScript(name: string): string {
  let text = texts.get(name);
  if (text === undefined) {
    text = withPrelude(readShipped(name));
    texts.set(name, text);
  }
  return text;
}

/** The argv that runs sh/<name>.sh with `args` as $1, $2, ...; `argv0` names it in ps and in the shell's own errors. */
export function shellScriptCommand(name: string, args: readonly string[], argv0 = "bpfleet"): string[] {
  return ["sh", "-c", shellScript(name), argv0, ...args];
}

/** Runs sh/<name>.sh on the host as root, with `args` as $1, $2, ... (options.stdin on its stdin). */
export function runShellScript(session: SshSession, name: string, args: readonly string[], options: ExecOptions = {}): Promise<ExecResult> {
  return session.runScript(shellScript(name), args, options);
}
