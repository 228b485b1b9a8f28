# shellcheck shell=sh
# The routes to the management peer and to the tunnel's remote, in one round trip
# (trafficMirror/guard.ts); "null" for an empty address or no route.
management=$1 underlay=$2
route() { if [ -n "$1" ]; then ip -j route get "$1" 2>/dev/null || echo null; else echo null; fi; }
echo "@@management"; route "$management"
echo "@@underlay"; route "$underlay"
