#!/bin/sh
# Guest job (test/kernels/boot.sh) that makes the guest a host like a user's
# Debian 11 machine: its kernel, Debian 11's bpftool first in PATH, the machine's
# sshd (from the shared root) on port 22, reachable through qemu's forwarded port.
# A veth kmxa (192.0.2.1) faces a namespace "peer" holding 192.0.2.2 and .3, for
# packet verdicts. $1: the bpftool to put first in PATH. Runs until /tmp/out/stop.
set -eu
bpftool_path=$1
mount -t tmpfs tmpfs /usr/local/sbin
ln -s "$bpftool_path" /usr/local/sbin/bpftool
# The provider keeps its object cache in /var/lib/bpfleet; the shared root is read-only.
mount -t tmpfs tmpfs /var/lib
mkdir -p /run/sshd /root/.ssh /run/netns
# /root is a tmpfs (mode 1777); sshd refuses keys under a world-writable home.
chmod 700 /root
cp /tmp/out/client.pub /root/.ssh/authorized_keys; chmod 700 /root/.ssh; chmod 600 /root/.ssh/authorized_keys
cp /tmp/out/hostkey /tmp/hostkey; chmod 600 /tmp/hostkey
ip link set eth0 up; ip addr add 10.0.2.15/24 dev eth0; ip route add default via 10.0.2.2
ip link add kmxa type veth peer name kmxb
ip netns add peer; ip link set kmxb netns peer
ip addr add 192.0.2.1/24 dev kmxa; ip link set kmxa up
ip netns exec peer ip addr add 192.0.2.2/24 dev kmxb
ip netns exec peer ip addr add 192.0.2.3/24 dev kmxb
ip netns exec peer ip link set kmxb up; ip netns exec peer ip link set lo up
cat > /tmp/sshd_config <<CFG
Port 22
HostKey /tmp/hostkey
PidFile /run/sshd.pid
PermitRootLogin prohibit-password
AuthenticationMethods publickey
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
UseDNS no
MaxStartups 50
MaxSessions 50
CFG
/usr/sbin/sshd -f /tmp/sshd_config -E /tmp/out/sshd.log
echo "$(uname -r) $(bpftool version | head -n 1)" > /tmp/out/ready
while [ ! -e /tmp/out/stop ]; do sleep 1; done
