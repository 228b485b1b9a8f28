# shellcheck shell=sh
# Every filter on both TC hooks of DEV in one round trip (tc.ts tcFilters); a hook
# without clsact lists nothing. An interface that does not exist has no filters:
# "@@absent", so that deleting a resource whose interface is gone still finishes.
# Any other failure fails: a caller that took it for "no filters" would remove
# pins while a filter still runs the program.
dev=$1
set -e
if ! ingress=$(tc -j filter show dev "$dev" ingress); then
  if ip link show dev "$dev" >/dev/null 2>&1; then exit 1; fi
  echo "@@absent"
  exit 0
fi
echo "@@ingress"
printf '%s\n' "$ingress"
echo
echo "@@egress"
tc -j filter show dev "$dev" egress
