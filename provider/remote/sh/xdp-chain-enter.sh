# shellcheck shell=sh
# Puts a member program into its chain slot and makes sure the dispatcher runs.
# $1 dev, $2 dispatcher dir, $3 slot, $4 member program pin, $5 member's
# xdp_chain_next pin, $6 attach type for an empty hook, $7... ids that are this
# resource's (a slot or hook holding one of them may be taken over).
# Exit 5: the slot belongs to another program; 6: the hook holds a foreign program.
dev=$1; dir=$2; slot=$3; prog=$4; next=$5; type=$6; shift 6
set -e
case "$slot" in [0-7]) ;; *) echo "bad chain slot $slot" >&2; exit 2 ;; esac
lock "$dev"
disp=$(id_of "$dir/prog")
[ -n "$disp" ] || { echo "the XDP dispatcher of $dev is not loaded ($dir/prog)" >&2; exit 1; }
own_on_hook=""
for id in "$@"; do if on_hook "$dev" "$id"; then own_on_hook=$id; fi; done
if ! on_hook "$dev" "$disp" && [ -z "$own_on_hook" ] && [ -n "$(hook_id "$dev")" ]; then
  echo "interface $dev has an XDP program bpfleet did not attach" >&2; exit 6
fi
held=$(slot_id "$dir/maps/xdp_chain" "$slot")
if [ -n "$held" ]; then
  mine=""
  for id in "$@"; do if [ "$held" = "$id" ]; then mine=yes; fi; done
  [ -n "$mine" ] || { echo "chain slot $slot of $dev holds program id $held" >&2; exit 5; }
fi
bpftool map update pinned "$next" key 0 0 0 0 value $((slot + 1)) 0 0 0
bpftool map update pinned "$dir/maps/xdp_chain" key "$slot" 0 0 0 value pinned "$prog"
if ! on_hook "$dev" "$disp"; then
  if [ -n "$own_on_hook" ]; then
    # This resource's program was attached alone: one netlink call swaps in the dispatcher.
    mode=$(bpftool -j net show dev "$dev" | grep -o '"mode":"[a-z]*"' | head -n 1 | cut -d'"' -f4)
    case "$mode" in generic) type=xdpgeneric ;; driver) type=xdpdrv ;; offload) type=xdpoffload ;; esac
    bpftool net attach "$type" pinned "$dir/prog" dev "$dev" overwrite
  else
    bpftool net attach "$type" pinned "$dir/prog" dev "$dev"
  fi
fi
