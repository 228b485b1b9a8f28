/**
 * The lockout guard's remote half: a revert armed on the host before a change
 * that could cut the management path, disarmed only after a fresh SSH login has
 * proved the path still works. If the provider never comes back, the host undoes
 * the change by itself.
 */
import { randomBytes } from "node:crypto";
import { ROOT_DIRS_FUNCTION, RUN_DIR } from "./hostDirs";
import type { SshSession } from "./ssh";

const GUARD_DIR = `${RUN_DIR}/guards`;

/** Fired guards whose log and marker are kept for the provider (or a person) to read; older ones go. */
export const KEPT_FIRED_GUARDS = 8;
/** The tail of a revert's output kept in its log. */
export const GUARD_LOG_BYTES = 65536;

// The revert script arrives on stdin. The watcher runs in its own session (setsid),
// so it outlives this SSH connection. Whoever renames <token>.sh first wins: the
// watcher (to run it) or disarm (to cancel it), so a revert never runs half way
// under a late disarm. A provider that never comes back (the host stayed
// unreachable, the run was killed) never cleans up after a fired revert: the
// watcher keeps only <token>.fired and the log's tail, and each arm removes all
// but the newest KEPT_FIRED_GUARDS fired guards, so /run stays bounded.
const ARM_SCRIPT = `${ROOT_DIRS_FUNCTION}
set -e
root_dirs "\${1%/*}" "$1"
umask 077
f="$1/$2"
ls -t -- "$1" | sed -n 's/\\.fired$//p' | tail -n +${KEPT_FIRED_GUARDS + 1} | while read -r old; do rm -f -- "$1/$old".*; done
cat > "$f.sh"
setsid sh -c 'sleep "$1"; mv "$2.sh" "$2.run" 2>/dev/null || exit 0; sh "$2.run" 2>&1 | tail -c ${GUARD_LOG_BYTES} > "$2.log"; rm -f "$2.run" "$2.pid"; echo fired > "$2.fired"' bpfleet-guard "$3" "$f" </dev/null >/dev/null 2>&1 &
echo $! > "$f.pid"
`;

// Exit 7: too late, the host already reverted (its log is on stderr).
const DISARM_SCRIPT = `
f="$1/$2"
if mv "$f.sh" "$f.disarmed" 2>/dev/null; then
  kill -- "-$(cat "$f.pid")" 2>/dev/null
  rm -f "$f.disarmed" "$f.pid"
  exit 0
fi
for i in 1 2 3 4 5 6 7 8 9 10; do [ -e "$f.fired" ] && break; sleep 1; done
cat "$f.log" >&2 2>/dev/null
rm -f "$f.run" "$f.pid" "$f.log" "$f.fired"
exit 7
`;

export class RevertedError extends Error {}

export interface RevertTimer {
  readonly token: string;
  readonly seconds: number;
  /** Cancels the revert; throws RevertedError when the host had already reverted. */
  disarm(): Promise<void>;
  /** Whether the host ran the revert (its marker is there), asked over `session`. */
  fired(session: SshSession): Promise<boolean>;
}

/** Arms `revertScript` (built from quoted commands) to run on the host after `seconds`. */
export async function armRevert(session: SshSession, revertScript: string, seconds: number): Promise<RevertTimer> {
  const token = `${Date.now()}-${randomBytes(6).toString("hex")}`;
  await session.runScript(ARM_SCRIPT, [GUARD_DIR, token, String(seconds)], { stdin: revertScript });
  return {
    token,
    seconds,
    async disarm() {
      const result = await session.runScript(DISARM_SCRIPT, [GUARD_DIR, token], { allowFailure: true });
      if (result.code === 7) {
        throw new RevertedError(`${session.label}: the revert timer fired before it could be disarmed, so the host undid the change (raise lockoutRevertSeconds if the change is slow). Revert log: ${result.stderr.trim() || "(empty)"}`);
      }
      if (result.code !== 0) throw new Error(`${session.label}: disarming the revert timer failed: ${result.stderr.trim()}`);
    },
    async fired(over: SshSession) {
      return (await over.run(["test", "-e", `${GUARD_DIR}/${token}.fired`], { allowFailure: true })).code === 0;
    },
  };
}

// Runs now, and waits for, every revert still pending for one resource (its script names
// the resource's pin directory): claimed by the same rename as the watcher's, so each
// revert runs once. Prints how many it ran.
// It runs what it finds as root, so nothing is run from a guard directory (or a
// /run/bpfleet above it) that root alone could not have written: such a host has
// nothing pending it could trust, and the step of the change that needs the
// directory refuses it, saying why (root_dirs). A host that has neither has nothing
// pending, and nothing is created for it.
const SETTLE_SCRIPT = `${ROOT_DIRS_FUNCTION}
for d in "\${1%/*}" "$1"; do
  if [ -e "$d" ] || [ -L "$d" ]; then root_dirs "$d" 2>/dev/null || { echo 0; exit 0; }; else echo 0; exit 0; fi
done
n=0
for s in "$1"/*.sh; do
  [ -e "$s" ] || continue
  grep -q -- "$2\\([^A-Za-z0-9_.-]\\|\\$\\)" "$s" || continue
  f="\${s%.sh}"
  mv "$s" "$f.run" 2>/dev/null || continue
  kill -- "-$(cat "$f.pid" 2>/dev/null)" 2>/dev/null
  sh "$f.run" > "$f.log" 2>&1
  rm -f "$f.run" "$f.pid" "$f.log"
  n=$((n+1))
done
for r in "$1"/*.run; do
  [ -e "$r" ] || continue
  grep -q -- "$2\\([^A-Za-z0-9_.-]\\|\\$\\)" "$r" || continue
  i=0; while [ ! -e "\${r%.run}.fired" ] && [ $i -lt 60 ]; do sleep 1; i=$((i+1)); done
done
echo $n
`;

/**
 * Before a resource is changed again: a revert armed by an earlier run that never came
 * back (its SSH session was cut) would otherwise fire later and undo whatever this run
 * applies, leaving the host at the old state while the stack records the new one. It
 * does now what it would have done anyway (restore the state before that run), so
 * this run starts from a state the stack knows. Returns how many reverts ran.
 */
export async function settlePendingReverts(session: SshSession, pinDir: string): Promise<number> {
  const result = await session.runScript(SETTLE_SCRIPT, [GUARD_DIR, pinDir]);
  return Number(result.stdout.trim()) || 0;
}
