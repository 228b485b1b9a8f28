# shellcheck shell=sh
# Runs now, and waits for, every revert still pending for one resource (its script
# names the resource's pin directory, `pin_dir`): claimed by the same rename as the
# watcher's (revert-arm.sh), so each revert runs once. Prints how many it ran.
# It runs what it finds as root, so nothing is run from a guard directory (or a
# /run/bpfleet above it) that root alone could not have written: such a host has
# nothing pending it could trust, and the step of the change that needs the
# directory refuses it, saying why (root_dirs). A host that has neither has nothing
# pending, and nothing is created for it.
guards=$1 pin_dir=$2
for d in "${guards%/*}" "$guards"; do
  if [ -e "$d" ] || [ -L "$d" ]; then root_dirs "$d" 2>/dev/null || { echo 0; exit 0; }; else echo 0; exit 0; fi
done
n=0
for s in "$guards"/*.sh; do
  [ -e "$s" ] || continue
  grep -q -- "$pin_dir\([^A-Za-z0-9_.-]\|\$\)" "$s" || continue
  f="${s%.sh}"
  mv "$s" "$f.run" 2>/dev/null || continue
  kill -- "-$(cat "$f.pid" 2>/dev/null)" 2>/dev/null
  sh "$f.run" > "$f.log" 2>&1
  rm -f "$f.run" "$f.pid" "$f.log"
  n=$((n+1))
done
for r in "$guards"/*.run; do
  [ -e "$r" ] || continue
  grep -q -- "$pin_dir\([^A-Za-z0-9_.-]\|\$\)" "$r" || continue
  i=0; while [ ! -e "${r%.run}.fired" ] && [ $i -lt 60 ]; do sleep 1; i=$((i+1)); done
done
echo $n
