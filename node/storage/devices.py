"""Which devices this node serves, and whether each one is usable right now.

A device is the directory ``<storage.root>/<device>`` -- normally a mounted
disk.  A request for a device that is not configured, missing, not a
directory or not writable gets ``507 Insufficient Storage`` (as in Swift) so
the proxy tries another node; the servers never create the device directory
themselves, so an unmounted disk can't silently fill the root filesystem.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from node.config import NodeConfig
from node.log import log_event

log = logging.getLogger("peerstack.storage")


class DeviceUnavailable(Exception):
    """The device cannot take this request; answer 507."""


class Devices:
    def __init__(self, config: NodeConfig) -> None:
        self.root = config.resolve(config.storage.root)
        self.names = frozenset(config.storage.devices)
        self.reserve_bytes = config.storage.reserve_bytes

    def path(self, device: str) -> Path:
        """The device's directory, checked; raises :class:`DeviceUnavailable`.

        Blocks on the file system (stat): call from a worker thread.
        """
        if device not in self.names:
            raise self._unavailable(device, "not configured")
        path = self.root / device
        if not path.is_dir():
            raise self._unavailable(device, "missing or not a directory")
        if not os.access(path, os.W_OK | os.X_OK):
            raise self._unavailable(device, "not writable")
        return path

    def check_space(self, path: Path, device: str, incoming: int) -> None:
        """Refuse a write that would leave less than ``reserve_bytes`` free."""
        st = os.statvfs(path)
        free = st.f_bavail * st.f_frsize
        if free - incoming < self.reserve_bytes:
            raise self._unavailable(device, f"full ({free} bytes free)")

    def _unavailable(self, device: str, why: str) -> DeviceUnavailable:
        log_event(log, "storage.device_unavailable", level=logging.WARNING,
                  device=device, reason=why)
        return DeviceUnavailable(f"{device}: {why}")
