# shellcheck shell=sh
# A piece of a chain member's restore.sh: both objects are checked before anything changes.
# shellcheck disable=SC2154 # LABEL, DIR, OBJ, BATCH, DEV, WAIT_SECONDS, DISPATCHER_DIR, DISPATCHER_OBJ, CHAIN, SLOT: assigned at the top of restore.sh (bootRestore.ts)
[ -f "$DISPATCHER_OBJ" ] || { say "the XDP dispatcher's object $DISPATCHER_OBJ is missing; run pulumi up to restore this resource"; exit 1; }
