# shellcheck shell=sh
# Every filter on both TC hooks of DEV in one round trip (tc.ts tcFilters); a hook
# without clsact lists nothing.
dev=$1
set -e
echo "@@ingress"
tc -j filter show dev "$dev" ingress
echo
echo "@@egress"
tc -j filter show dev "$dev" egress
