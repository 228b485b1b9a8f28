#!/usr/bin/env bash
# Installs everything the demo and the test suite need, on a fresh Debian machine
# as root; safe to run again (each step is skipped when already done).
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(clang llvm libbpf-dev bpftool iproute2 openssh-server openssh-client
  tcpdump iputils-ping netcat-openbsd socat util-linux procps make gcc shellcheck
  qemu-system-x86 busybox-static kmod cpio xz-utils zstd)
# (The last line is for the kernel matrix, test/kernels: qemu boots Debian's kernels
# with an initramfs of busybox and the kernel's modules. shellcheck lints every
# shipped remote script, provider/remote/sh, in the unit tests.)

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing Debian packages: ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# bpffs in the root namespace: kernel tests pin their objects there.
if [ "$(stat -f -c %T /sys/fs/bpf 2>/dev/null)" != "bpf_fs" ]; then
  mount -t bpf bpf /sys/fs/bpf
fi

if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  echo "setup: installing npm dependencies"
  npm ci --no-audit --no-fund --loglevel=error
fi

echo "setup: building BPF objects and TypeScript"
npm run --silent build

# The real Pulumi CLI and Node language host (built from Go modules when absent).
PULUMI_BIN="$(bash scripts/install-pulumi-cli.sh | tail -n 1)"
echo "$PULUMI_BIN" > .pulumi-bin-path
