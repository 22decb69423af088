"""Device layouts shared by the ring tests."""

from ring.builder import RingBuilder
from ring.devices import Device


def make_builder(part_power: int, replicas: float = 3, min_part_hours: int = 1, regions: int = 2, zones: int = 5, nodes_per_zone: int = 2, devs_per_node: int = 2, weights: tuple[float, ...] = (100.0,)) -> RingBuilder:
    """A builder with a regular tree: regions x zones x nodes x devices."""
    b = RingBuilder(part_power, replicas, min_part_hours)
    i = 0
    for r in range(1, regions + 1):
        for z in range(1, zones + 1):
            for n in range(nodes_per_zone):
                ip = f"10.{r}.{z}.{n}"
                for d in range(devs_per_node):
                    b.add_device(Device(-1, r, z, ip, 6200, f"d{d}", weights[i % len(weights)]))
                    i += 1
    return b
