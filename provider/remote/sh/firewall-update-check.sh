# shellcheck shell=sh
# The preconditions of an XdpFirewall update planned without a survey
# (xdpFirewall/lifecycle.ts, optimisticUpdate): the first step of the exec that
# carries the change, so the common one-entry update costs no exec of its own
# for the survey. The provider planned the batch from the version it applied last
# (its state); this checks, reading only, that the host still is as that plan
# assumes: the management session comes from $peer (the provider's guess, checked
# here against $SSH_CONNECTION; a root login sees it) and, with `route_dev`, is
# routed over that interface (the lockout guard is armed for it); the firewall's
# program is pinned at `pin` with id `id` and runs alone on `iface` in `mode`; the
# applied copy at `applied` is the version `digest`; the map pins given after
# these arguments are there. When any of it does not hold it changes nothing and
# exits 10 (the steps behind it do not run), saying what differed: the provider
# then surveys the host and plans from what it really has.
pin=$1 id=$2 iface=$3 mode=$4 applied=$5 digest=$6 peer=$7 route_dev=$8
shift 8
miss() { echo "bpfleet: $*" >&2; exit 10; }
seen=${SSH_CONNECTION%% *}
if [ -z "$seen" ] || [ "${seen#::ffff:}" != "${peer#::ffff:}" ]; then miss "the management session comes from ${seen:-an unknown address}, not $peer"; fi
if [ -n "$route_dev" ]; then
  dev=$(ip -o route get "$seen" 2>/dev/null | sed -n 's/.* dev \([^ ]*\).*/\1/p')
  [ "$dev" = "$route_dev" ] || miss "the management session is routed over ${dev:-no interface}, not $route_dev"
fi
for map in "$@"; do [ -e "$map" ] || miss "$map is missing"; done
prog=$(bpftool prog show pinned "$pin" 2>/dev/null) || miss "no program is pinned at $pin"
[ "${prog%%:*}" = "$id" ] || miss "the program pinned at $pin is not id $id"
# bpftool -j prints an XDP attachment as {"devname":…,"ifindex":…,"mode":…,"id":…}.
bpftool -j net show dev "$iface" 2>/dev/null | grep -qF -- "\"mode\":\"$mode\",\"id\":$id}" || miss "program $id does not run alone on $iface in $mode mode"
if [ ! -f "$applied" ] || [ -L "$applied" ]; then miss "$applied is missing"; fi
if [ -s "$applied" ]; then got=$(sha256sum < "$applied") || exit 10; else got=$(printf '\n' | sha256sum) || exit 10; fi
[ "${got%% *}" = "$digest" ] || miss "the applied copy is version ${got%% *}, not $digest"
exit 0
