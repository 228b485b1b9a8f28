# shellcheck shell=sh
# Arms a revert (provider/remote/revertTimer.ts): the revert script arrives on stdin
# and runs on the host after `seconds` unless disarmed. The watcher runs in its own
# session (setsid), so it outlives this SSH connection. Whoever renames <token>.sh
# first wins: the watcher (to run it) or disarm (to cancel it), so a revert never
# runs half way under a late disarm. A provider that never comes back (the host
# stayed unreachable, the run was killed) never cleans up after a fired revert: the
# watcher keeps only <token>.fired and the log's last `log_bytes`, and each arm
# removes all but the newest `keep` fired guards, so /run stays bounded.
guards=$1 token=$2 seconds=$3 keep=$4 log_bytes=$5
set -e
root_dirs "${guards%/*}" "$guards"
umask 077
f="$guards/$token"
# shellcheck disable=SC2012 # token names are [0-9a-f-] only, and ls -t is the age order
ls -t -- "$guards" | sed -n 's/\.fired$//p' | tail -n +$((keep + 1)) | while read -r old; do rm -f -- "$guards/$old".*; done
cat > "$f.sh"
# shellcheck disable=SC2016 # the inner script expands its own arguments
setsid sh -c 'sleep "$1"; mv "$2.sh" "$2.run" 2>/dev/null || exit 0; sh "$2.run" 2>&1 | tail -c "$3" > "$2.log"; rm -f "$2.run" "$2.pid"; echo fired > "$2.fired"' bpfleet-guard "$seconds" "$f" "$log_bytes" </dev/null >/dev/null 2>&1 &
echo $! > "$f.pid"
