"""The hypervisor side of a node: image cache, disk overlays, libvirt domains, volumes and networks."""
