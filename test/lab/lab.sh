#!/usr/bin/env bash
# bpfleet test lab: a fleet of fake "remote hosts" on this machine.
#
# Every host is a network namespace with its own sshd, its own bpffs, /tmp, /run
# and hostname, joined to a bridge in the root namespace by a veth pair. The
# provider (running in the root namespace) reaches the hosts over SSH exactly as
# it would reach real machines. Clients are namespaces without sshd, used as
# traffic sources/sinks.
#
#   lab.sh up NAME --hosts N [--clients M]   create (after cleaning) lab NAME; prints lab.json path
#   lab.sh down NAME                         remove everything lab NAME made (idempotent)
#   lab.sh down-all                          remove every lab (CI cleanup)
#   lab.sh list                              names of the labs present
#
# Naming: everything is "bfl<NAME>-<role>" so one lab's names never prefix
# another's (NAME has no '-'): bridge bfl<NAME>-br, namespaces and root-side
# veths bfl<NAME>-h<i> / bfl<NAME>-c<j>. Interface names must be <= 15 chars,
# hence NAME <= 7 chars; at most 100 hosts and 50 clients (see addresses).
#
# Addresses: 10.200.<k>.0/24 and fd00:bf:<k>::/64, k derived from NAME (the
# next free k is taken if another lab already uses it). Gateway (bridge) .1,
# host i .(10+i) and fd00:bf:<k>::(10+i), client j .(200+j) and ::(200+j).
# Nothing is routed anywhere else: the bridge has no uplink and namespaces get
# no default route.
set -euo pipefail

readonly LAB_ROOT=/run/bpfleet-lab
readonly PREFIX=bfl
readonly LAB_USER=bpfleet-lab
readonly LAB_USER_GECOS="bpfleet lab user (test/lab/lab.sh)"
readonly SSHD=/usr/sbin/sshd
readonly MAX_HOSTS=100 MAX_CLIENTS=50

