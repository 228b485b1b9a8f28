#!/usr/bin/env bash
# Boots Debian suite $1's kernel (fetched by fetch.sh) under qemu TCG with the
# machine's root shared read-only over 9p, so node, bpftool and clang are the
# machine's own and only the kernel differs. Runs the shell script $3 in the guest
# (as root, chrooted into the shared root), with the writable directory $2 mounted
# at /tmp/out; its log is $2/log and its exit code $2/rc. Extra env: KERNEL_SSH_PORT
# forwards 127.0.0.1:<port> to the guest's port 22 (qemu user-mode networking).
set -euo pipefail
suite=$1 out=$(readlink -f "$2") job=$3
CACHE=${KERNEL_CACHE:-/var/cache/bpfleet/kernels}
kroot="$CACHE/kernel-$suite/root"
[ -d "$kroot" ] || { echo "boot: no kernel for $suite in $CACHE; run test/kernels/fetch.sh" >&2; exit 1; }
moddir="$kroot/lib/modules"; [ -d "$moddir" ] || moddir="$kroot/usr/lib/modules"
release=$(ls "$moddir")
vmlinuz="$kroot/boot/vmlinuz-$release"
initrd="$CACHE/initramfs-$suite-$release.cpio.gz"

# The initramfs: busybox-static and the kernel's own modules for virtio, 9p, veth
# and TC BPF, in dependency order (resolved by the machine's kmod on the extracted tree).
if [ ! -e "$initrd" ]; then
  work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
  mkdir -p "$work/bin" "$work/m" "$work/proc" "$work/sys" "$work/dev" "$work/newroot"
  cp /bin/busybox "$work/bin/busybox"
  # depmod wants <base>/lib/modules; trixie ships /usr/lib/modules only.
  base=$(mktemp -d); mkdir -p "$base/lib/modules"; cp -a "$moddir/$release" "$base/lib/modules/"
  depmod -b "$base" "$release"
  n=0
  for mod in virtio_pci virtio_net 9pnet_virtio 9p veth sch_ingress cls_bpf act_bpf; do
    modprobe -S "$release" -d "$base" --show-depends "$mod" | while read -r kind path _; do
      [ "$kind" = insmod ] || continue
      name=$(basename "$path"); name=${name%.xz}; name=${name%.zst}
      ls "$work/m" | grep -q -- "-$name\$" && continue
      n=$(ls "$work/m" | wc -l)
      case "$path" in
        *.xz) xz -dc "$path" > "$work/m/$(printf %03d "$n")-$name" ;;
        *.zst) zstd -qdc "$path" > "$work/m/$(printf %03d "$n")-$name" ;;
        *) cp "$path" "$work/m/$(printf %03d "$n")-$name" ;;
      esac
    done
  done
  rm -rf "$base"
  cp "$(dirname "$0")/init.sh" "$work/init"; chmod +x "$work/init"
  (cd "$work" && find . | cpio -o -H newc --quiet | gzip -1) > "$initrd.tmp"
  mv "$initrd.tmp" "$initrd"
fi

# The guest mounts its own tmpfs on /tmp, /var/tmp, /run and /root, hiding a checkout
# that lives there (CI may clone anywhere): the host binds it to a path the guest sees,
# and the job first binds that back to where the checkout's own paths point.
repo=$(cd "$(dirname "$0")/../.." && pwd -P)
alias=""
case "$repo/" in /tmp/*|/var/tmp/*|/run/*|/root/*)
  alias="$CACHE/checkout-$(printf %s "$repo" | sha256sum | cut -c1-16)"
  mkdir -p "$alias"
  mountpoint -q "$alias" || mount --bind "$repo" "$alias"
  trap 'umount "$alias" 2>/dev/null; rmdir "$alias" 2>/dev/null; [ -z "${work:-}" ] || rm -rf "$work"' EXIT ;;
esac
{
  [ -z "$alias" ] || printf "mkdir -p '%s' && mount --bind '%s' '%s'\n" "$repo" "$alias" "$repo"
  cat "$job"
} > "$out/job.sh"
rm -f "$out/rc" "$out/log"
net=(-nic none)
if [ -n "${KERNEL_SSH_PORT:-}" ]; then
  net=(-netdev "user,id=n0,hostfwd=tcp:127.0.0.1:$KERNEL_SSH_PORT-:22" -device virtio-net-pci,netdev=n0)
fi
timeout "${KERNEL_BOOT_TIMEOUT:-1800}" qemu-system-x86_64 -accel tcg,thread=multi -cpu max -m "${KERNEL_MEM:-4096}" -smp 2 \
  -nographic -no-reboot -monitor none -serial "file:$out/console" \
  -kernel "$vmlinuz" -initrd "$initrd" -append "console=ttyS0 panic=-1 quiet loglevel=4" \
  -virtfs local,path=/,mount_tag=hostroot,readonly=on,multidevs=remap,security_model=none \
  -virtfs "local,path=$out,mount_tag=out,security_model=none" "${net[@]}" </dev/null
[ -e "$out/rc" ] || { echo "boot: $suite guest ended without a result; console:" >&2; tail -n 30 "$out/console" >&2; exit 1; }
exit "$(cat "$out/rc")"
