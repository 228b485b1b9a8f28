# shellcheck shell=sh
# Records the next version a resource applied from its difference to the version it
# recorded before (appliedSets.ts patchAppliedStep), instead of sending the whole copy
# again: stdin holds the keys to remove, each "-KEY" on a line, and the keys to add,
# "+KEY". The base is `.NAME.old`, where holdAppliedStep moved the copy before the
# maps changed (a run cut in between leaves no record, and the next one dumps the
# maps). The result is written beside it and renamed into place only when its digest
# is `digest` (as applied-digest.sh computes it); otherwise nothing is recorded, the
# base stays, and the step exits 3: the provider then writes the copy whole. Every
# directory is root's alone (root_dirs), as for applied-write.sh.
state=$1 dir=$2 kind=$3 name=$4 digest=$5
root_dirs "$state" "$dir" "$dir/$kind" || exit 1
umask 077
export LC_ALL=C
d=$dir/$kind
base=$d/.$name.old tmp=$d/.$name.tmp
[ -f "$base" ] || { echo "bpfleet: $base is missing: no recorded copy to patch" >&2; exit 3; }
rm -f -- "$tmp" "$tmp.add" "$tmp.del"
# Sorted as the copy is (bytewise): comm drops the removed keys in one pass, sort -m
# merges the added ones in; nothing sorts the 100k keys again.
if ! { cat > "$tmp.in" &&
  sed -n 's/^+//p' "$tmp.in" | sort -u > "$tmp.add" &&
  sed -n 's/^-//p' "$tmp.in" | sort -u > "$tmp.del" &&
  comm -23 --nocheck-order -- "$base" "$tmp.del" > "$tmp.kept" &&
  sort -m -u -- "$tmp.kept" "$tmp.add" > "$tmp"; }; then
  rm -f -- "$tmp" "$tmp.in" "$tmp.add" "$tmp.del" "$tmp.kept"
  exit 1
fi
rm -f -- "$tmp.in" "$tmp.add" "$tmp.del" "$tmp.kept"
if [ -s "$tmp" ]; then got=$(sha256sum < "$tmp"); else got=$(printf '\n' | sha256sum); fi
if [ "${got%% *}" != "$digest" ]; then
  rm -f -- "$tmp"
  echo "bpfleet: the patched copy has digest ${got%% *}, not $digest: the recorded copy was not the version planned from" >&2
  exit 3
fi
mv -f -- "$tmp" "$d/$name" && rm -f -- "$base"
