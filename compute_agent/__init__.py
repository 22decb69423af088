"""The hypervisor side of a node: image cache, disk overlays and libvirt domains.

* :mod:`compute_agent.agent` -- the agent: internal RPC (``/compute/...``)
  the proxy's scheduler calls, server builds, actions and state sync, server
  records written into the ring;
* :mod:`compute_agent.image_cache` -- images fetched from the ring into
  ``_base/<sha256>``, verified;
* :mod:`compute_agent.disks` -- ``qemu-img``: base checks, qcow2 overlays,
  flattened snapshots;
* :mod:`compute_agent.domain_xml` / :mod:`compute_agent.hypervisor` -- the
  libvirt domain of a server and the libvirt calls (in threads).

Networking is libvirt's ``default`` NAT network (``virbr0``, DHCP by
libvirt's dnsmasq); peerstack's own bridges, VXLAN and security groups, and
volumes, come with later work.  ``scripts/install-compute.sh`` installs and
starts QEMU/libvirt.

Files live under ``<storage root>/compute/``: ``_base/`` (the image cache)
and ``instances/<server id>/`` (``disk``, ``console.log``,
``instance.json``).
"""

from __future__ import annotations

from compute_agent.agent import ComputeAgent
from node.daemon import Node


def install(node: Node) -> None:
    """Serve the agent RPC on the internal port (route ``compute``) and run its sync service."""
    ComputeAgent(node).install()
