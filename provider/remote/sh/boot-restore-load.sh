# shellcheck shell=sh
# A piece of the restore.sh of a program attached alone: loads it afresh, its maps pinned where the provider expects them.
# shellcheck disable=SC2154 # LABEL, DIR, OBJ, BATCH, DEV, WAIT_SECONDS, DISPATCHER_DIR, DISPATCHER_OBJ, CHAIN, SLOT: assigned at the top of restore.sh (bootRestore.ts)
rm -rf -- "$DIR"
mkdir -p -- "$DIR"
bpftool prog load "$OBJ" "$DIR/prog_boot" type xdp pinmaps "$DIR/maps" || { say "bpftool prog load failed"; exit 1; }
