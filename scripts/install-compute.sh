#!/usr/bin/env bash
# Install and start what the compute agent needs on Debian 12 (run as root):
# QEMU, qemu-img, libvirt (daemon, headers for libvirt-python), dnsmasq for the
# NAT network, and libvirt-python in .venv. Works without systemd: libvirtd and
# virtlogd are started as plain daemons. Safe to re-run: installed packages,
# settings already made and daemons already running are left alone.
set -euo pipefail
cd "$(dirname "$0")/.."

source scripts/apt.sh
apt_install qemu-system-x86 qemu-utils libvirt-daemon-system libvirt-clients libvirt-dev \
    pkg-config dnsmasq-base genisoimage

# QEMU runs as root with no relabelling. With /dev/kvm readable by root only,
# libvirtd running QEMU as libvirt-qemu thinks its capability cache is stale
# and re-probes QEMU on every define (~50 s); as root the cache holds. Disk
# images stay owned by whoever made them (dynamic_ownership = 0).
QEMU_CONF=/etc/libvirt/qemu.conf
set_conf() {
    local key=$1 value=$2
    if grep -Eq "^${key} = ${value}\$" "$QEMU_CONF"; then
        return 0
    fi
    sed -i -E "/^#?\s*${key}\s*=/d" "$QEMU_CONF"
    echo "${key} = ${value}" >>"$QEMU_CONF"
    CONF_CHANGED=1
}
CONF_CHANGED=0
set_conf user '"root"'
set_conf group '"root"'
set_conf dynamic_ownership 0
set_conf security_driver '"none"'

running() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

mkdir -p /run/libvirt
if ! running /run/virtlogd.pid; then
    virtlogd -d
fi
if running /run/libvirtd.pid && [ "$CONF_CHANGED" = 1 ]; then
    echo "restarting libvirtd for the new qemu.conf"
    kill "$(cat /run/libvirtd.pid)"
    for _ in $(seq 50); do running /run/libvirtd.pid || break; sleep 0.2; done
fi
if ! running /run/libvirtd.pid; then
    libvirtd -d
fi
for _ in $(seq 100); do
    virsh -q -c qemu:///system version >/dev/null 2>&1 && break
    sleep 0.2
done
virsh -q -c qemu:///system version >/dev/null

# libvirt's "default" NAT network (virbr0, 192.168.122.0/24, dnsmasq for DHCP):
# VMs get a lease and reach out through the host's NAT.
if ! virsh -q -c qemu:///system net-info default >/dev/null 2>&1; then
    virsh -q -c qemu:///system net-define /usr/share/libvirt/networks/default.xml >/dev/null
fi
virsh -q -c qemu:///system net-autostart default >/dev/null
net_info=$(virsh -q -c qemu:///system net-info default)
if ! grep -Eq '^Active:\s+yes' <<<"$net_info"; then
    virsh -q -c qemu:///system net-start default >/dev/null
fi

if [ -x .venv/bin/pip ] && ! .venv/bin/python -c 'import libvirt' 2>/dev/null; then
    .venv/bin/pip install -q -e '.[compute]'
fi
echo "compute ready: $(virsh -q -c qemu:///system version | head -1)"
