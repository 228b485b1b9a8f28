# shellcheck shell=sh
# The preconditions of an XdpFirewall update planned without a survey
# (xdpFirewall/lifecycle.ts, optimisticUpdate): the first step of the exec that
# carries the change, so the common one-entry update costs no exec of its own
# for the survey. The provider planned the batch from the version it applied last
# (its state); this checks, reading only, that the host still is as that plan
# assumes: the management session comes from one of `peers` (space-separated: the
# provider's guess, its own socket address, and the address the host reported at
# the last update, xdpFirewall/managementSession.ts), checked here against
# $SSH_CONNECTION, which a root login sees; with `route_dev`, the host routes the
# address it sees over that interface (the lockout guard is armed when it is the
# firewall's, and not when it is another); the firewall's program is pinned at
# `pin` with id `id` and runs alone on `iface` in `mode`; the applied copy at
# `applied` is the version `digest`; the map pins given after these arguments are
# there. When any of it does not hold it changes nothing and exits 10 (the steps
# behind it do not run), saying on stderr what differed: the provider logs it,
# surveys the host and plans from what it really has. When it holds, it prints
# "<address> <interface>" as the host sees the session, for the provider to record.
pin=$1 id=$2 iface=$3 mode=$4 applied=$5 digest=$6 peers=$7 route_dev=$8
shift 8
miss() { echo "bpfleet: $*" >&2; exit 10; }
seen=${SSH_CONNECTION%% *}
# A dual-stack sshd shows an IPv4 peer as ::ffff:a.b.c.d; the provider sends the IPv4.
case $seen in ::ffff:*.*) seen=${seen#::ffff:} ;; esac
expected() { printf '%s' "$peers" | sed 's/ / or /g'; }
[ -n "$seen" ] || miss "the management session's address is unknown here (no \$SSH_CONNECTION), so it cannot be checked against $(expected)"
# Quoted, $seen is matched as text, not as a pattern; the list is ours, single spaces.
case " $peers " in *" $seen "*) ;; *) miss "the management session comes from $seen, not from $(expected) as the provider expected" ;; esac
dev=$(ip -o route get "$seen" 2>/dev/null | sed -n 's/.* dev \([^ ]*\).*/\1/p')
if [ -n "$route_dev" ] && [ "$dev" != "$route_dev" ]; then miss "the management session from $seen is routed over ${dev:-no interface}, not $route_dev"; fi
for map in "$@"; do [ -e "$map" ] || miss "$map is missing"; done
prog=$(bpftool prog show pinned "$pin" 2>/dev/null) || miss "no program is pinned at $pin"
[ "${prog%%:*}" = "$id" ] || miss "the program pinned at $pin is not id $id"
# bpftool -j prints an XDP attachment as {"devname":…,"ifindex":…,"mode":…,"id":…}.
bpftool -j net show dev "$iface" 2>/dev/null | grep -qF -- "\"mode\":\"$mode\",\"id\":$id}" || miss "program $id does not run alone on $iface in $mode mode"
if [ ! -f "$applied" ] || [ -L "$applied" ]; then miss "$applied is missing"; fi
if [ -s "$applied" ]; then got=$(sha256sum < "$applied") || exit 10; else got=$(printf '\n' | sha256sum) || exit 10; fi
[ "${got%% *}" = "$digest" ] || miss "the applied copy is version ${got%% *}, not $digest"
echo "$seen $dev"
exit 0
