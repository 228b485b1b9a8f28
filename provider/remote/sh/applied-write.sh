# shellcheck shell=sh
# Records the content a resource applied (appliedSets.ts writeAppliedStep): stdin, its
# sorted keys, becomes `dir`/`kind`/`name`. Every directory is root's alone
# (root_dirs): a copy anyone could edit would let them decide what the next update
# removes. Written to a temporary file and renamed, so a cut session leaves the old
# copy or the new one, never half of one; a copy held aside for a patch
# (applied-hold.sh) is dropped.
state=$1 dir=$2 kind=$3 name=$4
root_dirs "$state" "$dir" "$dir/$kind" || exit 1
umask 077
cat > "$dir/$kind/.$name.tmp" && mv -f "$dir/$kind/.$name.tmp" "$dir/$kind/$name" && rm -f -- "$dir/$kind/.$name.old"
