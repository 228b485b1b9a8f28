import { createHmac } from "node:crypto";
import { describe, expect, it } from "vitest";
import { knownKeysFor } from "../../provider/remote/hostKeys";

const key = (n: number) => Buffer.alloc(8, n).toString("base64");

describe("known_hosts matching", () => {
  it("matches plain, bracketed-port, wildcard and hashed entries", () => {
    const salt = Buffer.alloc(20, 7);
    const hashed = `|1|${salt.toString("base64")}|${createHmac("sha1", salt).update("10.0.0.9").digest("base64")}`;
    const text = [
      `10.0.0.7,web1 ssh-ed25519 ${key(1)}`,
      `[10.0.0.7]:2222 ssh-ed25519 ${key(2)}`,
      `10.0.1.* ssh-ed25519 ${key(3)}`,
      `${hashed} ssh-ed25519 ${key(4)}`,
      `@revoked 10.0.0.8 ssh-ed25519 ${key(5)}`,
      `# comment`,
    ].join("\n");
    expect(knownKeysFor(text, "10.0.0.7", 22).map((b) => b.toString("base64"))).toEqual([key(1)]);
    expect(knownKeysFor(text, "10.0.0.7", 2222).map((b) => b.toString("base64"))).toEqual([key(2)]);
    expect(knownKeysFor(text, "10.0.1.5", 22).map((b) => b.toString("base64"))).toEqual([key(3)]);
    expect(knownKeysFor(text, "10.0.0.9", 22).map((b) => b.toString("base64"))).toEqual([key(4)]);
    expect(knownKeysFor(text, "10.0.0.8", 22)).toEqual([]);
    expect(knownKeysFor(text, "10.0.0.70", 22)).toEqual([]);
  });
});
