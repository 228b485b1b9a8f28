# shellcheck shell=sh
# Loads an object's program(s) against the resource's pinned maps (programLoad.ts).
# $1 object, $2 pin dir, $3 type, $4 load|loadall, $5 the interface's shared
# xdp_chain pin or "", $6 the state dir, $7 the object cache.
# Existing map pins are reused (flow state and entries survive an upgrade); maps the
# object adds are pinned beside them. The new program is pinned as prog_new (`load`),
# or every program as progs_new/<function> (`loadall`: programs sharing their maps),
# so the caller can swap hooks before they replace prog(s). A shared xdp_chain is
# used instead of a private one and never pinned into the resource's own maps.
# A failing load names its command line on stderr, so the error says which it was.
# Maps that an earlier object pinned and no object has any more are not offered to
# the load (bpftool refuses a map the object lacks) and are unpinned once it loaded;
# the program still attached holds its own references until it is swapped out.
# XdpFirewall's direct-mapped fw_v4_slots/fw_v6_slots became fw_v4_ways/fw_v6_ways
# (the upgrade fills those from the records: missingIndex).
set -e
retired=" fw_v4_slots fw_v6_slots "
maps="$2/maps"; staged="$2/maps_staged"; chain="${5:-}"
case "$1" in "$7"/*) root_dirs "$6" "$7" ;; esac
case "$4" in load) new="$2/prog_new" ;; loadall) new="$2/progs_new" ;; *) echo "bad load verb $4" >&2; exit 2 ;; esac
mkdir -p "$maps"
rm -rf "$staged" "$new"
set -- bpftool prog "$4" "$1" "$new" type "$3"
for pin in "$maps"/*; do
  [ -e "$pin" ] || continue
  name=$(basename "$pin")
  if [ -n "$chain" ] && [ "$name" = xdp_chain ]; then continue; fi
  case "$retired" in *" $name "*) continue ;; esac
  set -- "$@" map name "$name" pinned "$pin"
done
if [ -n "$chain" ]; then set -- "$@" map name xdp_chain pinned "$chain"; fi
"$@" pinmaps "$staged" || { echo "failed: $*" >&2; exit 1; }
if [ -n "$chain" ]; then rm -f "$staged/xdp_chain"; fi
for pin in "$staged"/*; do
  [ -e "$pin" ] || continue
  name=$(basename "$pin")
  if [ -e "$maps/$name" ]; then rm -f "$pin"; else mv "$pin" "$maps/$name"; fi
done
rmdir "$staged"
for name in $retired; do rm -f "$maps/$name"; done
