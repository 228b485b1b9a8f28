# shellcheck shell=sh
# What a host has for one TcPolicy (tcPolicy/hostState.ts surveyPolicy). $1
# interface, $2 pin dir, $3 object path or "", $4 peer or "", $5 "count" or "",
# $6 the config map's name, $7 the flow table's name, $8 and $9 the ingress and
# egress programs' names, then the names of the maps to dump.
# A section per fact, framed by a marker line; a failing command prints the
# fallback (bpftool -j prints its errors as JSON on stdout, so its output is
# dropped).
iface=$1; dir=$2; object=$3; peer=$4; flows=$5; config_map=$6; flows_map=$7; ingress=$8; egress=$9; shift 9
# shellcheck disable=SC2034 # json_or (prelude.sh) reads it
fallback="[]"
echo "@@links"; ip -j link show
echo "@@qdisc"; json_or tc -j qdisc show dev "$iface"
echo "@@filters ingress"; json_or tc -j filter show dev "$iface" ingress
echo "@@filters egress"; json_or tc -j filter show dev "$iface" egress
# shellcheck disable=SC2034
fallback=null
for prog in "$ingress" "$egress"; do echo "@@prog $prog"; json_or bpftool -j prog show pinned "$dir/progs/$prog"; done
echo "@@object"; if [ -n "$object" ] && [ -f "$object" ]; then echo true; else echo false; fi
echo "@@btf"; if [ -e /sys/kernel/btf/vmlinux ]; then echo true; else echo false; fi
echo "@@route"; if [ -n "$peer" ]; then json_or ip -j route get "$peer"; else echo null; fi
echo "@@flows"
if [ -n "$flows" ] && [ -e "$dir/maps/$flows_map" ]; then count_live_flows "$dir/maps/$config_map" "$dir/maps/$flows_map"; else echo null; fi
for map in "$@"; do echo "@@map $map"; json_or bpftool -j map dump pinned "$dir/maps/$map"; done
