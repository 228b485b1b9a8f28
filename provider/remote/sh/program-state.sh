# shellcheck shell=sh
# A resource's program, the interface's XDP attachment, the resource's counters
# and the interface's XDP chain (resourceSurvey.ts programState). $1 interface,
# $2 the program pin, $3 the counters map pin, $4 the interface's XDP dispatcher
# pin dir or "" (no chain sections), $5 the pin root.
# shellcheck disable=SC2034 # json_or (prelude.sh) reads it
fallback=null
echo "@@prog"; json_or bpftool -j prog show pinned "$2"
echo "@@net"; json_or bpftool -j net show dev "$1"
fallback="[]"
echo "@@stats"; json_or bpftool -j map dump pinned "$3"
xdp_chain_sections "$4" "$5"
