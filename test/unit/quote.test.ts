import { execFileSync } from "node:child_process";
import { describe, expect, it } from "vitest";
import { shellAnd, shellQuote } from "../../provider/remote/quote";

// The quoted line is run by a real shell: what arrives must be exactly the argv we built.
function roundTrip(argv: string[]): string[] {
  const out = execFileSync("sh", ["-c", `for a in ${shellQuote(argv)}; do printf '%s\\0' "$a"; done`]).toString();
  return out.split("\0").slice(0, -1);
}

describe("shellQuote", () => {
  it.each([
    [["echo", "plain"]],
    [["echo", "it's"]],
    [["echo", "$(touch /tmp/pwned)", "`id`", "a;b", "a|b", "a&&b", "*", "~", "\n", "\"q\"", "' '"]],
    [["echo", ""]],
  ])("passes %j through a real shell unchanged", (argv) => {
    expect(roundTrip(argv)).toEqual(argv);
  });

  it("rejects NUL bytes and empty commands", () => {
    expect(() => shellQuote(["a\0b"])).toThrow(/NUL/);
    expect(() => shellQuote([])).toThrow(/empty/);
  });

  it("chains commands with &&", () => {
    expect(shellAnd([["mkdir", "-p", "/a b"], ["true"]])).toBe("mkdir -p '/a b' && true");
  });
});
