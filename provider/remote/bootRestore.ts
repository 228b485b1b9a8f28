/**
 * Boot-time restore: what a host needs to bring a resource back after a reboot
 * (bpffs is empty then, so every pin and attachment is gone) before anyone runs
 * Pulumi. Per resource, a restore script and a `bpftool batch` file of its map
 * entries under /var/lib/bpfleet/boot/<kind>/<name>/; one shared systemd unit,
 * bpfleet-restore.service, runs a fixed entry point that restores them all
 * before network-pre.target. The object itself is already on the host at its
 * content-addressed path. A chain member (xdpHook.ts) comes back with the
 * interface's dispatcher, whose object is kept in that cache too; the other
 * members are not restored here (their own Pulumi run puts them back). Every file is written to a temporary name and renamed
 * into place, so a host that loses power mid-write boots with the old file or
 * the new one, never half of one.
 */
import { createHash } from "node:crypto";
import { ROOT_DIRS_FUNCTION } from "./hostDirs";
import { batchText, type MapOperation } from "./mapOperations";
import { objectRemotePath, uploadObject, type LocalObject } from "./objectUpload";
import type { PinLayout } from "./pins";
import { attachXdpCommand, type XdpMode } from "./xdpAttach";
import { shellQuote } from "./quote";
import type { SshSession } from "./ssh";
import { CHAIN_FUNCTIONS, chainMapPin, dispatcherDir, XDP_CHAIN_SLOTS } from "./xdpHook";

export const BOOT_DIR = "/var/lib/bpfleet/boot";
/** The fixed entry point the unit runs; it restores every resource persisted under BOOT_DIR. */
export const RESTORE_ENTRY = `${BOOT_DIR}/restore`;
export const UNIT_DIR = "/etc/systemd/system";
export const UNIT_NAME = "bpfleet-restore.service";
/** Where `systemctl enable` puts the unit's link, as its [Install] section says. */
export const UNIT_WANTS_DIR = `${UNIT_DIR}/sysinit.target.wants`;
/** How long a restore waits for its interface to appear (drivers load in parallel with early boot). */
export const INTERFACE_WAIT_SECONDS = 30;

/** What a resource needs to come back by itself after a reboot. */
export interface BootRestoreSpec {
  /** Resource kind as in pin paths, e.g. "xdp-firewall". */
  kind: string;
  /** Pin name; also names the resource's directory under BOOT_DIR. */
  name: string;
  layout: PinLayout;
  /** The object the program is loaded from (it is on the host at its content-addressed path). */
  object: LocalObject;
  /** Map writes applied right after the load: the resource's declared entries. */
  mapOperations: readonly MapOperation[];
  /** Attach the program to XDP on this interface, in this mode; undefined: load and fill only. */
  xdp: { interface: string; mode: XdpMode; chain?: ChainRestore } | undefined;
}

/** A chain member's place: its slot in the interface's chain and the dispatcher that runs the chain. */
export interface ChainRestore {
  /** The chainPriority, 0 to XDP_CHAIN_SLOTS - 1. */
  slot: number;
  /** The dispatcher's object (bpf/obj/xdp_dispatcher.bpf.o), kept at its content-addressed path. */
  dispatcher: LocalObject;
}

// Names end up in paths inside our scripts and in bpftool batch lines (unquoted there).
const SAFE_SEGMENT = /^[A-Za-z0-9][A-Za-z0-9_-]*$/;
const SAFE_PIN_PATH = /^\/sys\/fs\/bpf\/[A-Za-z0-9_./-]+$/;

function assertSegment(what: string, value: string): void {
  if (!SAFE_SEGMENT.test(value)) throw new Error(`boot restore: unsafe ${what} ${JSON.stringify(value)} (letters, digits, '_' and '-' only)`);
}

/** The directory holding one resource's restore script and batch file. */
export function resourceBootDir(kind: string, name: string): string {
  assertSegment("kind", kind);
  assertSegment("name", name);
  return `${BOOT_DIR}/${kind}/${name}`;
}

