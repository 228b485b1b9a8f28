# shellcheck shell=sh
# A piece of a chain member's restore.sh, after boot-restore-prepare.sh: the chain steps
# of xdp-chain-ensure.sh, the load with the shared xdp_chain and xdp-chain-enter.sh,
# done whole under the interface's chain lock: a provider run that joins the chain
# meanwhile (the load balancer's) waits, then finds the dispatcher pinned and
# attached; both take the same lock (the prelude's xdp chain section). A
# half-restored member's prog_boot may still sit in its slot: that one may be
# replaced, any other program there or on the hook may not.
# shellcheck disable=SC2154 # LABEL, DIR, OBJ, BATCH, DEV, WAIT_SECONDS, DISPATCHER_DIR, DISPATCHER_OBJ, CHAIN, SLOT: assigned at the top of restore.sh (bootRestore.ts)
lock "$DEV" || { say "timed out waiting for the XDP chain lock of $DEV"; exit 1; }
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
