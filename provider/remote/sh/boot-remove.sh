# shellcheck shell=sh
# Removes one resource's boot restore (bootRestore.ts removeBootRestore): its
# directory `dir` under `boot`. The unit (`unit` in `unit_dir`), its link in
# `wants` and the entry point go with the last persisted resource.
boot=$1 dir=$2 unit_dir=$3 unit=$4 wants=$5 entry=$6
rm -rf -- "$dir"
rmdir -- "$(dirname -- "$dir")" 2>/dev/null
for script in "$boot"/*/*/restore.sh; do [ -e "$script" ] && exit 0; done
[ -e "$unit_dir/$unit" ] || [ -L "$wants/$unit" ] || [ -e "$entry" ] || exit 0
rm -f -- "$wants/$unit" "$unit_dir/$unit" "$entry"
rmdir -- "$wants" 2>/dev/null
rmdir -- "$boot" 2>/dev/null
if systemd_here; then systemctl daemon-reload; fi
exit 0