/**
 * The batch file's name carries a digest of its text, and the restore script names
 * it: renaming the script into place switches object, entries and hook together.
 */
export function batchFileName(text: string): string {
  return `entries-${createHash("sha256").update(text).digest("hex").slice(0, 16)}.batch`;
}

/** The bpftool batch that refills a resource's maps after its program was loaded again. */
export function restoreBatchText(operations: readonly MapOperation[]): string {
  for (const o of operations) {
    if (!SAFE_PIN_PATH.test(o.map)) throw new Error(`boot restore: unsafe pin path for a bpftool batch: ${JSON.stringify(o.map)}`);
  }
  return batchText(operations);
}

function chainOf(spec: BootRestoreSpec): { iface: string; mode: XdpMode; chain: ChainRestore } | undefined {
  const chain = spec.xdp?.chain;
  if (!spec.xdp || !chain) return undefined;
  if (!Number.isInteger(chain.slot) || chain.slot < 0 || chain.slot >= XDP_CHAIN_SLOTS) {
    throw new Error(`boot restore: chain slot must be 0-${XDP_CHAIN_SLOTS - 1}, got ${chain.slot}`);
  }
  return { iface: spec.xdp.interface, mode: spec.xdp.mode, chain };
}

/** The quoted assignments at the top of a restore script: the only place values appear. */
export function restoreAssignments(spec: BootRestoreSpec, batchPath: string): string {
  const assign = (name: string, value: string) => `${name}=${shellQuote([value])}`;
  const member = chainOf(spec);
  return [
    assign("LABEL", `${spec.kind}/${spec.name}`),
    assign("DIR", spec.layout.dir),
    assign("OBJ", objectRemotePath(spec.object)),
    assign("BATCH", batchPath),
    assign("DEV", spec.xdp?.interface ?? ""),
    ...(member
      ? [
          assign("DISPATCHER_DIR", dispatcherDir(member.iface)),
          assign("DISPATCHER_OBJ", objectRemotePath(member.chain.dispatcher)),
          assign("CHAIN", chainMapPin(member.iface)),
          assign("SLOT", String(member.chain.slot)),
        ]
      : []),
  ].join("\n");
}

// Loaded as prog_boot and renamed to prog last, so "prog is pinned" means "restored
// completely": a run that stopped half way is cleared and redone by the next one.
const RESTORE_PREAMBLE = `
say() { echo "bpfleet-restore: $LABEL: $*" >&2; }
if [ -e "$DIR/prog" ]; then say "pins present, nothing to do"; exit 0; fi
[ -f "$OBJ" ] || { say "object $OBJ is missing; run pulumi up to restore this resource"; exit 1; }
`;

const DISPATCHER_OBJECT_CHECK = `[ -f "$DISPATCHER_OBJ" ] || { say "the XDP dispatcher's object $DISPATCHER_OBJ is missing; run pulumi up to restore this resource"; exit 1; }
`;

const RESTORE_PREPARE = `if [ "$(stat -f -c %T /sys/fs/bpf 2>/dev/null)" != "bpf_fs" ]; then
  mount -t bpf bpf /sys/fs/bpf || { say "bpffs is not mounted at /sys/fs/bpf and mounting it failed"; exit 1; }
fi
if [ -n "$DEV" ]; then
  waited=0
  while [ ! -e "/sys/class/net/$DEV" ]; do
    [ "$waited" -lt $((WAIT_SECONDS * 2)) ] || { say "interface $DEV did not appear within $WAIT_SECONDS s"; exit 1; }
    sleep 0.5; waited=$((waited + 1))
  done
fi
if [ -e "$DIR/prog_boot" ] && [ -n "$DEV" ]; then
  id=$(bpftool -j prog show pinned "$DIR/prog_boot" 2>/dev/null | grep -o '"id":[0-9]*' | head -n 1 | cut -d: -f2)
  if [ -n "$id" ] && bpftool -j net show dev "$DEV" 2>/dev/null | grep -q "\\"id\\":$id[,}]"; then
    ip link set dev "$DEV" xdpgeneric off 2>/dev/null; ip link set dev "$DEV" xdpdrv off 2>/dev/null
  fi
fi
`;

