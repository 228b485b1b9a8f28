# shellcheck shell=sh
# Loads and pins the XDP dispatcher of interface `dev` in `dir` from `object`, unless
# it is there; attaching waits for the first member (xdp-chain-enter.sh).
dev=$1 dir=$2 object=$3
set -e
lock "$dev"
if [ -z "$(id_of "$dir/prog")" ]; then
  rm -rf -- "$dir"
  mkdir -p "$dir"
  bpftool prog load "$object" "$dir/prog" type xdp pinmaps "$dir/maps"
fi
