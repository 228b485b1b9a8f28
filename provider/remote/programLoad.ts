/**
 * Loading a BPF object on a host with bpftool, reusing the resource's pinned
 * maps, and reading back a pinned program.
 */
import { OBJECT_DIR, STATE_DIR } from "./hostDirs";
import { hostJson, progShow } from "./hostJson";
import type { PinLayout } from "./pins";
import { runShellScript } from "./shellScript";
import type { SshSession } from "./ssh";

export interface ProgramInfo {
  id: number;
  tag: string;
  name: string;
}

export async function pinnedProgram(session: SshSession, pin: string): Promise<ProgramInfo | undefined> {
  const result = await session.run(["bpftool", "-j", "prog", "show", "pinned", pin], { allowFailure: true });
  if (result.code !== 0) return undefined;
  return hostJson(progShow, result.stdout, { host: session.label, command: `bpftool -j prog show pinned ${pin}` });
}

// bpftool's name for each program type. TC is "classifier", never "tc": bpftool
// before libbpf 0.6 (Debian 11's 5.10) knows only "classifier", every later one both.
const BPFTOOL_TYPE: Record<"xdp" | "tc", string> = { xdp: "xdp", tc: "classifier" };

/**
 * Loads `objectPath` as `<dir>/prog_new`, reusing every map already pinned under
 * `<dir>/maps` and pinning any others there; with `sharedChain`, the program's
 * xdp_chain is that pin (see xdpHook.ts). Returns the new program's pin path.
 */
export async function loadProgram(session: SshSession, layout: PinLayout, objectPath: string, type: "xdp" | "tc", sharedChain?: string): Promise<string> {
  await runShellScript(session, "program-load", [objectPath, layout.dir, BPFTOOL_TYPE[type], "load", sharedChain ?? "", STATE_DIR, OBJECT_DIR]);
  return `${layout.program}_new`;
}

/**
 * As loadProgram, for an object whose programs share its maps (e.g. TC ingress and
 * egress): returns the directory holding the new programs, one pin per program,
 * named after its function.
 */
export async function loadAllPrograms(session: SshSession, layout: PinLayout, objectPath: string, type: "xdp" | "tc"): Promise<string> {
  await runShellScript(session, "program-load", [objectPath, layout.dir, BPFTOOL_TYPE[type], "loadall", "", STATE_DIR, OBJECT_DIR]);
  return `${layout.dir}/progs_new`;
}
