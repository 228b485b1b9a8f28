# shellcheck shell=sh
# What a resource recorded as applied (appliedSets.ts readApplied): a first line
# "present" and the file's keys, or "absent" when it records nothing.
path=$1
[ -f "$path" ] || { echo absent; exit 0; }
echo present
cat -- "$path"
