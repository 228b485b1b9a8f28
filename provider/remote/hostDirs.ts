/**
 * Where bpfleet keeps things on a host (pins, objects and boot files, run-time
 * locks and guards), and the shell function that makes those directories and
 * refuses ones that anyone but root could have written.
 */
import { preludeFunctions } from "./shellScript";

export const PIN_ROOT = "/sys/fs/bpf/bpfleet";
export const STATE_DIR = "/var/lib/bpfleet";
export const OBJECT_DIR = `${STATE_DIR}/objects`;
/** Locks, revert guards and markers that last until the host reboots. */
export const RUN_DIR = "/run/bpfleet";

// root_dirs DIR...: makes each directory and refuses one that root alone cannot write;
// defined, with its reasons, in the shared prelude (sh/prelude.sh).
export const ROOT_DIRS_FUNCTION = preludeFunctions("root_dirs");
