# shellcheck shell=sh
# What a resource's maps cost the kernel (xdpFirewall/hostState.ts): one JSON object
# per pinned map under `maps`, one a line (bytes_memlock is the kernel's own account).
maps=$1
for pin in "$maps"/*; do [ -e "$pin" ] && bpftool -j map show pinned "$pin" && echo; done
exit 0
