"""The consistent-hash ring: devices, the builder that places partitions on them, the signed ring file and lookups. Pure library code: no network, no imports from the rest of peerstack."""
