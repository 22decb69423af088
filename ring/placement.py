"""Choosing devices for many replicas at once.

The builder hands this module a batch of *slots* (a row and a partition whose device
is unassigned, ``-1``) and it picks a device for each. Python-level loops over
partitions would be far too slow for a million partitions, so the choice is a
descent of the tier tree done for the whole batch in numpy: first a region for every
slot, then a zone inside that region, a node inside that zone, a device on that node.
At each level a slot looks only at the children of the tier it chose one level up,
which keeps every step a small ``[batch, children]`` array operation.

At each level a slot prefers, in order:

1. tiers that hold the fewest of its partition's other replicas (so replicas land in
   unused regions first, then unused zones, then unused nodes);
2. among those, tiers with room: in *strict* mode only tiers still short of their
   target, chosen at random in proportion to how short they are (the Gumbel-max
   trick turns that into one ``argmax``); in *relaxed* mode the least overfilled.

A tier at its per-partition cap is never chosen when caps are respected, and a
device never gets two replicas of one partition. Several slots of a batch may pick
the same device; :meth:`Placer.place` accepts only as many as the device still
needs and retries the rest, so targets are met without a sequential loop.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from .tiers import DEVICE_LEVEL, LEVELS, TierTree

# A batch is processed as one set of numpy arrays; this bounds their size.
CHUNK = 1 << 16
# Tier usage dominates every other preference: no need bonus can outweigh one
# replica fewer in a tier.
_USAGE_PENALTY = 1e9


def ranks_within(keys: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """For each masked element, how many masked elements before it share its key.

    Unmasked elements get a rank larger than any real one. This is how a batch
    decides, per device, which of the slots that chose it are accepted.
    """
    out = np.full(len(keys), np.iinfo(np.int64).max, dtype=np.int64)
    idx = np.flatnonzero(mask)
    k = keys[idx]
    order = np.argsort(k, kind="stable")
    ks = k[order]
    out[idx[order]] = np.arange(len(ks)) - np.searchsorted(ks, ks, side="left")
    return out


class Placer:
    """Places replicas into ``assign`` (a ``[rows, parts]`` int array, -1 = empty).

    ``need`` is indexed by device id (with a trailing sentinel for -1): how many
    more partition-replicas each device should receive; negative means overfilled.
    Both arrays are updated in place as slots are committed.
    """

    def __init__(self, tree: TierTree, assign: np.ndarray, need: np.ndarray, rng: np.random.Generator) -> None:
        self.tree = tree
        self.assign = assign
        self.need = need
        self.rng = rng
        self._devs = tree.dev_of_tier[:-1]
        self.refresh()

    def refresh(self) -> None:
        """Recompute per-tier needs from per-device needs (cheap: one pass over devices)."""
        need = self.need[self._devs]
        pos = np.maximum(need, 0).astype(np.float64)
        self.pos_need = []
        self.best_need = []
        for level in range(len(LEVELS)):
            t = self.tree.tier_of[level][self._devs]
            n = len(self.tree.keys[level]) + 1
            self.pos_need.append(np.bincount(t, weights=pos, minlength=n))
            best = np.full(n, -np.inf)
            np.maximum.at(best, t, need.astype(np.float64))
            self.best_need.append(best)

    def choose(self, parts: np.ndarray, strict: bool, caps: bool) -> np.ndarray:
        """Pick a device for one empty slot of each partition in ``parts``.

        ``parts`` must be distinct: slots of one partition in the same batch would
        not see each other. Returns device ids, -1 where no device qualifies.
        """
        tree = self.tree
        out = np.full(len(parts), -1, dtype=np.int64)
        for start in range(0, len(parts), CHUNK):
            p = parts[start : start + CHUNK]
            existing = self.assign[:, p].T
            alive = np.arange(len(p))
            cur = np.zeros(len(p), dtype=np.int64)
            for level in range(len(LEVELS)):
                mine = tree.tier_of[level][existing[alive]]
                cand = tree.children[level][cur[alive]]
                used = (mine[:, None, :] == cand[:, :, None]).sum(axis=2)
                valid = tree.dest_ok[level][cand]
                if level == DEVICE_LEVEL:
                    valid &= used == 0
                elif caps:
                    valid &= used < tree.cap[level][cand]
                noise = self.rng.random(cand.shape)
                if strict:
                    need = self.pos_need[level][cand]
                    valid &= need > 0
                    with np.errstate(divide="ignore"):
                        score = np.log(need) - np.log(-np.log(noise + 1e-300))
                else:
                    score = self.best_need[level][cand] + noise
                score = np.where(valid, score - used * _USAGE_PENALTY, -np.inf)
                pick = np.argmax(score, axis=1)
                rows = np.arange(len(alive))
                ok = valid[rows, pick]
                cur[alive] = cand[rows, pick]
                alive = alive[ok]
            out[start + alive] = tree.dev_of_tier[cur[alive]]
        return out

    def commit(self, rows: np.ndarray, parts: np.ndarray, devs: np.ndarray) -> None:
        """Write chosen devices into ``assign`` and charge them to ``need``."""
        self.assign[rows, parts] = devs
        np.subtract.at(self.need, devs, 1)
        self.refresh()

    def place(
        self,
        rows: np.ndarray,
        parts: np.ndarray,
        strict: bool,
        caps: bool,
        progress: Callable[[int], None] | None = None,
    ) -> np.ndarray:
        """Fill the given empty slots; return a mask of the slots left unplaced.

        In strict mode a device accepts no more slots than it needs; losers of that
        race are retried with fresh needs, so every round places at least one slot
        per device chosen and the loop ends. Relaxed mode accepts every choice but
        works in small batches so that the least-overfilled device changes often.
        """
        failed = np.zeros(len(parts), dtype=bool)
        pending = np.arange(len(parts))
        while len(pending):
            if strict:
                size = int(min(CHUNK, max(1024, self.pos_need[0][:-1].sum() // 4)))
            else:
                size = 256
            batch, pending = pending[:size], pending[size:]
            devs = self.choose(parts[batch], strict, caps)
            ok = devs >= 0
            failed[batch[~ok]] = True
            if strict:
                ok &= ranks_within(devs, ok) < self.need[devs]
                pending = np.concatenate([pending, batch[(devs >= 0) & ~ok]])
            self.commit(rows[batch[ok]], parts[batch[ok]], devs[ok])
            if progress is not None:
                progress(len(parts) - len(pending))
        return failed
