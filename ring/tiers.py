"""The failure-domain tree and how many replicas each part of it should hold.

Devices sit in a four-level tree: region > zone > node (IP address) > device. A
*tier* is one node of that tree. For every tier this module works out

* ``replicas``: how many replicas of an average partition the tier should hold,
  from the weights of the devices beneath it, and
* ``cap``: the most replicas of any *one* partition the tier may hold, which is
  ``ceil(replicas)``. With five equal zones and three replicas each zone should
  hold 0.6 replicas of a partition, so no partition may have two replicas in one
  zone; with two equal zones each holds 1.5 and a partition may have two there.

Weights are honoured as far as the tree allows: a tier never holds more than one
replica per device beneath it, and what a capped tier cannot take is shared among
its siblings in proportion to their weights (water filling).

Tiers are numbered densely per level so the builder can use them as numpy indexes.
Index ``-1`` means "no tier" (an unassigned replica); every per-tier array has one
extra trailing element so that indexing with ``-1`` lands on a harmless sentinel.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Sequence

import numpy as np

from .devices import Device

LEVELS = ("region", "zone", "node", "device")
DEVICE_LEVEL = len(LEVELS) - 1


def _tier_key(dev: Device, level: int) -> tuple[object, ...]:
    return (dev.region, dev.zone, dev.ip, dev.id)[: level + 1]


def water_fill(total: float, weights: np.ndarray, caps: np.ndarray) -> np.ndarray:
    """Share ``total`` in proportion to ``weights`` without any share exceeding its cap.

    Whatever a capped share cannot take is redistributed among the others, again in
    proportion to weight. If the caps add up to less than ``total`` every share is
    simply its cap.
    """
    shares = np.zeros(len(weights))
    free = weights > 0
    remaining = float(total)
    while free.any() and remaining > 1e-12:
        w = weights[free]
        proposal = remaining * w / w.sum()
        over = proposal > caps[free] + 1e-12
        if not over.any():
            shares[free] = proposal
            break
        idx = np.flatnonzero(free)[over]
        shares[idx] = caps[idx]
        remaining -= float(caps[idx].sum())
        free[idx] = False
    return shares


@dataclasses.dataclass
class TierTree:
    """Dense numbering of tiers plus per-tier replica targets and caps.

    ``tier_of[level]`` maps a device id (or -1) to its tier index at that level.
    ``children[level]`` is a padded matrix: row ``t`` lists the tiers at ``level``
    whose parent is tier ``t`` one level up (the root is the single row of level 0).
    ``dest_ok[level]`` marks tiers with some positive weight, the only ones that may
    receive replicas.
    """

    keys: list[list[tuple[object, ...]]]
    tier_of: list[np.ndarray]
    children: list[np.ndarray]
    replicas: list[np.ndarray]
    cap: list[np.ndarray]
    dest_ok: list[np.ndarray]
    dev_of_tier: np.ndarray

    @classmethod
    def build(cls, devices: Sequence[Device], replicas_per_part: float, max_dev_id: int) -> TierTree:
        """Build the tree for ``devices`` holding ``replicas_per_part`` on average."""
        devs = sorted(devices, key=lambda d: (d.region, d.zone, d.ip, d.id))
        keys: list[list[tuple[object, ...]]] = []
        index: list[dict[tuple[object, ...], int]] = []
        for level in range(len(LEVELS)):
            seen: dict[tuple[object, ...], int] = {}
            for d in devs:
                seen.setdefault(_tier_key(d, level), len(seen))
            index.append(seen)
            keys.append(list(seen))

        tier_of = []
        for level in range(len(LEVELS)):
            arr = np.full(max_dev_id + 2, -1, dtype=np.int64)
            for d in devs:
                arr[d.id] = index[level][_tier_key(d, level)]
            tier_of.append(arr)

        children = []
        for level in range(len(LEVELS)):
            n_parents = 1 if level == 0 else len(keys[level - 1])
            groups: list[list[int]] = [[] for _ in range(n_parents)]
            for key, t in index[level].items():
                parent = 0 if level == 0 else index[level - 1][key[:-1]]
                groups[parent].append(t)
            width = max(len(g) for g in groups)
            mat = np.full((n_parents + 1, width), -1, dtype=np.int64)
            for p, g in enumerate(groups):
                mat[p, : len(g)] = g
            children.append(mat)

        weight = [np.zeros(len(keys[lv]) + 1) for lv in range(len(LEVELS))]
        active = [np.zeros(len(keys[lv]) + 1) for lv in range(len(LEVELS))]
        for d in devs:
            for level in range(len(LEVELS)):
                t = index[level][_tier_key(d, level)]
                weight[level][t] += d.weight
                active[level][t] += d.weight > 0

        # Top-down water filling: each tier's target is shared among its children,
        # none of which can hold more than one replica per active device it contains.
        replicas = [np.zeros(len(keys[lv]) + 1) for lv in range(len(LEVELS))]
        parent_share = np.array([replicas_per_part])
        for level in range(len(LEVELS)):
            mat = children[level]
            for p in range(mat.shape[0] - 1):
                kids = mat[p][mat[p] >= 0]
                replicas[level][kids] = water_fill(parent_share[p], weight[level][kids], active[level][kids])
            parent_share = replicas[level]

        cap = [np.ceil(r - 1e-9).astype(np.int64) for r in replicas]
        for c in cap:
            c[-1] = 0
        dest_ok = [a > 0 for a in active]
        dev_of_tier = np.array([k[-1] for k in keys[DEVICE_LEVEL]] + [-1], dtype=np.int64)
        return cls(keys, tier_of, children, replicas, cap, dest_ok, dev_of_tier)

    def desired_parts(self, parts: int) -> np.ndarray:
        """Float partition-replica count each device should hold, indexed by device id."""
        out = np.zeros(len(self.tier_of[0]) - 1)
        out[self.dev_of_tier[:-1]] = self.replicas[DEVICE_LEVEL][:-1] * parts
        return out


def integer_targets(desired: np.ndarray, total: int, current: np.ndarray) -> np.ndarray:
    """Round ``desired`` to integers summing to ``total``, moving as little as possible.

    Largest-remainder rounding; among equal remainders the devices that already hold
    more partitions get the extra one, so rounding alone never forces a move.
    """
    base = np.floor(desired).astype(np.int64)
    short = total - int(base.sum())
    if short > 0:
        frac = desired - base
        eligible = desired > 0
        order = np.lexsort((-current, -frac))
        order = order[eligible[order]]
        base[order[:short]] += 1
    return base


def dispersion_violations(tree: TierTree, assign: np.ndarray) -> np.ndarray:
    """Boolean ``[rows, parts]`` mask of replicas that break a tier cap.

    A replica breaks the cap of tier ``t`` when it is the ``cap[t]+1``-th or later
    replica of its partition in ``t``; earlier rows win, so the mask marks exactly
    the replicas that would have to move to restore dispersion.
    """
    rows = assign.shape[0]
    bad = np.zeros(assign.shape, dtype=bool)
    for level in range(len(LEVELS)):
        t = tree.tier_of[level][assign]
        cap = tree.cap[level]
        for r in range(rows):
            seen = np.zeros(assign.shape[1], dtype=np.int64)
            for r2 in range(r):
                seen += t[r2] == t[r]
            bad[r] |= (t[r] >= 0) & (seen >= (cap[t[r]] if level != DEVICE_LEVEL else 1))
    return bad


def ceil_replicas(replicas: float) -> int:
    """Number of rows needed to hold ``replicas`` (2.5 replicas need 3 rows)."""
    return int(math.ceil(replicas - 1e-9))
