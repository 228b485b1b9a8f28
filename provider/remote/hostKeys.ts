/**
 * Host key verification: a pinned key, or a known_hosts file (plain and hashed
 * entries). An unknown key is refused unless the user opted out explicitly.
 */
import { createHmac } from "node:crypto";
import { readFileSync } from "node:fs";
import { homedir } from "node:os";
import { join } from "node:path";
import type { SshEndpoint } from "./hostSchema";

export type HostKeyCheck = (presentedKey: Buffer) => boolean;

/** Returns the verifier ssh2 calls with the raw key blob the server presented, and a description for errors. */
export function hostKeyCheck(endpoint: SshEndpoint): { verify: HostKeyCheck; describe: string } {
  if (endpoint.insecureSkipHostKeyCheck) return { verify: () => true, describe: "host key check disabled" };
  if (endpoint.hostKey) {
    const pinned = keyBlob(endpoint.hostKey);
    return { verify: (key) => key.equals(pinned), describe: `pinned host key ${endpoint.hostKey.split(" ").slice(0, 2).join(" ").slice(0, 40)}...` };
  }
  const path = endpoint.knownHostsPath ?? join(homedir(), ".ssh", "known_hosts");
  let text = "";
  try {
    text = readFileSync(path, "utf8");
  } catch {
    return { verify: () => false, describe: `known_hosts file ${path} (unreadable or missing; pin the key with host.hostKey)` };
  }
  const known = knownKeysFor(text, endpoint.address, endpoint.port);
  return { verify: (key) => known.some((k) => k.equals(key)), describe: `known_hosts file ${path}` };
}

function keyBlob(line: string): Buffer {
  const base64 = line.trim().split(/\s+/)[1];
  if (!base64) throw new Error(`host key "${line}" has no key data`);
  return Buffer.from(base64, "base64");
}

/** Keys that a known_hosts text lists for address:port. */
export function knownKeysFor(text: string, address: string, port: number): Buffer[] {
  const name = port === 22 ? address : `[${address}]:${port}`;
  const keys: Buffer[] = [];
  for (const raw of text.split("\n")) {
    const line = raw.trim();
    if (!line || line.startsWith("#")) continue;
    const fields = line.split(/\s+/);
    if (fields[0]?.startsWith("@")) {
      if (fields[0] === "@revoked") continue; // a revoked key never matches
      fields.shift();
    }
    const [patterns, , base64] = fields;
    if (!patterns || !base64) continue;
    if (patternsMatch(patterns, name)) keys.push(Buffer.from(base64, "base64"));
  }
  return keys;
}

function patternsMatch(patterns: string, name: string): boolean {
  if (patterns.startsWith("|1|")) {
    const [, , salt, hash] = patterns.split("|");
    if (!salt || !hash) return false;
    return createHmac("sha1", Buffer.from(salt, "base64")).update(name).digest("base64") === hash;
  }
  let matched = false;
  for (const pattern of patterns.split(",")) {
    const negated = pattern.startsWith("!");
    const glob = negated ? pattern.slice(1) : pattern;
    const regex = new RegExp(`^${glob.replace(/[.+^${}()|[\]\\]/g, "\\$&").replace(/\*/g, ".*").replace(/\?/g, ".")}$`);
    if (regex.test(name)) {
      if (negated) return false;
      matched = true;
    }
  }
  return matched;
}