const RESTORE_LOAD = `rm -rf -- "$DIR"
mkdir -p -- "$DIR"
bpftool prog load "$OBJ" "$DIR/prog_boot" type xdp pinmaps "$DIR/maps" || { say "bpftool prog load failed"; exit 1; }
`;

const RESTORE_ENTRIES = `if [ -s "$BATCH" ]; then bpftool batch file "$BATCH" >/dev/null || { say "bpftool batch file $BATCH failed"; exit 1; }; fi
`;

// The chain steps of xdpHook.ts (ENSURE_DISPATCHER_SCRIPT, LOAD_SCRIPT with the shared
// xdp_chain, ENTER_SCRIPT), done whole under the interface's chain lock: a provider run
// that joins the chain meanwhile (the load balancer's) waits, then finds the dispatcher
// pinned and attached: both take the same lock (xdpHook.ts's CHAIN_FUNCTIONS).

// After RESTORE_PREPARE. A half-restored member's prog_boot may still sit in its slot:
// that one may be replaced, any other program there or on the hook may not.
const CHAIN_ENTER = `lock "$DEV" || { say "timed out waiting for the XDP chain lock of $DEV"; exit 1; }
if [ -e "$DIR/prog" ]; then say "pins present, nothing to do"; exit 0; fi
previous=$(id_of "$DIR/prog_boot")
disp=$(id_of "$DISPATCHER_DIR/prog")
hooked=$(hook_id "$DEV")
if [ -n "$hooked" ] && [ "$hooked" != "$disp" ]; then
  say "interface $DEV has XDP program id $hooked attached, not bpfleet's dispatcher; bpfleet never replaces it"; exit 1
fi
if [ -z "$disp" ]; then
  rm -rf -- "$DISPATCHER_DIR"
  mkdir -p -- "$DISPATCHER_DIR"
  bpftool prog load "$DISPATCHER_OBJ" "$DISPATCHER_DIR/prog" type xdp pinmaps "$DISPATCHER_DIR/maps" || { say "bpftool prog load of the XDP dispatcher failed"; exit 1; }
  disp=$(id_of "$DISPATCHER_DIR/prog")
fi
held=$(slot_id "$CHAIN" "$SLOT")
if [ -n "$held" ] && [ "$held" != "$previous" ]; then
  say "chain slot $SLOT of $DEV holds program id $held, not this resource's; run pulumi up"; exit 1
fi
rm -rf -- "$DIR"
mkdir -p -- "$DIR"
bpftool prog load "$OBJ" "$DIR/prog_boot" type xdp map name xdp_chain pinned "$CHAIN" pinmaps "$DIR/maps" || { say "bpftool prog load failed"; exit 1; }
rm -f -- "$DIR/maps/xdp_chain"
`;

// The member learns its place before it enters its slot (xdp_chain.h); the dispatcher
// goes on the hook last, so its first packet already meets the firewall.
const CHAIN_ATTACH = `bpftool map update pinned "$DIR/maps/xdp_chain_next" key 0 0 0 0 value $((SLOT + 1)) 0 0 0 || { say "writing xdp_chain_next failed"; exit 1; }
bpftool map update pinned "$CHAIN" key "$SLOT" 0 0 0 value pinned "$DIR/prog_boot" || { say "putting the program into chain slot $SLOT failed"; exit 1; }
`;

/**
 * The per-resource restore script: load the object with its maps pinned where the
 * provider expects them, apply the batch, attach in the declared mode. Idempotent:
 * with the program pinned already it does nothing.
 */
