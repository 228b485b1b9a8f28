# shellcheck shell=sh
# A piece of a chain member's restore.sh: the member learns its place before it enters
# its slot (xdp_chain.h); the dispatcher goes on the hook last (the attach line
# after this piece), so its first packet already meets the firewall.
# shellcheck disable=SC2154 # LABEL, DIR, OBJ, BATCH, DEV, WAIT_SECONDS, DISPATCHER_DIR, DISPATCHER_OBJ, CHAIN, SLOT: assigned at the top of restore.sh (bootRestore.ts)
bpftool map update pinned "$DIR/maps/xdp_chain_next" key 0 0 0 0 value $((SLOT + 1)) 0 0 0 || { say "writing xdp_chain_next failed"; exit 1; }
bpftool map update pinned "$CHAIN" key "$SLOT" 0 0 0 value pinned "$DIR/prog_boot" || { say "putting the program into chain slot $SLOT failed"; exit 1; }
