# shellcheck shell=sh
# The shared prelude. provider/remote/shellScript.ts puts in front of a script every
# section below ("## name") one of whose functions the script calls, directly or
# through another section. Only definitions here, nothing that runs. Names a
# function uses for its own state are prefixed: sh functions share the script's
# variables.

## json

# json_or CMD...: CMD's JSON output, or $fallback when CMD fails, so a survey always
# prints one JSON value per section.
# shellcheck disable=SC2154 # fallback is set by the caller
json_or() { out=$("$@" 2>/dev/null) && printf '%s\n' "$out" || echo "$fallback"; }

## root_dirs
# root_dirs DIR...: makes each directory (list parents first) and checks that root
# alone can write it before anything in it is used. Root runs what is there (revert
# scripts, boot restore files, objects loaded into the kernel) and opens lock files
# there with `exec 9>`, which follows a symlink; a lock any user can open, any user
# can hold (flock needs only a read-only fd). Made 0700; one found with wider read
# bits (older bpfleet made 0755) is tightened; a symlink, a non-directory, another
# owner, or group/world write (its contents cannot be trusted) is refused, saying
# what to do.
root_dirs() {
  for _rd_dir in "$@"; do
    [ -L "$_rd_dir" ] || [ -e "$_rd_dir" ] || mkdir -m 0700 -- "$_rd_dir" 2>/dev/null || true
    if [ -L "$_rd_dir" ] || [ ! -d "$_rd_dir" ]; then
      echo "bpfleet: refusing $_rd_dir: it is a symlink or not a directory, and bpfleet keeps its locks, revert guards, objects and boot files only in directories root alone can write. Remove it and retry." >&2; return 1
    fi
    _rd_owner=$(stat -c %u -- "$_rd_dir"); _rd_mode=$(stat -c %a -- "$_rd_dir")
    if [ "$_rd_owner" != 0 ]; then
      echo "bpfleet: refusing $_rd_dir: it is owned by uid $_rd_owner, not root, and bpfleet keeps its locks, revert guards, objects and boot files only in directories root alone can write. Find out who made it, remove it and retry." >&2; return 1
    fi
    if [ $((0$_rd_mode & 022)) -ne 0 ]; then
      echo "bpfleet: refusing $_rd_dir: it is writable by group or others (mode $_rd_mode), so anything in it may have been planted. Remove it and retry; bpfleet makes it again, mode 0700." >&2; return 1
    fi
    [ "$_rd_mode" = 700 ] || chmod 0700 -- "$_rd_dir"
  done
}

## xdp chain
# The chain of bpfleet XDP programs on one interface (provider/remote/xdpHook.ts):
# every script that changes a chain, and a chain member's boot restore, defines these.
# All values arrive as arguments.
# lock DEV: serialises chain changes on one interface (fd 9, released on exit), in
#   root's own directory (root_dirs); /run/bpfleet is RUN_DIR (bpfHost.ts).
# id_of PIN: the id of a pinned program, or nothing.
# on_hook DEV ID: whether program ID is what DEV's hook runs (an XDP program id
#   cannot appear on a TC hook, so finding it in `net show` is enough).
# slot_id CHAIN SLOT: the id of the program in a slot, or nothing.
# hook_id DEV: the id of the XDP program DEV's hook runs, or nothing.
# detach_hook DEV: takes whatever XDP program off DEV's hook, in either mode.
# leave DEV DIR SLOT IDS...: empties SLOT if it holds one of IDS; an empty chain's
#   dispatcher is detached and removed.
lock() {
  root_dirs /run/bpfleet || exit 1
  lockfile="/run/bpfleet/xdp-chain-$(printf %s "$1" | tr -c 'A-Za-z0-9_-' '%').lock"; umask_was=$(umask); umask 077
  exec 9>"$lockfile"; umask "$umask_was"
  flock -w 60 9 || { echo "bpfleet: waited 60 s for the XDP chain lock of $1 ($lockfile) in vain: another bpfleet run or boot restore on this host holds it" >&2; return 1; }
}
id_of() { bpftool -j prog show pinned "$1" 2>/dev/null | grep -o '"id":[0-9]*' | head -n 1 | cut -d: -f2; }
on_hook() { [ -n "$2" ] && bpftool -j net show dev "$1" 2>/dev/null | grep -q "\"id\":$2[,}]"; }
slot_id() { bpftool -j map lookup pinned "$1" key "$2" 0 0 0 2>/dev/null | grep -o '"formatted":{[^}]*}' | grep -o '"value":[0-9]*' | cut -d: -f2; }
hook_id() { bpftool -j net show dev "$1" 2>/dev/null | grep -o '"xdp":\[{[^]]*"id":[0-9]*' | grep -o '[0-9]*$' | head -n 1; }
detach_hook() { ip link set dev "$1" xdpgeneric off 2>/dev/null; ip link set dev "$1" xdpdrv off 2>/dev/null; true; }
leave() {
  dev=$1; dir=$2; slot=$3; shift 3
  held=$(slot_id "$dir/maps/xdp_chain" "$slot")
  for id in "$@"; do
    if [ -n "$held" ] && [ "$held" = "$id" ]; then bpftool map delete pinned "$dir/maps/xdp_chain" key "$slot" 0 0 0; fi
  done
  if [ -e "$dir/prog" ] && [ "$(bpftool -j map dump pinned "$dir/maps/xdp_chain" 2>/dev/null)" = "[]" ]; then
    if on_hook "$dev" "$(id_of "$dir/prog")"; then detach_hook "$dev"; fi
    rm -rf -- "$dir"
    rmdir -- "${dir%/*}" 2>/dev/null
  fi
  true
}

