# shellcheck shell=sh
# Adds a clsact qdisc to DEV, recording in MARKER (in root's own RUN_DIR) that
# bpfleet added it (tc.ts addClsactCommand says why). The marker is written before
# the add, so no crash leaves a qdisc bpfleet made without it. When the add fails
# but a clsact is there after all, another bpfleet resource of the same `up` (a
# TcPolicy and a TrafficMirror on one interface) added it a moment earlier: the
# hook is ready, so this is no failure, and the marker stays for whichever leaves last.
dev=$1 marker=$2
set -e
root_dirs "${marker%/*}"
: > "$marker"
tc qdisc add dev "$dev" clsact 2>/dev/null && exit 0
tc qdisc show dev "$dev" | grep -q "qdisc clsact" && exit 0
rm -f -- "$marker"
tc qdisc add dev "$dev" clsact
