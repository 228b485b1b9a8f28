# shellcheck shell=sh
# Empties a chain slot if it holds one of this resource's programs; the last member
# out takes the dispatcher with it.
# $1 dev, $2 dispatcher dir, $3 slot, $4 (may be empty) xdp_chain_next pin to reset
# (to 0: the program runs alone again), $5... ids that are this resource's.
dev=$1; dir=$2; slot=$3; next=$4; shift 4
lock "$dev"
leave "$dev" "$dir" "$slot" "$@"
if [ -n "$next" ] && [ -e "$next" ]; then bpftool map update pinned "$next" key 0 0 0 0 value 0 0 0 0; fi
exit 0
