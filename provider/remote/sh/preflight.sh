# shellcheck shell=sh
# Tools, bpffs and the kernel's BPF features (preflight.ts). Exit codes 3 and 4
# carry the two failures a user must fix on the host.
# `bpftool feature probe` loads a test program per type and helper: the dearest
# step of an update (0.1 s of CPU, a second of wall on a busy host), and its answer
# changes only with the kernel or bpftool. So it is kept in `cache` (under
# /var/lib/bpfleet, root's alone: root_dirs, and a file only root wrote) keyed by
# the kernel's release and build and the bpftool binary's identity, and probed
# again when either changes.
# Only what preflight.ts reads is kept and sent: the program types, and the helpers
# of the two program types bpfleet loads (xdp, sched_cls). The whole probe is about
# 120 KB of JSON, which every session of every host sent back before; this is under
# 10 KB. bpftool -j writes compact JSON whose program_types object and helper arrays
# hold no nested braces or brackets, so grep -o can cut them out.
state=$1 cache=$2
missing=""
for tool in bpftool ip tc; do command -v "$tool" >/dev/null 2>&1 || missing="$missing $tool"; done
if [ -n "$missing" ]; then echo "missing:$missing" >&2; exit 3; fi
if [ "$(stat -f -c %T /sys/fs/bpf 2>/dev/null)" != "bpf_fs" ]; then
  mount -t bpf bpf /sys/fs/bpf 2>&1 >&2 || { echo "bpffs is not mounted at /sys/fs/bpf and mounting it failed" >&2; exit 4; }
fi
# "compact": a cache file of an earlier release holds the whole probe; it is not reused.
key=$( { echo compact; uname -r; uname -v; stat -L -c '%d %i %s %Y' "$(command -v bpftool)"; } | sha256sum | cut -c1-32)
file="$cache/$key"
if root_dirs "$state" "$cache" 2>/dev/null && [ -f "$file" ] && [ ! -L "$file" ] && [ "$(stat -c %u "$file")" = 0 ]; then
  cat -- "$file" && exit 0
fi
probe=$(bpftool -j feature probe kernel) || exit 1
types=$(printf '%s\n' "$probe" | grep -o '"program_types": *{[^}]*}')
helpers=$(printf '%s\n' "$probe" | grep -o -e '"xdp_available_helpers": *\[[^]]*\]' -e '"sched_cls_available_helpers": *\[[^]]*\]' | paste -s -d, -)
# Without a program_types object this is no probe (an old bpftool prints its error as
# text): it goes as it came, so preflight.ts names the command and shows what it said.
features=$probe
if [ -n "$types" ]; then features="{$types,\"helpers\":{$helpers}}"; fi
text="kernel=$(uname -r)
bpftool=$(bpftool version | head -n 1)
@@features
$features"
printf '%s\n' "$text"
# Best effort: a host whose state directory cannot be trusted probes every time.
if root_dirs "$state" "$cache" 2>/dev/null; then
  (umask 077 && printf '%s\n' "$text" > "$file.tmp.$$" && mv -f -- "$file.tmp.$$" "$file") 2>/dev/null || rm -f -- "$file.tmp.$$"
fi
exit 0