export function resourceRestoreScript(spec: BootRestoreSpec, batchPath: string): string {
  const member = chainOf(spec);
  const attachFailed = ` || { say "attaching XDP to $DEV failed"; exit 1; }\n`;
  let steps: string;
  if (member) {
    const attachDispatcher = shellQuote(attachXdpCommand(member.iface, `${dispatcherDir(member.iface)}/prog`, member.mode));
    steps =
      DISPATCHER_OBJECT_CHECK +
      RESTORE_PREPARE +
      CHAIN_FUNCTIONS +
      CHAIN_ENTER +
      RESTORE_ENTRIES +
      CHAIN_ATTACH +
      // Never with overwrite: a program attached since the check above stays, and the restore fails.
      `on_hook "$DEV" "$disp" || ${attachDispatcher}${attachFailed}`;
  } else {
    const attach = spec.xdp ? `${shellQuote(attachXdpCommand(spec.xdp.interface, `${spec.layout.dir}/prog_boot`, spec.xdp.mode))}${attachFailed}` : "";
    steps = RESTORE_PREPARE + RESTORE_LOAD + RESTORE_ENTRIES + attach;
  }
  return (
    `#!/bin/sh\n# Written by bpfleet: restores ${spec.kind} ${spec.name} after a reboot${member ? `, as member ${member.chain.slot} of ${member.iface}'s XDP chain` : ""}. Run by ${RESTORE_ENTRY}.\n` +
    `PATH=$PATH:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n` +
    `WAIT_SECONDS=${INTERFACE_WAIT_SECONDS}\n` +
    `${restoreAssignments(spec, batchPath)}\n` +
    RESTORE_PREAMBLE +
    steps +
    `mv -f -- "$DIR/prog_boot" "$DIR/prog"\nsay "restored"\n`
  );
}

/** The fixed entry point: every persisted resource, one failure not stopping the others. */
export function restoreEntryScript(): string {
  return `#!/bin/sh
# Written by bpfleet; run by ${UNIT_NAME}. Restores every resource persisted under ${BOOT_DIR}.
failed=0
for script in ${BOOT_DIR}/*/*/restore.sh; do
  [ -f "$script" ] || continue
  sh "$script" || { echo "bpfleet-restore: $script failed" >&2; failed=1; }
done
exit $failed
`;
}

/**
 * The shared unit. Ordered like nftables.service (before network-pre.target, no
 * default dependencies, wanted by sysinit.target), so the host is filtering before
 * its network is configured; /var/lib/bpfleet must be mounted first.
 */
export function unitText(): string {
  return `# Written by bpfleet: restores bpfleet eBPF programs after a reboot.
# Removed by bpfleet when its last resource with bootRestore leaves this host.
[Unit]
Description=Restore bpfleet eBPF programs and their map entries
DefaultDependencies=no
Wants=network-pre.target
Before=network-pre.target shutdown.target
After=local-fs.target systemd-modules-load.service systemd-udev-trigger.service sys-fs-bpf.mount
Conflicts=shutdown.target
RequiresMountsFor=${BOOT_DIR}
ConditionPathExists=${RESTORE_ENTRY}

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/bin/sh ${RESTORE_ENTRY}

[Install]
WantedBy=sysinit.target
`;
}

// systemctl only where systemd manages this mount namespace: a container or a
// namespace sharing /run with a systemd host would otherwise reload a manager
// that cannot see the unit we wrote.
const SYSTEMD_HERE = `systemd_here() { [ -d /run/systemd/system ] && [ "$(readlink /proc/1/ns/mnt)" = "$(readlink /proc/self/ns/mnt)" ]; }`;

