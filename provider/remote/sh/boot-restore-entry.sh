#!/bin/sh
# Written by bpfleet; run by bpfleet-restore.service. Restores every resource persisted under /var/lib/bpfleet/boot.
failed=0
for script in /var/lib/bpfleet/boot/*/*/restore.sh; do
  [ -f "$script" ] || continue
  sh "$script" || { echo "bpfleet-restore: $script failed" >&2; failed=1; }
done
exit $failed
