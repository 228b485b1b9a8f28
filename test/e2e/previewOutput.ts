/** Reading the CLI's `--diff` output (preview, up, refresh) in e2e tests. */

/** The names of the resources of `type` a --diff output shows as `(update)`, sorted. */
export function updatedBlocks(output: string, type: string): string[] {
  const names = new Set<string>();
  let inBlock = false;
  for (const line of output.split("\n")) {
    const block = line.match(/:(\w+): \((\w[\w-]*)\)/);
    if (block) inBlock = block[1] === type && block[2] === "update";
    const name = line.match(/urn=.*::([\w-]+)\]/)?.[1];
    if (inBlock && name) names.add(name);
  }
  return [...names].sort();
}
