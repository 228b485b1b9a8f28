# shellcheck shell=sh
# Removes a resource's pin dir (pins.ts removePins). $1 the pin dir, $2 its kind's
# dir, $3 the pin root, $4 the state dir. When the last bpfleet resource leaves a
# host, the pin root and the object cache go too, so that a destroyed stack leaves
# the host as it found it; but not while boot-restore files (bootRestore.ts) still
# name objects of that cache.
rm -rf -- "$1"
rmdir -- "$2" 2>/dev/null
if rmdir -- "$3" 2>/dev/null && [ -z "$(ls -A -- "$4/boot" 2>/dev/null)" ]; then rm -rf -- "$4"; fi
exit 0
