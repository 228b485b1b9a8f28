// The README's code that users copy: the from-zero project's files and one
// snippet per resource, each a fenced block after a `<!-- README snippet: <name> -->`
// line. test/unit/readmeReference.test.ts type-checks them and
// test/e2e/readme.test.ts runs them, so the text in README.md is what is tested.
import { readFileSync } from "node:fs";
import { resolve } from "node:path";

export const README = resolve(__dirname, "../../README.md");

/** The snippets the tests need, in the order they are appended to index.ts. */
export const PROJECT_FILES = ["Pulumi.yaml", "package.json", "index.ts"] as const;
export const RESOURCE_SNIPPETS = ["TcPolicy", "TrafficMirror", "MaglevService", "Fleet"] as const;

/** Every snippet in README.md by name; throws on a marker without a fenced block after it. */
export function readmeSnippets(text = readFileSync(README, "utf8")): Map<string, string> {
  const snippets = new Map<string, string>();
  const marker = /^<!-- README snippet: (\S+) -->\n```\w*\n([\s\S]*?)^```$/gm;
  for (const m of text.matchAll(marker)) {
    if (snippets.has(m[1]!)) throw new Error(`README.md has two snippets named ${m[1]}`);
    snippets.set(m[1]!, m[2]!);
  }
  const markers = text.match(/^<!-- README snippet: /gm)?.length ?? 0;
  if (markers !== snippets.size) throw new Error(`README.md has ${markers} snippet markers but ${snippets.size} are followed by a fenced block`);
  for (const name of [...PROJECT_FILES, ...RESOURCE_SNIPPETS]) if (!snippets.has(name)) throw new Error(`README.md has no snippet ${name}`);
  return snippets;
}

/** The from-zero index.ts with every resource snippet appended, as the README says to. */
export function readmeProgram(snippets = readmeSnippets()): string {
  return [snippets.get("index.ts")!, ...RESOURCE_SNIPPETS.map((name) => `// README snippet: ${name}\n${snippets.get(name)!}`)].join("\n");
}