// $1 resource dir, $2 batch file name, $3 "upload" when the batch arrives on stdin,
// $4 restore script, $5 entry point path, $6 its text, $7 unit path, $8 its text,
// $9 the enablement link. Each file: temp name, then rename; unchanged files are left alone.
const PERSIST_SCRIPT = `${ROOT_DIRS_FUNCTION}
set -e
${SYSTEMD_HERE}
root_dirs "\${1%/*/*/*}" "\${1%/*/*}" "\${1%/*}" "$1"
put() { printf '%s' "$2" > "$1.tmp.$$"; chmod "$3" "$1.tmp.$$"; mv -f -- "$1.tmp.$$" "$1"; }
same() { [ -f "$1" ] && [ "$(cat -- "$1")" = "$(printf '%s' "$2")" ]; }
mkdir -p -- "$(dirname -- "$7")" "$(dirname -- "$9")"
if [ "$3" = upload ]; then cat > "$1/$2.tmp.$$"; mv -f -- "$1/$2.tmp.$$" "$1/$2"; fi
same "$1/restore.sh" "$4" || put "$1/restore.sh" "$4" 0755
for old in "$1"/*.batch; do [ "$old" = "$1/$2" ] || rm -f -- "$old"; done
same "$5" "$6" || put "$5" "$6" 0755
changed=0
same "$7" "$8" || { put "$7" "$8" 0644; changed=1; }
if [ "$(readlink -- "$9" 2>/dev/null)" != "$7" ]; then
  ln -s -- "$7" "$9.tmp.$$"; mv -f -- "$9.tmp.$$" "$9"; changed=1
fi
if [ "$changed" = 1 ] && systemd_here; then systemctl daemon-reload; fi
`;

const PRESENT_SCRIPT = `for f in "$@"; do if [ -f "$f" ]; then echo yes; else echo no; fi; done`;

/**
 * Persists what brings `spec` back after a reboot, and installs and enables the
 * shared unit. The objects (the program's, and a chain member's dispatcher) and
 * the batch are only sent when not on the host yet.
 */
export async function persistBootRestore(session: SshSession, spec: BootRestoreSpec): Promise<void> {
  const dir = resourceBootDir(spec.kind, spec.name);
  const batch = restoreBatchText(spec.mapOperations);
  const batchName = batchFileName(batch);
  const member = chainOf(spec);
  const objects = [spec.object, ...(member ? [member.chain.dispatcher] : [])];
  const [present, ...objectsPresent] = (await session.runScript(PRESENT_SCRIPT, [`${dir}/${batchName}`, ...objects.map(objectRemotePath)])).stdout.split("\n").map((l) => l === "yes");
  // The cache is shared by every resource; a cleaned one must not leave the restore without its objects.
  for (const [i, object] of objects.entries()) if (!objectsPresent[i]) await uploadObject(session, object, false);
  const unitPath = `${UNIT_DIR}/${UNIT_NAME}`;
  await session.runScript(
    PERSIST_SCRIPT,
    [dir, batchName, present ? "keep" : "upload", resourceRestoreScript(spec, `${dir}/${batchName}`), RESTORE_ENTRY, restoreEntryScript(), unitPath, unitText(), `${UNIT_WANTS_DIR}/${UNIT_NAME}`],
    present ? {} : { stdin: batch },
  );
}

// $1 boot dir, $2 resource dir, $3 unit dir, $4 unit name, $5 wants dir, $6 entry point.
// The unit, its link and the entry point go with the last persisted resource.
const REMOVE_SCRIPT = `
${SYSTEMD_HERE}
rm -rf -- "$2"
rmdir -- "$(dirname -- "$2")" 2>/dev/null
for script in "$1"/*/*/restore.sh; do [ -e "$script" ] && exit 0; done
[ -e "$3/$4" ] || [ -L "$5/$4" ] || [ -e "$6" ] || exit 0
rm -f -- "$5/$4" "$3/$4" "$6"
rmdir -- "$5" 2>/dev/null
rmdir -- "$1" 2>/dev/null
if systemd_here; then systemctl daemon-reload; fi
exit 0
`;

/** Removes a resource's persisted restore; with none left, the unit and its enablement go too. */
export async function removeBootRestore(session: SshSession, kind: string, name: string): Promise<void> {
  await session.runScript(REMOVE_SCRIPT, [BOOT_DIR, resourceBootDir(kind, name), UNIT_DIR, UNIT_NAME, UNIT_WANTS_DIR, RESTORE_ENTRY]);
}
