"""``peerstack image build``: a tiny bootable guest made from two Debian packages.

The guest is what the compute tests (and a curious operator) boot: Debian's
``linux-image-cloud-amd64`` kernel and a ``busybox-static`` initramfs whose
``/init`` loads the virtio modules, prints :data:`MARKER` on the serial
console, reads the label and a boot counter from its disk (``/dev/vda``),
counts this boot there, prints :data:`USER_DATA_MARKER` and the first line
of the server's user_data when a config drive (a virtio disk with serial
``config-2``, :mod:`compute_agent.config_drive`) is attached, asks for a DHCP lease and prints the address, then
powers off when ACPI's power button is pressed (busybox ``acpid``), so a
graceful stop is quick.

Three files come out, uploaded to Glance as OpenStack does for direct kernel
boot: ``vmlinuz`` (disk_format ``aki``), ``initrd.gz`` (``ari``) and a small
disk (``disk.raw`` / ``disk.qcow2``) whose image carries ``kernel_id`` and
``ramdisk_id`` properties.  The disk's first sector holds a label line, the
second a boot counter the guest increments: a snapshot of a VM that booted
once boots with ``boots=2``.  Volumes get the same treatment when they are
hot-plugged (``/dev/vdb``...): a blank one gets the label
``written-by-<the VM's SMBIOS uuid>``, and every attach counts itself and
prints :data:`VOLUME_MARKER` with the device, label and count.
With ``peerstack.ping=<ip>[,<ip>...]`` on the kernel command line the
guest pings each address once it has its lease (retrying for two minutes)
and prints :data:`PING_MARKER` with the address and ``ok`` or
``unreachable``.

Only ``apt-get download`` and ``dpkg -x`` are used (no root, no loop mounts);
the initramfs is written as a ``newc`` cpio archive here, and ``qemu-img``
makes the qcow2.  Builds are cached: a directory holding a complete build of
the same :data:`BUILD_VERSION` is reused as it is.
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

MARKER = "peerstack-guest-up"
IP_MARKER = "peerstack-guest-ip:"
DISK_MARKER = "peerstack-disk:"
VOLUME_MARKER = "peerstack-volume:"
PING_MARKER = "peerstack-ping:"
USER_DATA_MARKER = "peerstack-user-data:"
#: bump when the guest changes, so cached builds are remade
BUILD_VERSION = 6
DISK_SIZE = 4 << 20
#: what /init loads, in this order after their dependencies; the power button
#: first, so its event device exists by the time acpid looks for it
MODULES = ("button", "evdev", "virtio_pci", "virtio_blk", "virtio_net", "isofs")

INIT = f"""#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
for m in $(cat /etc/modules); do insmod /lib/modules/$m 2>/dev/null; done
echo "{MARKER}"
i=0
while [ ! -b /dev/vda ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
if [ -b /dev/vda ]; then
    label=$(dd if=/dev/vda bs=512 count=1 2>/dev/null | head -n 1 | tr -dc 'A-Za-z0-9._:-')
    boots=$(dd if=/dev/vda bs=512 skip=1 count=1 2>/dev/null | head -n 1 | tr -dc 0-9)
    boots=$((${{boots:-0}} + 1))
    printf '%s\\n' "$boots" | dd of=/dev/vda bs=512 seek=1 conv=sync,notrunc 2>/dev/null
    sync
    echo "{DISK_MARKER} $label boots=$boots"
fi
for d in vdb vdc vdd vde; do
    [ "$(cat /sys/block/$d/serial 2>/dev/null)" = config-2 ] || continue
    mkdir -p /mnt/config
    mount -t iso9660 -o ro /dev/$d /mnt/config || continue
    ud=/mnt/config/openstack/latest/user_data
    [ -f $ud ] && echo "{USER_DATA_MARKER} $(head -n 1 $ud | tr -d '\r')"
done
mkdir -p /etc/acpi/PWRF /var/log /var/run
printf '#!/bin/sh\\nsync\\npoweroff -f\\n' > /etc/acpi/PWRF/00000080
chmod +x /etc/acpi/PWRF/00000080
acpid -f &
watch_volumes() {{
    seen=""
    while :; do
        now=""
        for d in vdb vdc vdd vde; do
            [ -b /dev/$d ] || continue
            [ "$(cat /sys/block/$d/serial 2>/dev/null)" = config-2 ] && continue
            now="$now $d"
            case "$seen " in *" $d "*) continue ;; esac
            label=$(dd if=/dev/$d bs=512 count=1 2>/dev/null | head -n 1 | tr -dc 'A-Za-z0-9._:-')
            if [ -z "$label" ]; then
                label="written-by-$(tr -dc 'a-f0-9-' < /sys/class/dmi/id/product_uuid 2>/dev/null)"
                printf '%s\\n' "$label" | dd of=/dev/$d bs=512 conv=sync,notrunc 2>/dev/null
            fi
            n=$(dd if=/dev/$d bs=512 skip=1 count=1 2>/dev/null | head -n 1 | tr -dc 0-9)
            n=$((${{n:-0}} + 1))
            printf '%s\\n' "$n" | dd of=/dev/$d bs=512 seek=1 conv=sync,notrunc 2>/dev/null
            sync
            echo "{VOLUME_MARKER} $d $label attaches=$n"
        done
        seen="$now"
        sleep 1
    done
}}
watch_volumes &
ip link set lo up
if ip link set eth0 up 2>/dev/null; then
    udhcpc -i eth0 -s /etc/udhcpc.sh -q -n -t 10 -T 2 >/dev/null 2>&1 || echo "peerstack-guest-nodhcp"
