# shellcheck shell=sh
# An object, on stdin, to its content-addressed path (objectUpload.ts). $1 the
# object cache, $2 the object's path in it, $3 its sha256. The upload is checked
# against the digest on the host before it is renamed into place. A failed write
# (a full disk) or a cut session must not leave the partial file behind.
set -e
root_dirs "${1%/*}" "$1"
tmp="$2.upload.$$"
trap 'rm -f "$tmp"' EXIT
trap 'exit 1' HUP INT TERM PIPE
cat > "$tmp"
echo "$3  $tmp" | sha256sum -c --status || { rm -f "$tmp"; echo "checksum mismatch after upload" >&2; exit 1; }
mv "$tmp" "$2"
