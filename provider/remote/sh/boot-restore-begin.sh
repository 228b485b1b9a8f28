# shellcheck shell=sh
# A piece of a resource's restore.sh (bootRestore.ts resourceRestoreScript), first after
# its assignments. The program is loaded as prog_boot and renamed to prog last, so
# "prog is pinned" means "restored completely": a run that stopped half way is
# cleared and redone by the next one.
# shellcheck disable=SC2154 # LABEL, DIR, OBJ, BATCH, DEV, WAIT_SECONDS, DISPATCHER_DIR, DISPATCHER_OBJ, CHAIN, SLOT: assigned at the top of restore.sh (bootRestore.ts)
say() { echo "bpfleet-restore: $LABEL: $*" >&2; }
if [ -e "$DIR/prog" ]; then say "pins present, nothing to do"; exit 0; fi
[ -f "$OBJ" ] || { say "object $OBJ is missing; run pulumi up to restore this resource"; exit 1; }
