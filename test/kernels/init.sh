#!/bin/busybox sh
# The guest's init: load the kernel's modules, mount the machine's root (read-only)
# and the writable result share, run /tmp/out/job.sh chrooted there, power off.
/bin/busybox --install -s /bin
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
for m in /m/*.ko; do insmod "$m" 2>/dev/null || echo "init: insmod $m failed"; done
r=/newroot
mount -t 9p -o trans=virtio,version=9p2000.L,ro,cache=loose,msize=512000 hostroot $r || { echo "init: 9p root failed"; poweroff -f; }
mount -t proc proc $r/proc; mount -t sysfs sys $r/sys; mount -t devtmpfs dev $r/dev
mount -t bpf bpf $r/sys/fs/bpf
mount -t tmpfs tmpfs $r/tmp; mount -t tmpfs tmpfs $r/run; mount -t tmpfs tmpfs $r/var/tmp
mount -t tmpfs tmpfs $r/root
mkdir -p $r/tmp/out $r/dev/pts $r/dev/shm
mount -t devpts devpts $r/dev/pts; mount -t tmpfs tmpfs $r/dev/shm
mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000 out $r/tmp/out || { echo "init: 9p out failed"; poweroff -f; }
ip link set lo up 2>/dev/null
chroot $r /usr/bin/env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root /bin/sh /tmp/out/job.sh > $r/tmp/out/log 2>&1
echo $? > $r/tmp/out/rc
sync
poweroff -f