log() { printf 'lab: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }
have() { command -v "$1" >/dev/null 2>&1; }

usage() {
  sed -n '2,/^set -euo/{/^#/s/^# \{0,1\}//p}' "$0" >&2
  exit 2
}

# ---------------------------------------------------------------- helpers

validate_name() {
  [[ $1 =~ ^[a-z0-9]{1,7}$ ]] ||
    die "lab name '$1' must be 1-7 characters [a-z0-9] (interface names are limited to 15 chars)"
}

lab_dir() { printf '%s/%s' "$LAB_ROOT" "$1"; }

json_str() {
  local s=$1
  s=${s//\\/\\\\}
  s=${s//\"/\\\"}
  printf '"%s"' "$s"
}

# Global lock for the steps that touch shared state (apt, the lab user, subnet
# allocation), so labs started in parallel by test workers do not race.
with_global_lock() {
  mkdir -p "$LAB_ROOT"
  (
    flock -w 300 9 || die "timed out waiting for $LAB_ROOT/.lock"
    "$@"
  ) 9>"$LAB_ROOT/.lock"
}

# Namespaces / root-namespace links that belong to lab NAME (exact pattern, so
# lab "a" never matches lab "ab").
lab_netns() { ip netns list 2>/dev/null | awk '{print $1}' | grep -E "^${PREFIX}$1-[hc][0-9]+\$" || true; }
lab_links() {
  ip -o link show 2>/dev/null | awk -F': ' '{print $2}' | cut -d@ -f1 |
    grep -E "^${PREFIX}$1-(br|[hc][0-9]+)\$" || true
}

# ---------------------------------------------------------------- packages

# CI may run on a brand-new machine: install what the lab (and the traffic
# tests that use it) need, and only touch apt when something is missing.
ensure_packages() {
  local -a need=()
  have ip || need+=(iproute2)
  [[ -x $SSHD ]] || need+=(openssh-server)
  { have ssh && have ssh-keygen; } || need+=(openssh-client)
  { have nsenter && have unshare && have flock && have setsid; } || need+=(util-linux)
  { have pgrep && have sysctl; } || need+=(procps)
  have useradd || need+=(passwd)
  have sudo || need+=(sudo)
  have bpftool || need+=(bpftool)
  have ethtool || need+=(ethtool)
  have ping || need+=(iputils-ping)
  have tcpdump || need+=(tcpdump)
  have socat || need+=(socat)
  have nc || need+=(netcat-openbsd)
  ((${#need[@]} == 0)) && return 0
  log "installing missing packages: ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq --no-install-recommends "${need[@]}" >&2
}

# A non-root login with passwordless sudo, for tests of the provider's sudo
# support. Users are machine-wide (all hosts share /etc), so it is shared by all
# labs and only removed by down-all.
ensure_lab_user() {
  if ! id "$LAB_USER" >/dev/null 2>&1; then
    useradd --create-home --shell /bin/bash --comment "$LAB_USER_GECOS" "$LAB_USER"
  fi
  # useradd leaves the password as "!", which sshd (without PAM) treats as a
  # locked account and refuses even for public-key logins. "*" = no password
  # login possible, but not locked.
  usermod -p '*' "$LAB_USER"
  if [[ ! -f /etc/sudoers.d/$LAB_USER ]]; then
    local tmp
    tmp=$(mktemp)
    printf '%s ALL=(ALL) NOPASSWD: ALL\n' "$LAB_USER" >"$tmp"
    visudo -cqf "$tmp" >/dev/null
    install -m 0440 "$tmp" "/etc/sudoers.d/$LAB_USER"
    rm -f "$tmp"
  fi
}

# ---------------------------------------------------------------- network

subnet_in_use() {
  ip -o -4 addr show 2>/dev/null | grep -q " inet 10\.200\.$1\." ||
    [[ -n $(ip -4 route show 10.200.$1.0/24 2>/dev/null) ]]
}

# k = hash(NAME) in 1..250, or the next free one if another lab holds it.
# Must run under the global lock (together with create_bridge).
alloc_subnet() {
  local name=$1 k0 k off
  k0=$(($(printf '%s' "$name" | cksum | cut -d' ' -f1) % 250 + 1))
  for ((off = 0; off < 250; off++)); do
    k=$(((k0 - 1 + off) % 250 + 1))
    subnet_in_use "$k" || { echo "$k"; return 0; }
  done
  die "no free 10.200.<k>.0/24 subnet"
}

mac_for() { printf '02:bf:%02x:%02x:%02x:%02x' "$1" "$2" $(($3 / 256)) $(($3 % 256)); }

create_bridge() {
  local br=$1 k=$2
  # Explicit MAC: otherwise a bridge takes the lowest port MAC, which changes as
  # ports come and go and leaves stale ARP/ND entries in the hosts.
  ip link add "$br" address "$(mac_for "$k" 0 1)" type bridge
  # Make frames look like a real NIC's: full checksums, no GSO super-frames.
  ethtool -K "$br" tx off >/dev/null 2>&1 || true
  ip addr add "10.200.$k.1/24" dev "$br"
  ip addr add "fd00:bf:$k::1/64" dev "$br" nodad
  ip link set "$br" up
  # br_netfilter would push bridged frames through iptables; keep them out.
  if [[ -d /sys/module/br_netfilter ]]; then
    sysctl -qw net.bridge.bridge-nf-call-iptables=0 net.bridge.bridge-nf-call-ip6tables=0 \
      net.bridge.bridge-nf-call-arptables=0 >/dev/null
  fi
}

# A namespace with eth0 (inside end of a veth pair) enslaved to the bridge.
# role: h|c, role_id: 1 for hosts, 2 for clients (used in the MAC).
create_node() {
  local name=$1 k=$2 role=$3 idx=$4 octet=$5 role_id=$6
  local ns="$PREFIX$name-$role$idx" br="$PREFIX$name-br"
  local veth=$ns

  ip netns add "$ns"
  # Create the pair with its inside end already named eth0 in the namespace.
  ip link add "$veth" type veth peer name eth0 address "$(mac_for "$k" "$role_id" "$idx")" netns "$ns"
  # The root-side end is only a bridge port: no IPv6 link-local, no RS/MLD noise
  # in captures.
  echo 1 >"/proc/sys/net/ipv6/conf/$veth/disable_ipv6"
  ip link set "$veth" master "$br" up

  ip -n "$ns" link set lo up
  # Addresses usable at once (no DAD wait); and no RA autoconfiguration.
  ip netns exec "$ns" sysctl -qw net.ipv6.conf.eth0.accept_dad=0 net.ipv6.conf.eth0.accept_ra=0 >/dev/null
  ip -n "$ns" addr add "10.200.$k.$octet/24" dev eth0
  ip -n "$ns" addr add "fd00:bf:$k::$octet/64" dev eth0 nodad
  # veth hands locally generated packets over with CHECKSUM_PARTIAL (L4
  # checksum not filled in). XDP/TC programs that forward or rewrite them
  # (XDP_TX, redirect, NAT) would then emit bad checksums. A real NIC delivers
  # complete checksums, so turn TX checksum offload off on both ends.
  ip netns exec "$ns" ethtool -K eth0 tx off >/dev/null 2>&1 || true
  ethtool -K "$veth" tx off >/dev/null 2>&1 || true
  ip -n "$ns" link set eth0 up
}

# ---------------------------------------------------------------- sshd

# OpenSSH >= 9.8 penalises source addresses that fail auth (our wrong-key
# tests would lock the root namespace out); older versions reject the option.
sshd_extra_options() {
  local dir=$1 probe="$1/probe_sshd_config"
  printf 'HostKey %s\nPerSourcePenalties no\n' "$dir/h1/ssh_host_ed25519_key" >"$probe"
  if "$SSHD" -t -f "$probe" >/dev/null 2>&1; then echo "PerSourcePenalties no"; fi
  rm -f "$probe"
}

write_sshd_config() {
  local dir=$1 hdir=$2 addr4=$3 addr6=$4 extra=$5
  cat >"$hdir/sshd_config" <<EOF
# generated by test/lab/lab.sh
Port 22
ListenAddress $addr4
ListenAddress $addr6
AddressFamily any
HostKey $hdir/ssh_host_ed25519_key
PidFile $hdir/sshd.pid
AuthorizedKeysFile $dir/authorized_keys
AllowUsers root $LAB_USER
PermitRootLogin prohibit-password
AuthenticationMethods publickey
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
HostbasedAuthentication no
# No PAM: session modules (systemd, loginuid) misbehave inside namespaces.
UsePAM no
UseDNS no
# Tests open many concurrent connections/channels (pooled sessions); the
# defaults (10 unauthenticated, 10 sessions) drop them at random.
MaxStartups 200
MaxSessions 100
LoginGraceTime 30
# Jump-host tests forward through a lab host.
AllowTcpForwarding yes
AllowAgentForwarding no
X11Forwarding no
PrintMotd no
PrintLastLog no
Subsystem sftp internal-sftp
LogLevel VERBOSE
$extra
EOF
}

# Start sshd for host NS in a private mount + UTS namespace, with a fresh bpffs
# on /sys/fs/bpf, fresh /tmp, /var/tmp and /var/lib/bpfleet (the provider's
# object cache: shared, it would hide uploads from every host but the first),
# its own /run (a real host's locks, revert guards and sshd privilege-separation
# dir are its own; shared, the guards and chain locks of different lab hosts
# would collide), an empty /etc/systemd/system (boot-restore units must never
# reach this machine's real /etc) and an /etc/hosts naming it. The lab's own
# directory (sshd's config, keys, pid file and log) is carried into the new /run
# by a bind mount moved over it, so the root namespace keeps reading those files
# at their usual path; nothing else of the machine's /run is visible to a host.
# `ip netns exec` already remounts /sys (so /sys/class/net shows this
# namespace); the extra unshare keeps our mounts from leaking and pins from
# being visible to other hosts. Everything the sshd
# forks (SSH sessions) inherits these namespaces, so pins made in one session
# are seen by the next, for as long as this sshd lives. setsid + redirected
# stdio detach it from the caller (a test runner waiting on our stdout would
# otherwise hang, and Ctrl-C would kill it).
start_sshd() {
  local ns=$1 hdir=$2
  # The host's own name must resolve, or sudo warns on every call.
  { cat /etc/hosts; printf '127.0.1.1\t%s\n' "$ns"; } >"$hdir/hosts"
  # shellcheck disable=SC2016
  setsid ip netns exec "$ns" unshare --mount --uts --propagation private \
    sh -c 'set -e
      mount -t bpf bpf /sys/fs/bpf
      mount -t tmpfs -o mode=1777 tmpfs /tmp
      mount -t tmpfs -o mode=1777 tmpfs /var/tmp
      mkdir /tmp/.lab
      mount --bind "$6" /tmp/.lab
      mount -t tmpfs -o mode=0755 tmpfs /run
      mkdir -p "$6" /run/lock
      chmod 1777 /run/lock
      mkdir -m 0755 /run/sshd
      mount --move /tmp/.lab "$6"
      rmdir /tmp/.lab
      mkdir -p /var/lib/bpfleet
      mount -t tmpfs -o mode=0700 tmpfs /var/lib/bpfleet
      mkdir -p /etc/systemd/system
      mount -t tmpfs -o mode=0755 tmpfs /etc/systemd/system
      hostname "$1"
      mount --bind "$5" /etc/hosts
      exec "$2" -D -f "$3" -E "$4"' \
    sh "$ns" "$SSHD" "$hdir/sshd_config" "$hdir/sshd.log" "$hdir/hosts" "${hdir%/*}" \
    </dev/null >>"$hdir/start.log" 2>&1 &
}

# sshd writes its PidFile only after its listen sockets are bound.
wait_pidfile() {
  local hdir=$1 i pid
  for ((i = 0; i < 200; i++)); do
    if [[ -s $hdir/sshd.pid ]]; then
      pid=$(<"$hdir/sshd.pid")
      [[ -d /proc/$pid ]] && { echo "$pid"; return 0; }
    fi
    sleep 0.05
  done
  log "sshd in $hdir did not start:"
  cat "$hdir/start.log" "$hdir/sshd.log" >&2 2>/dev/null || true
  return 1
}

ssh_opts() {
  local dir=$1
  printf '%s\n' -F /dev/null -i "$dir/id_ed25519" -o IdentitiesOnly=yes -o IdentityAgent=none \
    -o BatchMode=yes -o StrictHostKeyChecking=yes -o "UserKnownHostsFile=$dir/known_hosts" \
    -o GlobalKnownHostsFile=/dev/null -o ConnectTimeout=3 -o LogLevel=ERROR
}

# A login (with host-key verification) must succeed before `up` returns.
wait_login() {
  local dir=$1 addr=$2 i
  local -a opts
  mapfile -t opts < <(ssh_opts "$dir")
  # The default post-quantum kex costs ~0.2 s of CPU per login here; the
  # readiness probe does not need it (the host key is checked all the same).
  opts+=(-o KexAlgorithms=curve25519-sha256)
  for ((i = 0; i < 100; i++)); do
    ssh "${opts[@]}" "root@$addr" true </dev/null 2>/dev/null && return 0
    sleep 0.1
  done
  ssh "${opts[@]}" "root@$addr" true </dev/null || true # show the error
  log "no SSH login to $addr"
  return 1
}

# ---------------------------------------------------------------- up

on_up_exit() {
  local rc=$?
  if ((rc != 0)) && [[ -z ${BPFLEET_LAB_KEEP:-} ]]; then
    log "up failed; removing lab $1 (set BPFLEET_LAB_KEEP=1 to keep it for debugging)"
    cmd_down "$1" || true
  fi
}

cmd_up() {
  local name="" hosts="" clients=0
  while (($#)); do
    case $1 in
      --hosts) hosts=${2:-}; shift 2 ;;
      --clients) clients=${2:-}; shift 2 ;;
      -*) die "unknown option $1" ;;
      *) [[ -z $name ]] || die "unexpected argument $1"; name=$1; shift ;;
    esac
  done
  [[ -n $name ]] || usage
  validate_name "$name"
  [[ $hosts =~ ^[0-9]+$ ]] && ((hosts >= 1 && hosts <= MAX_HOSTS)) || die "--hosts must be 1..$MAX_HOSTS"
  [[ $clients =~ ^[0-9]+$ ]] && ((clients <= MAX_CLIENTS)) || die "--clients must be 0..$MAX_CLIENTS"
  ((EUID == 0)) || die "must run as root"

  # Clean whatever an earlier (crashed) run of this lab left, and on failure
  # clean what we made unless asked to keep it for debugging.
  cmd_down "$name"
  # (The trap runs after cmd_up's locals are gone: bake the name in; it is
  # validated [a-z0-9] so this is safe.)
  # shellcheck disable=SC2064
  trap "on_up_exit $name" EXIT

  local dir br="$PREFIX$name-br" k i
  dir=$(lab_dir "$name")
  with_global_lock ensure_packages
  with_global_lock ensure_lab_user
  mkdir -p "$dir"
  chmod 0755 "$LAB_ROOT" "$dir"

  # One client key per lab; it is the only key any lab sshd accepts.
  ssh-keygen -q -t ed25519 -N '' -C "bpfleet-lab-$name" -f "$dir/id_ed25519"
  cp "$dir/id_ed25519.pub" "$dir/authorized_keys"

  # Subnet choice and bridge creation under one lock: the bridge address is what
  # marks the subnet as taken.
  alloc_and_bridge() {
    k=$(alloc_subnet "$name")
    create_bridge "$br" "$k"
    echo "$k" >"$dir/subnet"
  }
  with_global_lock alloc_and_bridge
  k=$(<"$dir/subnet")
  log "lab $name: bridge $br, 10.200.$k.0/24, fd00:bf:$k::/64"

  for ((i = 1; i <= hosts; i++)); do create_node "$name" "$k" h "$i" $((10 + i)) 1; done
  for ((i = 1; i <= clients; i++)); do create_node "$name" "$k" c "$i" $((200 + i)) 2; done

  # Host keys and sshd configs, then start every sshd before waiting on any.
  local extra hdir ns
  for ((i = 1; i <= hosts; i++)); do
    hdir="$dir/h$i"
    mkdir -p "$hdir"
    ssh-keygen -q -t ed25519 -N '' -C "$PREFIX$name-h$i" -f "$hdir/ssh_host_ed25519_key"
  done
  extra=$(sshd_extra_options "$dir")
  mkdir -p /run/sshd && chmod 0755 /run/sshd # privilege-separation dir sshd insists on
  : >"$dir/known_hosts"
  for ((i = 1; i <= hosts; i++)); do
    hdir="$dir/h$i"
    write_sshd_config "$dir" "$hdir" "10.200.$k.$((10 + i))" "fd00:bf:$k::$((10 + i))" "$extra"
    "$SSHD" -t -f "$hdir/sshd_config"
    printf '10.200.%s.%s,fd00:bf:%s::%s %s\n' "$k" $((10 + i)) "$k" $((10 + i)) \
      "$(cut -d' ' -f1-2 "$hdir/ssh_host_ed25519_key.pub")" >>"$dir/known_hosts"
    start_sshd "$PREFIX$name-h$i" "$hdir"
  done

  local -a pids=()
  for ((i = 1; i <= hosts; i++)); do
    pids[i]=$(wait_pidfile "$dir/h$i")
  done
  # Logins in parallel: with 10+ hosts sequential waits add up.
  local -a waiters=()
  for ((i = 1; i <= hosts; i++)); do
    wait_login "$dir" "10.200.$k.$((10 + i))" &
    waiters+=($!)
  done
  local w failed=0
  for w in "${waiters[@]}"; do wait "$w" || failed=1; done
  ((failed == 0)) || die "some sshd did not accept a login"

  write_lab_json "$name" "$dir" "$k" "$hosts" "$clients" "${pids[@]}"
  trap - EXIT
  echo "$dir/lab.json"
}

write_lab_json() {
  local name=$1 dir=$2 k=$3 hosts=$4 clients=$5
  shift 5
  local -a pids=("$@")
  local i sep ns hkey
  {
    printf '{\n'
    printf '  "name": %s,\n' "$(json_str "$name")"
    printf '  "dir": %s,\n' "$(json_str "$dir")"
    printf '  "privateKeyPath": %s,\n' "$(json_str "$dir/id_ed25519")"
    printf '  "publicKey": %s,\n' "$(json_str "$(<"$dir/id_ed25519.pub")")"
    printf '  "knownHostsPath": %s,\n' "$(json_str "$dir/known_hosts")"
    printf '  "bridge": %s,\n' "$(json_str "$PREFIX$name-br")"
    printf '  "subnet4": "10.200.%s.0/24",\n  "subnet6": "fd00:bf:%s::/64",\n' "$k" "$k"
    printf '  "gateway4": "10.200.%s.1",\n  "gateway6": "fd00:bf:%s::1",\n' "$k" "$k"
    printf '  "sudoUser": %s,\n' "$(json_str "$LAB_USER")"
    printf '  "hosts": ['
    sep=""
    for ((i = 1; i <= hosts; i++)); do
      ns="$PREFIX$name-h$i"
      hkey=$(cut -d' ' -f1-2 "$dir/h$i/ssh_host_ed25519_key.pub")
      printf '%s\n    { "name": "h%s", "netns": "%s", "address": "10.200.%s.%s", "address6": "fd00:bf:%s::%s", ' \
        "$sep" "$i" "$ns" "$k" $((10 + i)) "$k" $((10 + i))
      printf '"port": 22, "user": "root", "hostKey": %s, "interface": "eth0", "mac": "%s", "sshdPid": %s }' \
        "$(json_str "$hkey")" "$(mac_for "$k" 1 "$i")" "${pids[i - 1]}"
      sep=","
    done
    printf '\n  ],\n  "clients": ['
    sep=""
    for ((i = 1; i <= clients; i++)); do
      ns="$PREFIX$name-c$i"
      printf '%s\n    { "name": "c%s", "netns": "%s", "address": "10.200.%s.%s", "address6": "fd00:bf:%s::%s", "interface": "eth0", "mac": "%s" }' \
        "$sep" "$i" "$ns" "$k" $((200 + i)) "$k" $((200 + i)) "$(mac_for "$k" 2 "$i")"
      sep=","
    done
    printf '\n  ]\n}\n'
  } >"$dir/lab.json.tmp"
  mv "$dir/lab.json.tmp" "$dir/lab.json"
}

# ---------------------------------------------------------------- down

# Alive = exists and is not a zombie (an orphaned sshd is reaped by PID 1,
# which may take its time; a zombie holds no namespace or socket).
is_alive() {
  local st
  st=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) || return 1
  [[ -n $st && $st != Z ]]
}

# TERM then KILL a set of pids, waiting for them to exit.
kill_pids() {
  (($#)) || return 0
  kill -TERM "$@" 2>/dev/null || true
  local i p
  local -a alive=()
  for ((i = 0; i < 50; i++)); do
    alive=()
    for p in "$@"; do is_alive "$p" && alive+=("$p"); done
    ((${#alive[@]})) || return 0
    sleep 0.05
  done
  kill -KILL "${alive[@]}" 2>/dev/null || true
  sleep 0.1
}

cmd_down() {
  local name=${1:-}
  [[ -n $name ]] || usage
  validate_name "$name"
  local dir ns l f pid
  dir=$(lab_dir "$name")
  local -a pids=()

  # 1. Processes: everything inside the lab's namespaces (sshds, their
  #    sessions, whatever tests started there with nsenter/ip netns exec)...
  for ns in $(lab_netns "$name"); do
    mapfile -t -O "${#pids[@]}" pids < <(ip netns pids "$ns" 2>/dev/null || true)
  done
  #    ...and sshds recorded in pid files (their namespace may already be gone),
  #    checking the command line so a recycled pid is never hit.
  if [[ -d $dir ]]; then
    for f in "$dir"/h*/sshd.pid; do
      [[ -s $f ]] || continue
      pid=$(<"$f")
      if [[ $pid =~ ^[0-9]+$ ]] && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$dir/"; then
        pids+=("$pid")
      fi
    done
  fi
  kill_pids "${pids[@]}"

  # 2. Links: deleting a root-side veth deletes its peer (eth0) too. Done
  #    explicitly because netns teardown is asynchronous and would leave the
  #    root ends around for a moment.
  for l in $(lab_links "$name"); do
    [[ $l == *-br ]] && continue
    ip link del "$l" 2>/dev/null || true
  done
  for l in $(lab_links "$name"); do ip link del "$l" 2>/dev/null || true; done

  # 3. Namespaces, then our files.
  for ns in $(lab_netns "$name"); do ip netns del "$ns" 2>/dev/null || true; done
  rm -rf "$dir"

  local left
  left="$(lab_netns "$name")$(lab_links "$name")"
  [[ -z $left ]] || die "lab $name: could not remove: $left"
}

# Every lab that has a namespace, link or directory on this machine.
cmd_list() {
  {
    {
      ip netns list 2>/dev/null | awk '{print $1}'
      ip -o link show 2>/dev/null | awk -F': ' '{print $2}' | cut -d@ -f1
    } | sed -nE "s/^${PREFIX}([a-z0-9]{1,7})-(br|[hc][0-9]+)\$/\\1/p"
    if [[ -d $LAB_ROOT ]]; then
      find "$LAB_ROOT" -mindepth 1 -maxdepth 1 -type d -printf '%f\n' | grep -E '^[a-z0-9]{1,7}$' || true
    fi
  } | sort -u
}

cmd_down_all() {
  local -a names=()
  local n
  mapfile -t names < <(cmd_list)
  for n in "${names[@]}"; do
    log "removing lab $n"
    cmd_down "$n"
  done
  # The shared sudo user, but only the one we created.
  if getent passwd "$LAB_USER" | cut -d: -f5 | grep -qxF "$LAB_USER_GECOS"; then
    userdel --remove "$LAB_USER" 2>/dev/null || true
    rm -f "/etc/sudoers.d/$LAB_USER"
  fi
  rm -rf "$LAB_ROOT"
}

# ---------------------------------------------------------------- main

main() {
  (($#)) || usage
  local cmd=$1
  shift
  case $cmd in
    up) cmd_up "$@" ;;
    down) ((EUID == 0)) || die "must run as root"; cmd_down "$@" ;;
    down-all) ((EUID == 0)) || die "must run as root"; cmd_down_all ;;
    list) cmd_list ;;
    -h | --help | help) usage ;;
    *) usage ;;
  esac
}

main "$@"
