# shellcheck shell=sh
# Persists one resource's boot restore (bootRestore.ts persistBootRestore) and
# installs and enables the shared unit. dir: the resource's boot directory; batch:
# its batch file's name, whose text arrives on stdin when batch_on_stdin is "yes";
# restore_text: its restore.sh; entry, unit: the paths of the entry point and the
# unit, with their texts; unit_link: the unit's enablement link. Each file: temp
# name, then rename; unchanged files are left alone.
dir=$1 batch=$2 batch_on_stdin=$3 restore_text=$4 entry=$5 entry_text=$6 unit=$7 unit_text=$8 unit_link=$9
set -e
root_dirs "${dir%/*/*/*}" "${dir%/*/*}" "${dir%/*}" "$dir"
put() { printf '%s' "$2" > "$1.tmp.$$"; chmod "$3" "$1.tmp.$$"; mv -f -- "$1.tmp.$$" "$1"; }
same() { [ -f "$1" ] && [ "$(cat -- "$1")" = "$(printf '%s' "$2")" ]; }
mkdir -p -- "$(dirname -- "$unit")" "$(dirname -- "$unit_link")"
if [ "$batch_on_stdin" = yes ]; then cat > "$dir/$batch.tmp.$$"; mv -f -- "$dir/$batch.tmp.$$" "$dir/$batch"; fi
same "$dir/restore.sh" "$restore_text" || put "$dir/restore.sh" "$restore_text" 0755
for old in "$dir"/*.batch; do [ "$old" = "$dir/$batch" ] || rm -f -- "$old"; done
same "$entry" "$entry_text" || put "$entry" "$entry_text" 0755
changed=0
same "$unit" "$unit_text" || { put "$unit" "$unit_text" 0644; changed=1; }
if [ "$(readlink -- "$unit_link" 2>/dev/null)" != "$unit" ]; then
  ln -s -- "$unit" "$unit_link.tmp.$$"; mv -f -- "$unit_link.tmp.$$" "$unit_link"; changed=1
fi
if [ "$changed" = 1 ] && systemd_here; then systemctl daemon-reload; fi
