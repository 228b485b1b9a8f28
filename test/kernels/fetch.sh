#!/usr/bin/env bash
# Fetches Debian's kernels (5.10, 6.1, 6.12) and bpftools (Debian 11, 12, 13) into
# $KERNEL_CACHE (outside git), with a PRIVATE apt configuration per suite: the
# system's sources are never touched. Idempotent: what is in the cache is kept.
# Prints nothing on success but one line per suite: "<suite> <kernel release> <bpftool dir>".
set -euo pipefail
CACHE=${KERNEL_CACHE:-/var/cache/bpfleet/kernels}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org}
mkdir -p "$CACHE"

# suite -> "sources lines" (main archive + security, where the kernel updates land)
sources_for() {
  local suite=$1 key=/usr/share/keyrings/debian-archive-keyring.gpg
  echo "deb [signed-by=$key] $MIRROR/debian $suite main"
  echo "deb [signed-by=$key] $MIRROR/debian-security $suite-security main"
}

# apt with the suite's private sources, lists and cache; the host's dpkg status is
# read only to satisfy apt, nothing is installed.
papt() {
  local suite=$1 cmd=$2; shift 2
  local dir="$CACHE/apt/$suite"
  "$cmd" -q -o Dir::Etc::sourcelist="$dir/sources.list" -o Dir::Etc::sourceparts=- \
    -o Dir::Etc::preferencesparts="$dir/preferences.d" -o Dir::Etc::preferences="$dir/preferences" -o APT::Sandbox::User=root -o Dir::State::Lists="$dir/lists" -o Dir::Cache="$dir/cache" \
    -o Dir::State::status="$dir/status" -o APT::Get::List-Cleanup=0 -o Debug::NoLocking=1 "$@"
}

apt_update() {
  local suite=$1 dir="$CACHE/apt/$1"
  mkdir -p "$dir/lists/partial" "$dir/cache/archives/partial" "$dir/preferences.d"
  sources_for "$suite" > "$dir/sources.list"
  touch "$dir/status"
  # Lists older than a day are refreshed: the security suite moves the kernel ABI.
  if [ -z "$(find "$dir/lists" -name '*Packages*' -mtime -1 2>/dev/null | head -n 1)" ]; then
    papt "$suite" apt-get update >/dev/null
  fi
}

# Downloads package $2 of suite $1 into $3 (a directory of .debs); prints the .deb path.
# Tries each version the suite lists, newest first: a mirror can list a security
# update whose file it does not serve (bullseye-security's bpftool 5.10.262: 404).
download() {
  local suite=$1 pkg=$2 out=$3
  mkdir -p "$out"
  local deb; deb=$(ls "$out/${pkg}_"*.deb 2>/dev/null | head -n 1 || true)
  if [ -z "$deb" ]; then
    local version
    for version in $(papt "$suite" apt-cache madison "$pkg" | awk -F'|' '{gsub(/ /, "", $2); print $2}' | sort -Vru); do
      (cd "$out" && papt "$suite" apt-get download "$pkg=$version" >/dev/null 2>&1) && break
    done
    deb=$(ls "$out/${pkg}_"*.deb 2>/dev/null | head -n 1 || true)
    [ -n "$deb" ] || { echo "fetch: could not download $pkg from $suite" >&2; exit 1; }
  fi
  echo "$deb"
}

# The package's Depends/Pre-Depends, recursively, within the suite (first alternative).
depends_closure() {
  local suite=$1 pkg=$2
  papt "$suite" apt-cache depends --recurse --no-recommends --no-suggests --no-conflicts \
    --no-breaks --no-replaces --no-enhances "$pkg" | awk '/^[a-z0-9]/ {print $1}' | grep -v '^<' | sort -u
}

for suite in ${SUITES:-bullseye bookworm trixie}; do
  apt_update "$suite"
  # linux-image-amd64 is a metapackage; its Depends names the current ABI's image.
  image=$(papt "$suite" apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
  [ -n "$image" ] || { echo "fetch: no linux-image in $suite" >&2; exit 1; }
  kdir="$CACHE/kernel-$suite"
  if [ ! -e "$kdir/.done-$image" ]; then
    rm -rf "$kdir"; mkdir -p "$kdir"
    deb=$(download "$suite" "$image" "$CACHE/debs/$suite")
    dpkg-deb -x "$deb" "$kdir/root"
    touch "$kdir/.done-$image"
  fi
  release=$(ls "$kdir/root/lib/modules" 2>/dev/null || ls "$kdir/root/usr/lib/modules")
  # bpftool with its whole library closure from the same suite, run through that
  # suite's own dynamic loader: independent of the machine's libc.
  bdir="$CACHE/bpftool-$suite"
  if [ ! -e "$bdir/root/.complete" ]; then
    rm -rf "$bdir"; mkdir -p "$bdir/root"
    for pkg in $(depends_closure "$suite" bpftool); do
      case "$pkg" in debconf|perl-base|dpkg|tar|install-info|libc-bin|debianutils) continue ;; esac
      deb=$(download "$suite" "$pkg" "$CACHE/debs/$suite")
      dpkg-deb -x "$deb" "$bdir/root"
    done
    cat > "$bdir/bpftool" <<WRAP
#!/bin/sh
# Debian $suite's bpftool with its own libraries and loader.
r=\$(dirname "\$(readlink -f "\$0")")/root
ld=\$r/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2; [ -e "\$ld" ] || ld=\$r/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2
exec "\$ld" --library-path "\$r/lib/x86_64-linux-gnu:\$r/usr/lib/x86_64-linux-gnu" "\$r/usr/sbin/bpftool" "\$@"
WRAP
    chmod +x "$bdir/bpftool"
    "$bdir/bpftool" version >/dev/null
    touch "$bdir/root/.complete"
  fi
  echo "$suite $release $bdir"
done