## systemd
# systemd_here: whether systemd manages this mount namespace. systemctl only then: a
# container or a namespace sharing /run with a systemd host would otherwise reload a
# manager that cannot see the unit we wrote.
systemd_here() { [ -d /run/systemd/system ] && [ "$(readlink /proc/1/ns/mnt)" = "$(readlink /proc/self/ns/mnt)" ]; }

## xdp chain survey
# xdp_chain_sections DISPATCHER_DIR PIN_ROOT: the sections "@@dispatcher" (its
# program), "@@chain" (its xdp_chain map) and "@@owners" (the id and pin of every
# bpfleet program under PIN_ROOT, so a message can name who holds a slot) of an
# interface's bpfleet XDP chain (xdpHook.ts); nothing when DISPATCHER_DIR is empty.
# It sets fallback, as json_or's callers do.
xdp_chain_sections() {
  if [ -n "$1" ]; then
    fallback=null
    echo "@@dispatcher"; json_or bpftool -j prog show pinned "$1/prog"
    fallback="[]"
    echo "@@chain"; json_or bpftool -j map dump pinned "$1/maps/xdp_chain"
    echo "@@owners"
    for _xc_pin in "$2"/*/*/prog; do
      [ -e "$_xc_pin" ] || continue
      _xc_id=$(bpftool -j prog show pinned "$_xc_pin" 2>/dev/null | grep -o '"id":[0-9]*' | head -n 1 | cut -d: -f2)
      [ -n "$_xc_id" ] && echo "$_xc_id $_xc_pin"
    done
  fi
}

## live flows
# count_live_flows CONFIG_PIN FLOWS_PIN: prints how many of a TcPolicy's flows are
# live (tcPolicy/hostState.ts). Flows are counted on the host: a full table is
# ~70 MB of JSON. The program treats an entry idle past its timeout as gone but
# leaves it for the LRU to reclaim, so the table holds stale entries too. The count
# applies the program's own test (idle < the timeout of the flow's protocol and
# state, tc_policy.bpf.c flow_track) against CLOCK_MONOTONIC, the clock of
# bpf_ktime_get_ns(): /proc/timer_list's "now at" (ktime_get()); /proc/uptime
# (CLOCK_BOOTTIME, ahead by the time spent suspended) only if that is unreadable.
# Each raw entry of the JSON dumps is one line after tr: the config's (a 4-byte key)
# gives the three timeouts, a flow's (a 40-byte key) its protocol (key byte 36),
# last_seen_ns (value bytes 0-7, little-endian) and state (value byte 8). The
# program subtracts in u64, so a last_seen "before boot" (a host up for less than a
# timeout, an entry written by hand) wraps: idle time does too here. awk's doubles
# round those numbers to a few microseconds, nothing for timeouts of seconds.
count_live_flows() {
  now=$(awk '/^now at / { print $3; exit }' /proc/timer_list 2>/dev/null) || now=
  [ -n "$now" ] || now=$(awk '{ printf "%.0f", $1 * 1e9 }' /proc/uptime)
  { bpftool -j map dump pinned "$1"; echo; bpftool -j map dump pinned "$2"; } | tr '{' '\n' | awk -v now="$now" '
    BEGIN { for (i = 0; i < 256; i++) hex[sprintf("%02x", i)] = i; live = 0; have_cfg = 0 }
    function bytes(text, out,   n, i, t) {
      gsub(/"|0x|\[|\]/, "", text)
      n = split(text, t, ",")
      for (i = 1; i <= n; i++) out[i - 1] = hex[t[i]]
      return n
    }
    function u64(b, at,   v, i) { v = 0; for (i = 7; i >= 0; i--) v = v * 256 + b[at + i]; return v }
    /^"key":\["0x/ {
      k = $0; sub(/^"key":/, "", k); sub(/,"value":.*/, "", k)
      v = $0; sub(/.*"value":/, "", v); sub(/\].*/, "", v)
      klen = bytes(k, kb); bytes(v, vb)
      if (klen == 4) { established = u64(vb, 0); transitory = u64(vb, 8); other = u64(vb, 16); have_cfg = 1; next }
      if (klen != 40) next
      if (!have_cfg) { live++; next }
      timeout = kb[36] != 6 ? other : (vb[8] == 1 ? established : transitory)
      idle = now - u64(vb, 0)
      if (idle < -2 ^ 63) idle += 2 ^ 64
      if (idle < timeout) live++
    }
    END { print live }
  '
}
