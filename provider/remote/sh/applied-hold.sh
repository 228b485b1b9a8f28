# shellcheck shell=sh
# Moves a resource's applied copy aside before its maps change (appliedSets.ts
# holdAppliedStep): a run cut before the new version is recorded leaves no record,
# so the next one dumps the maps instead of trusting a stale copy, and the copy stays
# there as the base applied-patch.sh brings to the new version by its difference.
path=$1 held=$2
[ ! -f "$path" ] || mv -f -- "$path" "$held"
