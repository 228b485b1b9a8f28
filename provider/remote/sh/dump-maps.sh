# shellcheck shell=sh
# One round trip for every map a resource reads (mapOperations.ts dumpMaps): each
# dump is framed by a marker line. The arguments are the map pins.
for pin in "$@"; do
  echo "@@map $pin"
  bpftool -j map dump pinned "$pin" || echo "@@missing"
  echo
done
