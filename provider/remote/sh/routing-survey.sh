# shellcheck shell=sh
# How the load balancer host reaches each backend (maglev/neighbours.ts). $1
# interface, then the addresses. Pass 1 reads routes and neighbours; every next hop
# without a usable MAC is pinged (in parallel, so N unresolved backends cost one
# second, not N); pass 2 reads the neighbours again.
iface=$1; shift
word_after() { key=$1; shift; while [ $# -gt 1 ]; do if [ "$1" = "$key" ]; then echo "$2"; return; fi; shift; done; }
# The route's words are split on purpose: word_after looks for "dev" and "via" among them.
# shellcheck disable=SC2086
hop_of() { route=$(ip route get "$1" 2>&1 | head -n 1); dev=$(word_after dev $route); via=$(word_after via $route); nh=${via:-$1}; }
neigh_of() { [ -n "$dev" ] && [ "$dev" != lo ] && ip neigh show to "$1" dev "$dev" 2>/dev/null | head -n 1; }
have_ping=false; command -v ping >/dev/null 2>&1 && have_ping=true
for addr in "$@"; do
  hop_of "$addr"
  case "$(neigh_of "$nh")" in
    *lladdr*REACHABLE*|*lladdr*PERMANENT*|*lladdr*NOARP*) ;;
    *) if $have_ping && [ -n "$dev" ] && [ "$dev" != lo ]; then ping -n -c 1 -W 1 -I "$dev" "$nh" >/dev/null 2>&1 & fi ;;
  esac
done
wait
for addr in "$@"; do
  hop_of "$addr"
  printf '@@hop %s\nroute %s\nneigh %s\n' "$addr" "$route" "$(neigh_of "$nh")"
done
echo "@@forwarding"
for family in ipv4 ipv6; do printf '%s %s\n' "$family" "$(cat "/proc/sys/net/$family/conf/$iface/forwarding" 2>/dev/null || echo 0)"; done
echo "@@ping $have_ping"
echo "@@mtu $(cat "/sys/class/net/$iface/mtu" 2>/dev/null)"
