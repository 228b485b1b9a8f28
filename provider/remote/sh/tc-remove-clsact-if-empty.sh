# shellcheck shell=sh
# Removes DEV's clsact qdisc when bpfleet added it (CREATED is "yes" when the caller
# did, from before markers existed; otherwise MARKER says so) and no filter, anyone's,
# is left on either hook. Checked and removed in one round trip, so that the window
# in which another tool could add a filter between the two is as short as it can be.
# Prints removed, busy (filters left), absent (no clsact) or foreign (not ours).
dev=$1 marker=$2 created=$3
set -e
tc qdisc show dev "$dev" | grep -q "qdisc clsact" || { rm -f -- "$marker"; echo absent; exit 0; }
[ "$created" = yes ] || [ -e "$marker" ] || { echo foreign; exit 0; }
if [ -n "$(tc filter show dev "$dev" ingress)" ] || [ -n "$(tc filter show dev "$dev" egress)" ]; then echo busy; exit 0; fi
tc qdisc del dev "$dev" clsact
rm -f -- "$marker"
echo removed
