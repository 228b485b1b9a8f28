# shellcheck shell=sh
# What a health gate reads about one target (healthGate/targetSurvey.ts). $1 pin dir,
# $2 program pin, $3 interface or "", $4 counter map pin or "", $5 the interface's
# XDP dispatcher pin dir or "" (see remote/xdpHook.ts).
# One framed section per fact; a command that fails prints "null" (bpftool -j
# prints its error as JSON on stdout, so a failed command's output is dropped).
# shellcheck disable=SC2034 # json_or (prelude.sh) reads it
fallback=null
echo "@@dir"; if [ -d "$1" ]; then echo true; else echo false; fi
echo "@@prog"; json_or bpftool -j prog show pinned "$2"
echo "@@net"; if [ -n "$3" ]; then json_or bpftool -j net show dev "$3"; else echo null; fi
echo "@@stats"; if [ -n "$4" ]; then json_or bpftool -j map dump pinned "$4"; else echo null; fi
if [ -n "$5" ]; then
  echo "@@dispatcher"; json_or bpftool -j prog show pinned "$5/prog"
  echo "@@chain"; json_or bpftool -j map dump pinned "$5/maps/xdp_chain"
fi
