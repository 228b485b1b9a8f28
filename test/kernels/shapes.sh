#!/bin/sh
# Runs in a matrix guest: the JSON that each bpftool prints for the commands whose
# output the provider parses (net show, prog show, map dump, batch lookups), on the
# same kernel and the same objects, one file per bpftool under $2, to compare.
# $1: the repository; $2: output dir; then name=path pairs of bpftools.
set -u
repo=$1 out=$2; shift 2
ip link add kmxa type veth peer name kmxb; ip link set kmxa up; ip link set kmxb up
tc qdisc add dev kmxa clsact
for pair in "$@"; do
  name=${pair%%=*} bt=${pair#*=}
  d=/sys/fs/bpf/kmxshape; rm -rf $d; mkdir -p $d
  f="$out/shapes-$name.txt"; : > "$f"
  sec() { echo "@@$1" >> "$f"; shift; "$@" >> "$f" 2>&1; echo >> "$f"; }
  $bt prog load "$repo/bpf/obj/xdp_firewall.bpf.o" $d/fw type xdp pinmaps $d/fwmaps >> "$f" 2>&1
  $bt prog load "$repo/bpf/obj/xdp_dispatcher.bpf.o" $d/disp type xdp pinmaps $d/dispmaps >> "$f" 2>&1
  $bt prog load "$repo/bpf/obj/tc_mirror.bpf.o" $d/mir type classifier pinmaps $d/mirmaps >> "$f" 2>&1
  $bt net attach xdpgeneric pinned $d/fw dev kmxa >> "$f" 2>&1
  tc filter add dev kmxa ingress prio 1 handle 1 bpf da object-pinned $d/mir >> "$f" 2>&1
  printf '%s\n' "map update pinned $d/fwmaps/deny_v4_exact key hex 0a 00 00 01 value hex 01" \
    "map update pinned $d/dispmaps/xdp_chain key hex 00 00 00 00 value pinned $d/fw" > /tmp/kmx-batch.txt
  sec batch-update $bt batch file /tmp/kmx-batch.txt
  sec net $bt -j net show dev kmxa
  sec prog $bt -j prog show pinned $d/fw
  sec dump-hash $bt -j map dump pinned $d/fwmaps/deny_v4_exact
  sec dump-percpu $bt -j map dump pinned $d/fwmaps/fw_stats
  sec dump-progarray $bt -j map dump pinned $d/dispmaps/xdp_chain
  printf '%s\n' "map lookup pinned $d/fwmaps/fw_stats key hex 00 00 00 00" "map lookup pinned $d/fwmaps/deny_v4_exact key hex 0a 00 00 01" > /tmp/kmx-lookup.txt
  sec batch-lookup $bt -j batch file /tmp/kmx-lookup.txt
  sec detach $bt net detach xdpgeneric dev kmxa
  tc filter del dev kmxa ingress prio 1 handle 1 bpf
  rm -rf $d
done
