# shellcheck shell=sh
# Runs packet expectations (provider/expect/hostRun.ts) through probe copies of
# what is attached, in one exec. A probe copy is the same object loaded again,
# sharing only the maps the program reads (provider/expect/probe.ts SHARED_MAPS):
# its flow tables, NAT records, counters and chain are its own, so a probe never
# reaches live state. $1 "xdp" or "tc"; $2 the interface (XDP: its ifindex goes into
# each run's context, so the program sees its real ingress interface); $3 the
# interface dispatcher's object when the probe runs through its XDP chain, else "";
# $4 one line per member: "<slot or -> <object> <live pin dir> <shared maps, comma
# separated>" (a chain member's include its xdp_chain_next; its copy sits in its live
# slot of the dispatcher copy's scratch xdp_chain).
# $5 "1" to print each XDP run's output frame (a balancer's backend is read from it).
# stdin, one item a line: "frame <name> <length> <base64>", "round" (every round gets fresh
# copies: empty flow tables), "run <program> <frame>" (program: "prog" for XDP, the
# TC function name otherwise). Prints "@@round <n>" and the JSON of that round's
# `bpftool -j batch` of `prog run` lines, then (with $5) "@@out <run>" and each run's
# output frame in base64. Forks are what a long list costs here, so each frame takes
# one (base64 -d) and each frame length one context file.
type=$1 iface=$2 dispatcher=$3 members=$4 outputs=$5
set -e
name_ok() { case "$1" in '' | *[!A-Za-z0-9_]*) echo "bad name: $1" >&2; exit 2 ;; esac; }
# le32 N: N as 4 little-endian bytes.
# shellcheck disable=SC2059 # the format is the octal escapes built here
le32() { printf "$(printf '\\%03o\\%03o\\%03o\\%03o' $(($1 & 255)) $((($1 >> 8) & 255)) $((($1 >> 16) & 255)) $((($1 >> 24) & 255)))"; }
work=$(mktemp -d)
probe=/sys/fs/bpf/bpfleet-probe-$$
# bpffs refuses a name with a dot (EPERM), so the pin directory has none; remove only what is there.
drop_copies() { if [ -e "$probe" ]; then rm -rf "$probe"; fi; }
trap 'rm -rf "$work"; drop_copies' EXIT
trap 'exit 1' HUP INT TERM PIPE
case "$type" in xdp) btype=xdp ;; tc) btype=classifier ;; *) echo "bad program type $type" >&2; exit 2 ;; esac
ifindex=$(cat "/sys/class/net/$iface/ifindex")

load_copies() {
  drop_copies
  mkdir -p "$probe"
  if [ -n "$dispatcher" ]; then bpftool prog load "$dispatcher" "$probe/prog" type xdp pinmaps "$probe/maps"; fi
  while read -r slot object live shared; do
    [ -n "$object" ] || continue
    if [ "$type" = tc ]; then
      dest=$probe
      set -- bpftool prog loadall "$object" "$probe/progs" type classifier
    elif [ -n "$dispatcher" ]; then
      dest=$probe/m$slot
      mkdir -p "$dest"
      set -- bpftool prog load "$object" "$dest/prog" type xdp map name xdp_chain pinned "$probe/maps/xdp_chain"
    else
      dest=$probe
      set -- bpftool prog load "$object" "$probe/prog" type xdp
    fi
    for map in $(printf %s "$shared" | tr , ' '); do
      name_ok "$map"
      if [ -e "$live/maps/$map" ]; then set -- "$@" map name "$map" pinned "$live/maps/$map"; fi
    done
    "$@" pinmaps "$dest/maps_probe" || { echo "failed: $*" >&2; exit 1; }
    if [ -n "$dispatcher" ]; then bpftool map update pinned "$probe/maps/xdp_chain" key "$slot" 0 0 0 value pinned "$dest/prog"; fi
  done <<EOF
$members
EOF
}

rounds=0 runs=0 len=
while read -r word name arg data; do
  case "$word" in
    frame)
      name_ok "$name"
      name_ok "$arg"
      printf %s "$data" | base64 -d > "$work/$name"
      if [ "$btype" = xdp ] && [ ! -e "$work/ctx$arg" ]; then
        { le32 0; le32 "$arg"; le32 0; le32 "$ifindex"; le32 0; le32 0; } > "$work/ctx$arg"
      fi
      eval "len_$name=\$arg"
      ;;
    round) rounds=$((rounds + 1)); : > "$work/batch$rounds" ;;
    run)
      name_ok "$name"
      name_ok "$arg"
      runs=$((runs + 1))
      if [ "$btype" = xdp ]; then
        eval "len=\$len_$arg"
        echo "prog run pinned $probe/prog data_in $work/$arg data_out $work/out$runs data_size_out 4096 ctx_in $work/ctx$len" >> "$work/batch$rounds"
      else
        echo "prog run pinned $probe/progs/$name data_in $work/$arg" >> "$work/batch$rounds"
      fi
      ;;
    '') ;;
    *) echo "bad line: $word" >&2; exit 2 ;;
  esac
done

r=1
while [ "$r" -le "$rounds" ]; do
  load_copies
  echo "@@round $r"
  bpftool -j batch file "$work/batch$r"
  echo
  drop_copies
  r=$((r + 1))
done
if [ "$btype" = xdp ] && [ "$outputs" = 1 ]; then
  i=1
  while [ "$i" -le "$runs" ]; do
    echo "@@out $i"
    base64 < "$work/out$i" | tr -d '\n'
    echo
    i=$((i + 1))
  done
fi
