"""libvirt, driven from trio: every call runs in a worker thread.

libvirt-python is blocking (each call is a round trip to libvirtd, some --
``create``, ``managedSave`` -- take seconds), so :class:`Hypervisor` wraps
each operation in ``trio.to_thread.run_sync``.  One connection is shared
(libvirt connections are thread-safe) and reopened after libvirtd restarts.

Domains are *persistent* (``defineXML``): they outlive the agent and even
libvirtd, which is how an agent restart finds its running servers again.
"""

from __future__ import annotations

import fcntl
import logging
import os
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import trio

from node.log import log_event

try:
    import libvirt
except ImportError:  # the node still serves storage without compute
    libvirt = None

log = logging.getLogger("peerstack.compute")

T = TypeVar("T")

KVM_GET_API_VERSION = 0xAE00
KVM_CREATE_VM = 0xAE01

# libvirt's domain states, by name (virDomainState)
RUNNING, BLOCKED, PAUSED, SHUTDOWN, SHUTOFF, CRASHED, PMSUSPENDED = 1, 2, 3, 4, 5, 6, 7
ON_STATES = frozenset({RUNNING, BLOCKED, PAUSED, SHUTDOWN, PMSUSPENDED})


class HypervisorError(Exception):
    """libvirt refused, or is not there."""


def kvm_usable() -> bool:
    """True if ``/dev/kvm`` makes VMs *and* the CPU advertises VMX/SVM.

    Under nested virtualisation ``/dev/kvm`` may exist and even create VMs
    while the guest CPU lacks the virtualisation flag; such KVM hangs or
    crashes guests, so it is not used.
    """
    try:
        fd = os.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        if fcntl.ioctl(fd, KVM_GET_API_VERSION) != 12:
            return False
        os.close(fcntl.ioctl(fd, KVM_CREATE_VM, 0))
    except OSError:
        return False
    finally:
        os.close(fd)
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line for line in f if line.startswith("flags")), "").split()
    except OSError:
        return False
    return "vmx" in flags or "svm" in flags


def virt_type() -> str:
    """``kvm`` or ``qemu`` (TCG); ``PEERSTACK_VIRT_TYPE`` = kvm/qemu overrides the probe."""
    forced = os.environ.get("PEERSTACK_VIRT_TYPE", "auto")
    if forced in ("kvm", "qemu"):
        return forced
    return "kvm" if kvm_usable() else "qemu"


class Hypervisor:
    """The agent's handle on libvirtd (``qemu:///system`` unless told otherwise)."""

    def __init__(self, uri: str = "qemu:///system") -> None:
        if libvirt is not None:
            # libvirt prints every error to stderr by default; ours are raised and logged.
            libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
        self.uri = uri
        self._conn: Any = None
        self._lock = threading.Lock()

    def _connection(self) -> Any:
        with self._lock:
            if self._conn is not None:
                try:
                    if self._conn.isAlive():
                        return self._conn
                except libvirt.libvirtError:
                    pass
                self._conn = None
            if libvirt is None:
                raise HypervisorError("libvirt-python is not installed")
            try:
                self._conn = libvirt.open(self.uri)
            except libvirt.libvirtError as exc:
                raise HypervisorError(f"cannot connect to {self.uri}: {exc}") from None
            return self._conn

    async def call(self, fn: Callable[[Any], T]) -> T:
        """Run ``fn(connection)`` in a thread; libvirt errors become :class:`HypervisorError`."""
        def work() -> T:
            conn = self._connection()
            try:
                return fn(conn)
            except libvirt.libvirtError as exc:
                raise HypervisorError(str(exc)) from None
        return await trio.to_thread.run_sync(work)

    @staticmethod
    def _lookup(conn: Any, uuid: str) -> Any | None:
        try:
            return conn.lookupByUUIDString(uuid)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                return None
            raise

    async def state(self, uuid: str) -> int | None:
        """The domain's libvirt state, ``None`` if there is no such domain."""
        def work(conn: Any) -> int | None:
            dom = self._lookup(conn, uuid)
            return None if dom is None else dom.state()[0]
        return await self.call(work)

    async def define_and_start(self, xml: str) -> None:
        def work(conn: Any) -> None:
            dom = conn.defineXML(xml)
            dom.create()
        await self.call(work)

    async def start(self, uuid: str) -> None:
        """Boot a defined domain (restoring a managed save if there is one)."""
        def work(conn: Any) -> None:
            dom = self._lookup(conn, uuid)
            if dom is None:
                raise HypervisorError(f"domain {uuid} is not defined")
            if dom.state()[0] not in ON_STATES:
                dom.create()
        await self.call(work)

    async def press_power_button(self, uuid: str) -> None:
        def work(conn: Any) -> None:
            dom = self._lookup(conn, uuid)
            if dom is not None and dom.state()[0] in ON_STATES:
                dom.shutdown()
        await self.call(work)

    async def destroy(self, uuid: str) -> None:
        """Pull the plug (no-op if it is not running)."""
        def work(conn: Any) -> None:
            dom = self._lookup(conn, uuid)
            if dom is not None and dom.state()[0] in ON_STATES:
                try:
                    dom.destroy()
                except libvirt.libvirtError as exc:
                    if dom.state()[0] in ON_STATES:
                        raise exc
        await self.call(work)

    async def shutdown(self, uuid: str, timeout: float) -> bool:
        """ACPI shutdown, then wait up to ``timeout``; ``False`` if the guest ignored it."""
        await self.press_power_button(uuid)
        with trio.move_on_after(timeout):
            while (await self.state(uuid)) in ON_STATES:
                await trio.sleep(0.5)
            return True
        log_event(log, "compute.shutdown_timeout", server=uuid, timeout=timeout)
        return False

    async def managed_save(self, uuid: str) -> bool:
        """Save a running domain's memory and stop it; ``True`` if it was running."""
        def work(conn: Any) -> bool:
            dom = self._lookup(conn, uuid)
            if dom is None or dom.state()[0] not in ON_STATES:
                return False
            dom.managedSave(0)
            return True
        return await self.call(work)

    async def undefine(self, uuid: str) -> None:
        def work(conn: Any) -> None:
            dom = self._lookup(conn, uuid)
            if dom is None:
                return
            if dom.state()[0] in ON_STATES:
                dom.destroy()
            dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE
                              | libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA)
        await self.call(work)

    async def leased_addresses(self, uuid: str) -> list[tuple[str, str]]:
        """``[(mac, ipv4)]`` from the network's DHCP leases (empty until the guest asked)."""
        def work(conn: Any) -> list[tuple[str, str]]:
            dom = self._lookup(conn, uuid)
            if dom is None or dom.state()[0] != RUNNING:
                return []
            found = dom.interfaceAddresses(libvirt.VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_LEASE)
            out = []
            for iface in (found or {}).values():
                for addr in iface.get("addrs") or []:
                    if addr.get("type") == libvirt.VIR_IP_ADDR_TYPE_IPV4:
                        out.append((iface.get("hwaddr") or "", addr["addr"]))
            return out
        return await self.call(work)

    async def network_active(self, name: str) -> bool:
        def work(conn: Any) -> bool:
            try:
                return bool(conn.networkLookupByName(name).isActive())
            except libvirt.libvirtError:
                return False
        return await self.call(work)
