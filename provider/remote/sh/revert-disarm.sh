# shellcheck shell=sh
# Disarms a revert armed by revert-arm.sh. Exit 7: too late, the host already
# reverted (the revert's log is on stderr).
guards=$1 token=$2
f="$guards/$token"
if mv "$f.sh" "$f.disarmed" 2>/dev/null; then
  kill -- "-$(cat "$f.pid")" 2>/dev/null
  rm -f "$f.disarmed" "$f.pid"
  exit 0
fi
for _ in 1 2 3 4 5 6 7 8 9 10; do [ -e "$f.fired" ] && break; sleep 1; done
cat "$f.log" >&2 2>/dev/null
rm -f "$f.run" "$f.pid" "$f.log" "$f.fired"
exit 7
