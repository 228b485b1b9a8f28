# shellcheck shell=sh
# A piece of a resource's restore.sh: mounts bpffs, waits for the interface (drivers
# load in parallel with early boot), and takes a half-restored prog_boot off the hook.
# shellcheck disable=SC2154 # LABEL, DIR, OBJ, BATCH, DEV, WAIT_SECONDS, DISPATCHER_DIR, DISPATCHER_OBJ, CHAIN, SLOT: assigned at the top of restore.sh (bootRestore.ts)
if [ "$(stat -f -c %T /sys/fs/bpf 2>/dev/null)" != "bpf_fs" ]; then
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
  if [ -n "$id" ] && bpftool -j net show dev "$DEV" 2>/dev/null | grep -q "\"id\":${id}[,}]"; then
    ip link set dev "$DEV" xdpgeneric off 2>/dev/null; ip link set dev "$DEV" xdpdrv off 2>/dev/null
  fi
fi