fi
for t in $(tr ' ' '\n' < /proc/cmdline | sed -n 's/^peerstack.ping=//p' | tr , ' '); do
    (
        n=0
        until ping -c 1 -W 1 "$t" >/dev/null 2>&1; do
            n=$((n + 1))
            [ $n -ge 120 ] && {{ echo "{PING_MARKER} $t unreachable"; exit 0; }}
            sleep 1
        done
        echo "{PING_MARKER} $t ok"
    ) &
done
while :; do sleep 3600; done
"""

UDHCPC_SCRIPT = f"""#!/bin/sh
case "$1" in
    bound|renew)
        ip addr add "$ip/${{mask:-24}}" dev "$interface"
        [ -n "$router" ] && ip route add default via "${{router%% *}}"
        echo "{IP_MARKER} $ip" > /dev/console ;;
esac
"""


@dataclass(frozen=True)
class GuestImage:
    """The files of one build."""

    root: Path

    @property
    def kernel(self) -> Path:
        return self.root / "vmlinuz"

    @property
    def initrd(self) -> Path:
        return self.root / "initrd.gz"

    @property
    def raw(self) -> Path:
        return self.root / "disk.raw"

    @property
    def qcow2(self) -> Path:
        return self.root / "disk.qcow2"

    @property
    def stamp(self) -> Path:
        return self.root / "build.json"

    def complete(self) -> bool:
        try:
            stamp = json.loads(self.stamp.read_text())
        except (OSError, ValueError):
            return False
        return stamp.get("version") == BUILD_VERSION and all(
            p.exists() for p in (self.kernel, self.initrd, self.raw, self.qcow2))


class BuildError(Exception):
    """A package could not be fetched or unpacked, or a tool failed."""


def _run(cmd: list[str], cwd: Path | None = None) -> str:
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        raise BuildError(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr.strip()[-500:]}")
    return proc.stdout


def _fetch(packages: list[str], work: Path) -> Path:
    """Download and unpack Debian packages (no install) into ``work/root``."""
    debs = work / "debs"
    debs.mkdir()
    # apt's sandbox user must be able to write the download directory.
    os.chmod(debs, 0o777)
    _run(["apt-get", "download", "-q", *packages], cwd=debs)
    root = work / "root"
    root.mkdir()
    for deb in sorted(debs.glob("*.deb")):
        _run(["dpkg-deb", "-x", str(deb), str(root)])
    return root


def _kernel_package() -> str:
    """The versioned kernel package ``linux-image-cloud-amd64`` points at."""
    out = _run(["apt-cache", "depends", "linux-image-cloud-amd64"])
    for name in re.findall(r"Depends:\s*(linux-image-\S+)", out):
        if name != "linux-image-cloud-amd64":
            return name
    raise BuildError("linux-image-cloud-amd64 names no kernel package (apt-get update?)")


def module_depends(ko: bytes) -> list[str]:
    """The ``depends=`` list of a kernel module, read from its ``.modinfo`` strings."""
    found = re.search(rb"(?:^|\0)depends=([^\0]*)\0", ko)
    if found is None:
        return []
    return [d.decode() for d in found.group(1).split(b",") if d]


def load_order(modules_dir: Path, wanted: tuple[str, ...]) -> list[Path]:
    """Module files for ``wanted`` and their dependencies, each after what it needs."""
    by_name = {p.name[:-3].replace("-", "_"): p for p in modules_dir.rglob("*.ko")}
    order: list[Path] = []
    seen: set[str] = set()

    def visit(name: str) -> None:
        name = name.replace("-", "_")
        if name in seen:
            return
        seen.add(name)
        path = by_name.get(name)
        if path is None:
            raise BuildError(f"kernel module {name} not found (built in, or another kernel?)")
        for dep in module_depends(path.read_bytes()):
            visit(dep)
        order.append(path)

    for name in wanted:
        visit(name)
    return order


class Cpio:
    """A ``newc`` cpio archive, as the kernel unpacks an initramfs."""

    def __init__(self) -> None:
        self.buf = io.BytesIO()
        self._ino = 1

    def _entry(self, name: str, mode: int, data: bytes = b"", rdev: tuple[int, int] = (0, 0)) -> None:
        encoded = name.encode() + b"\0"
        fields = [self._ino, mode, 0, 0, 1, 0, len(data), 0, 0, rdev[0], rdev[1], len(encoded), 0]
        self._ino += 1
        self.buf.write(b"070701" + b"".join(b"%08X" % f for f in fields) + encoded)
        self.buf.write(b"\0" * (-self.buf.tell() % 4))
        self.buf.write(data)
        self.buf.write(b"\0" * (-self.buf.tell() % 4))

    def dir(self, name: str) -> None:
        self._entry(name, 0o040755)

    def file(self, name: str, data: bytes, mode: int = 0o644) -> None:
        self._entry(name, 0o100000 | mode, data)

    def chardev(self, name: str, major: int, minor: int) -> None:
        self._entry(name, 0o020600, rdev=(major, minor))

    def finish(self) -> bytes:
        self._entry("TRAILER!!!", 0)
        return self.buf.getvalue()


def make_initramfs(root: Path) -> bytes:
    """The gzipped initramfs from the unpacked packages under ``root``."""
    modules_root = next((root / "lib" / "modules").iterdir(), None)
    if modules_root is None:
        raise BuildError("the kernel package has no modules")
    cpio = Cpio()
    for d in ("bin", "dev", "etc", "proc", "sys", "tmp", "lib", "lib/modules"):
        cpio.dir(d)
    cpio.chardev("dev/console", 5, 1)
    cpio.file("bin/busybox", (root / "bin" / "busybox").read_bytes(), 0o755)
    cpio.file("init", INIT.encode(), 0o755)
    cpio.file("etc/udhcpc.sh", UDHCPC_SCRIPT.encode(), 0o755)
    names = []
    for path in load_order(modules_root, MODULES):
        cpio.file(f"lib/modules/{path.name}", path.read_bytes())
        names.append(path.name)
    cpio.file("etc/modules", ("\n".join(names) + "\n").encode())
    return gzip.compress(cpio.finish(), compresslevel=6, mtime=0)


def make_disk(path: Path, label: str) -> None:
    """A raw disk: a label line in sector 0, a zero boot counter in sector 1."""
    with open(path, "wb") as f:
        f.write(f"{label}\n".encode().ljust(512, b"\0"))
        f.write(b"0\n".ljust(512, b"\0"))
        f.truncate(DISK_SIZE)


def build(dest: Path, *, label: str = "peerstack-test-disk", force: bool = False) -> GuestImage:
    """Build the guest into ``dest`` (reusing a complete build there unless ``force``)."""
    image = GuestImage(dest)
    if image.complete() and not force:
        return image
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="peerstack-image-") as tmp:
        work = Path(tmp)
        kernel_pkg = _kernel_package()
        root = _fetch([kernel_pkg, "busybox-static"], work)
        vmlinuz = next((root / "boot").glob("vmlinuz-*"), None)
        if vmlinuz is None:
            raise BuildError(f"{kernel_pkg} has no /boot/vmlinuz-*")
        staged = work / "out"
        staged.mkdir()
        shutil.copyfile(vmlinuz, staged / "vmlinuz")
        (staged / "initrd.gz").write_bytes(make_initramfs(root))
        make_disk(staged / "disk.raw", label)
        _run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(staged / "disk.raw"),
              str(staged / "disk.qcow2")])
        for name in ("vmlinuz", "initrd.gz", "disk.raw", "disk.qcow2"):
            os.replace(staged / name, dest / name)
    image.stamp.write_text(json.dumps({"version": BUILD_VERSION, "kernel": kernel_pkg,
                                       "label": label}) + "\n")
    return image


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dest", default="var/test-images/guest",
                        help="output directory (default: var/test-images/guest)")
    parser.add_argument("--label", default="peerstack-test-disk", help="label written on the disk")
    parser.add_argument("--force", action="store_true", help="rebuild even if a build is there")


def run(args: argparse.Namespace) -> int:
    try:
        image = build(Path(args.dest), label=args.label, force=args.force)
    except BuildError as exc:
        print(f"peerstack: {exc}")
        return 1
    for path in (image.kernel, image.initrd, image.raw, image.qcow2):
        print(f"{path}  {path.stat().st_size} bytes")
    return 0
