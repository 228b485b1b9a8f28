/**
 * A resource's pins under /sys/fs/bpf/bpfleet/<kind>/<name>/: where they are,
 * listing and testing them, and removing them (with the pin root and the object
 * cache when the last resource leaves the host).
 */
import { OBJECT_DIR, PIN_ROOT } from "./hostDirs";
import { runShellScript } from "./shellScript";
import type { SshSession } from "./ssh";

export interface PinLayout {
  dir: string;
  program: string;
  maps: string;
}

export function pinLayout(kind: string, name: string): PinLayout {
  const dir = `${PIN_ROOT}/${kind}/${name}`;
  return { dir, program: `${dir}/prog`, maps: `${dir}/maps` };
}

export async function listPins(session: SshSession, dir: string): Promise<string[]> {
  const result = await session.run(["ls", "-1", dir], { allowFailure: true });
  if (result.code !== 0) return [];
  return result.stdout.split("\n").filter(Boolean);
}

export async function pathExists(session: SshSession, path: string): Promise<boolean> {
  return (await session.run(["test", "-e", path], { allowFailure: true })).code === 0;
}

/** Removes a resource's pin directory (programs and maps); absent is fine. */
export async function removePins(session: SshSession, layout: PinLayout): Promise<void> {
  const kindDir = layout.dir.slice(0, layout.dir.lastIndexOf("/"));
  await runShellScript(session, "remove-pins", [layout.dir, kindDir, PIN_ROOT, OBJECT_DIR.replace(/\/objects$/, "")]);
}
