/**
 * BPF objects on a host: uploaded once to a content-addressed path (sha256),
 * checked there before they are renamed into place, skipped when present.
 */
import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import { OBJECT_DIR } from "./hostDirs";
import { runShellScript } from "./shellScript";
import type { SshSession } from "./ssh";

export interface LocalObject {
  path: string;
  bytes: Buffer;
  sha256: string;
}

export function localObject(path: string): LocalObject {
  const bytes = readFileSync(path);
  return { path, bytes, sha256: createHash("sha256").update(bytes).digest("hex") };
}

export function objectRemotePath(object: LocalObject): string {
  return `${OBJECT_DIR}/${object.sha256}.bpf.o`;
}

/**
 * Uploads an object to its content-addressed path unless it is there already
 * (as a survey found, or as a test on the host says); returns the remote path.
 */
export async function uploadObject(session: SshSession, object: LocalObject, alreadyPresent?: boolean): Promise<string> {
  const remotePath = objectRemotePath(object);
  const present = alreadyPresent ?? (await session.run(["test", "-f", remotePath], { allowFailure: true })).code === 0;
  if (!present) await runShellScript(session, "object-upload", [OBJECT_DIR, remotePath, object.sha256], { stdin: object.bytes });
  return remotePath;
}
