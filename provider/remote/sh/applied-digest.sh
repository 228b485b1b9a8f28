# shellcheck shell=sh
# Which version a resource recorded as applied, without its keys (appliedSets.ts
# readAppliedDigestStep): "present DIGEST COUNT", or "absent" when it records
# nothing. An update plans from the versions the controller already holds, found by
# this digest (sharedContent.contentDigest: sha256 of the file, whose keys end each
# with a newline, or of one newline when it is empty), and reads the copy itself only
# when the digest is one it does not know. 1.6 MB at 100k keys stays on the host.
path=$1
[ -f "$path" ] || { echo absent; exit 0; }
if [ -s "$path" ]; then digest=$(sha256sum < "$path") || exit 1; else digest=$(printf '\n' | sha256sum) || exit 1; fi
count=$(wc -l < "$path") || exit 1
echo "present ${digest%% *} $count"
