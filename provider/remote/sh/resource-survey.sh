# shellcheck shell=sh
# What a resource needs to know about a host before it changes anything
# (resourceSurvey.ts surveyResource). $1 interface, $2 the resource's program pin,
# $3 its object's remote path, $4 the management peer, "" (none), or "@ssh": the
# first field of $SSH_CONNECTION, which a root login sees (sudo clears it), saving
# the round trip that asks the login user; $5 the interface's XDP dispatcher pin dir
# or "" (no chain sections), $6 the pin root.
# Each section is framed by a marker line; a missing thing prints "null" (bpftool -j
# prints its error as JSON on stdout, so a failed command's output is dropped).
# shellcheck disable=SC2034 # json_or (prelude.sh) reads it
fallback=null
peer=$4
if [ "$peer" = "@ssh" ]; then peer=${SSH_CONNECTION%% *}; echo "@@peer"; echo "$peer"; fi
echo "@@links"; ip -j link show
echo "@@net"; json_or bpftool -j net show dev "$1"
echo "@@prog"; json_or bpftool -j prog show pinned "$2"
echo "@@object"; if [ -f "$3" ]; then echo true; else echo false; fi
echo "@@route"; if [ -n "$peer" ]; then json_or ip -j route get "$peer"; else echo null; fi
xdp_chain_sections "$5" "$6"
