# shellcheck shell=sh
# Adds a TrafficMirror's tunnel (trafficMirror/tunnel.ts). $1 device, $2 alias,
# then `ip link add`'s arguments after the name. The alias is set in the same round
# trip; a device that cannot be marked as ours is removed again rather than left
# behind unowned. No IPv6 link-local address: the tunnel then sends nothing of its
# own (no MLD, no neighbour or router solicitations), and the collector sees only
# copies. Exit 3: `ip link add` failed.
dev=$1; alias=$2; shift 2
ip link add "$dev" "$@" || exit 3
ip link set dev "$dev" addrgenmode none 2>/dev/null || true
if ! ip link set dev "$dev" alias "$alias" up; then ip link del "$dev"; exit 1; fi
