# shellcheck shell=sh
# Tools, bpffs and the kernel's BPF features, once per session (preflight.ts).
# Exit codes 3 and 4 carry the two failures a user must fix on the host.
missing=""
for tool in bpftool ip tc; do command -v "$tool" >/dev/null 2>&1 || missing="$missing $tool"; done
if [ -n "$missing" ]; then echo "missing:$missing" >&2; exit 3; fi
if [ "$(stat -f -c %T /sys/fs/bpf 2>/dev/null)" != "bpf_fs" ]; then
  mount -t bpf bpf /sys/fs/bpf 2>&1 >&2 || { echo "bpffs is not mounted at /sys/fs/bpf and mounting it failed" >&2; exit 4; }
fi
echo "kernel=$(uname -r)"
echo "bpftool=$(bpftool version | head -n 1)"
echo "@@features"
bpftool -j feature probe kernel
