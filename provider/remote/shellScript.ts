/**
 * The remote shell bpfleet runs on a host lives in real files, sh/<name>.sh, shipped
 * in the package (the build copies them beside this module into dist/, so the
 * compiled provider finds them as the source does under tsx and vitest). A script
 * runs as `sh -c TEXT` through SshSession.runScript: values reach it only as
 * positional arguments, each quoted by shellQuote, or on stdin; nothing is pasted
 * into its text.
 *
 * TEXT is the script with the sections of the shared prelude (sh/prelude.sh) whose
 * functions it calls put in front, and its full-line comments left out: the command
 * line stays as short as the script, and an error's step summary (describeStep)
 * names the script's own tools, not the prelude's. So a line of a multi-line quoted
 * string must not start with '#'.
 */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import type { ExecOptions, ExecResult, SshSession } from "./ssh";

/** Where the shipped scripts are: provider/remote/sh in the source, dist/provider/remote/sh in the package. */
export const SCRIPT_DIR = join(__dirname, "sh");

const SCRIPT_NAME = /^[a-z][A-Za-z0-9-]*$/;
const texts = new Map<string, string>();

function readShipped(name: string, suffix = ".sh"): string {
  if (!SCRIPT_NAME.test(name)) throw new Error(`bpfleet: bad shell script name ${JSON.stringify(name)}`);
  const path = join(SCRIPT_DIR, `${name}${suffix}`);
  try {
    return readFileSync(path, "utf8");
  } catch (err) {
    throw new Error(`bpfleet: the shell script ${path} is missing (${(err as Error).message}); the package was built without its provider/remote/sh files (npm run build copies them)`);
  }
}

interface PreludeSection {
  /** Its function definitions, without the comments around them. */
  text: string;
  functions: string[];
}

let preludeSections: PreludeSection[] | undefined;
const preludeDefinitions = new Map<string, string>();

/** The prelude's sections ("## name" lines start one), each with its function definitions. */
function prelude(): PreludeSection[] {
  if (preludeSections) return preludeSections;
  const sections: PreludeSection[] = [];
  const lines = readShipped("prelude").split("\n");
  let section: { definitions: string[]; functions: string[] } | undefined;
  const close = () => {
    if (section?.functions.length) sections.push({ text: section.definitions.join("\n"), functions: section.functions });
  };
  for (let i = 0; i < lines.length; i++) {
    if (lines[i]!.startsWith("## ")) {
      close();
      section = { definitions: [], functions: [] };
      continue;
    }
    const head = /^([a-z_][a-z0-9_]*)\(\) \{/.exec(lines[i]!);
    if (!head) continue;
    if (!section) throw new Error("bpfleet: sh/prelude.sh defines a function before its first '## section' line");
    let end = i;
    // A one-line definition ends on its own line; a longer one at the first "}" in column 0.
    if (!/\}\s*$/.test(lines[i]!)) while (end < lines.length && lines[end] !== "}") end++;
    const definition = lines.slice(i, end + 1).join("\n");
    section.definitions.push(definition);
    section.functions.push(head[1]!);
    preludeDefinitions.set(head[1]!, definition);
    i = end;
  }
  close();
  preludeSections = sections;
  return sections;
}

const calls = (text: string, name: string) => new RegExp(`(^|[^A-Za-z0-9_])${name}([^A-Za-z0-9_]|$)`, "m").test(text);

/**
 * The prelude `text` needs: every section one of whose functions it calls, and the
 * sections those call, in the prelude's order, joined by newlines ("" for none).
 */
export function preludeOf(text: string): string {
  const sections = prelude();
  const used = new Set<PreludeSection>();
  const visit = (body: string) => {
    for (const section of sections) {
      if (used.has(section) || !section.functions.some((name) => calls(body, name))) continue;
      used.add(section);
      visit(section.text);
    }
  };
  visit(text);
  return sections
    .filter((section) => used.has(section))
    .map((section) => section.text)
    .join("\n");
}

/** The text of named prelude functions, for a script still written inline in TypeScript. */
export function preludeFunctions(...names: string[]): string {
  prelude();
  return names
    .map((name) => {
      const definition = preludeDefinitions.get(name);
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
  const functions = preludeOf(body);
  return functions ? `${functions}\n${body}` : body;
}

/** sh/<name><suffix> exactly as shipped: for a file installed on the host as it is (a script, a systemd unit). */
export function shippedText(name: string, suffix = ".sh"): string {
  return readShipped(name, suffix);
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

/**
 * Values for a script that names its arguments: its first line assigns them
 * (`dir=$1 batch=$2 ...`), and the caller passes them by those names, so neither
 * side is read by counting. Throws unless `values` names exactly those.
 */
export function scriptArgs(name: string, values: Readonly<Record<string, string>>): string[] {
  const first = readShipped(name)
    .split("\n")
    .find((line) => line.trim() !== "" && !/^\s*#/.test(line));
  const names: string[] = [];
  for (const [i, word] of (first ?? "").trim().split(/\s+/).entries()) {
    const m = /^([a-z_][a-z0-9_]*)=\$(?:(\d)|\{(\d+)\})$/.exec(word);
    if (!m || Number(m[2] ?? m[3]) !== i + 1) throw new Error(`bpfleet: sh/${name}.sh does not name its arguments on its first line (name=$1 name=$2 ...)`);
    names.push(m[1]!);
  }
  const extra = Object.keys(values).filter((key) => !names.includes(key));
  const missing = names.filter((key) => !(key in values));
  if (extra.length || missing.length) throw new Error(`bpfleet: sh/${name}.sh takes ${names.join(", ")}${missing.length ? `; missing ${missing.join(", ")}` : ""}${extra.length ? `; unknown ${extra.join(", ")}` : ""}`);
  return names.map((key) => values[key]!);
}

type ScriptArgs = readonly string[] | Readonly<Record<string, string>>;

function positional(name: string, args: ScriptArgs): readonly string[] {
  return Array.isArray(args) ? (args as readonly string[]) : scriptArgs(name, args as Readonly<Record<string, string>>);
}

/**
 * The argv that runs sh/<name>.sh with `args` as $1, $2, ... (or by name: scriptArgs);
 * `argv0` names it in ps and in the shell's own errors.
 */
export function shellScriptCommand(name: string, args: ScriptArgs, argv0 = "bpfleet"): string[] {
  return ["sh", "-c", shellScript(name), argv0, ...positional(name, args)];
}

/** Runs sh/<name>.sh on the host as root, with `args` as $1, $2, ... or by name (options.stdin on its stdin). */
export function runShellScript(session: SshSession, name: string, args: ScriptArgs, options: ExecOptions = {}): Promise<ExecResult> {
  return session.runScript(shellScript(name), positional(name, args), options);
}
