/**
 * The one place where a remote command line is built. Every remote command is
 * an argv array; each word is single-quoted, so nothing a user supplies is ever
 * interpreted by the remote shell (sshd always hands the command to a shell).
 */
export function shellQuote(argv: readonly string[]): string {
  if (argv.length === 0) throw new Error("shellQuote: empty command");
  return argv.map(quoteWord).join(" ");
}

function quoteWord(word: string): string {
  if (word.includes("\0")) throw new Error(`shellQuote: NUL byte in argument ${JSON.stringify(word)}`);
  if (/^[A-Za-z0-9_@%+=:,./-]+$/.test(word)) return word;
  return `'${word.replace(/'/g, `'\\''`)}'`;
}

/** Joins argv commands with `&&` so that one round trip runs them all, stopping at the first failure. */
export function shellAnd(commands: readonly (readonly string[])[]): string {
  return commands.map((c) => shellQuote(c)).join(" && ");
}
