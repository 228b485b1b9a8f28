# shellcheck shell=sh
# A piece of a resource's restore.sh: the declared map entries, from the batch file persisted beside it.
# shellcheck disable=SC2154 # LABEL, DIR, OBJ, BATCH, DEV, WAIT_SECONDS, DISPATCHER_DIR, DISPATCHER_OBJ, CHAIN, SLOT: assigned at the top of restore.sh (bootRestore.ts)
if [ -s "$BATCH" ]; then bpftool batch file "$BATCH" >/dev/null || { say "bpftool batch file $BATCH failed"; exit 1; }; fi
