# shellcheck shell=sh
# Fires an armed revert (revert-arm.sh) at once, as its watcher would when its time
# is up: a change that missed its packet expectations (provider/expect/hostRun.ts) is
# undone exactly like one that cut the management path. Whoever renames <token>.sh
# first wins, so the watcher cannot run it a second time. Prints the revert's output;
# exit 7 when the guard had fired already (its log on stderr), 8 when it was disarmed.
guards=$1 token=$2 log_bytes=$3
f="$guards/$token"
if mv "$f.sh" "$f.run" 2>/dev/null; then
  kill -- "-$(cat "$f.pid")" 2>/dev/null
  sh "$f.run" 2>&1 | tail -c "$log_bytes" > "$f.log"
  rm -f "$f.run" "$f.pid"
  echo fired > "$f.fired"
  cat "$f.log"
  exit 0
fi
for _ in 1 2 3 4 5 6 7 8 9 10; do [ -e "$f.fired" ] && break; sleep 1; done
if [ -e "$f.fired" ]; then cat "$f.log" >&2 2>/dev/null; exit 7; fi
exit 8
