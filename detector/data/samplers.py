"""Which images each process loads, in which order, with which augmentation seed.

Reproducibility: each sample's augmentation is a deterministic function of (seed, epoch, index)
(:func:`sample_seed`), however many workers there are. The train loader's :class:`EpochSampler`
yields ``(epoch, index)`` pairs, so the epoch travels with every index into whichever worker
process loads it (persistent workers hold their own copy of the dataset, so setting an attribute
on the main process's copy would not reach them). Lightning calls ``sampler.set_epoch(epoch)`` at
the start of every training epoch, a resumed one included, and the shuffle order is seeded by
(seed, epoch) as well: a run resumed at epoch e sees the same order and the same augmentation.

Under DDP the samplers shard the data themselves. Both are ``DistributedSampler``s, which Lightning
keeps as they are (it only replaces a loader's sampler that is not one).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from torch.utils.data.distributed import DistributedSampler

__all__ = ["EpochSampler", "ShardSampler", "sample_seed"]


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """The augmentation seed of sample ``index`` in ``epoch`` of a run seeded with ``seed``."""
    return int(np.random.SeedSequence(seed, spawn_key=(1, epoch, index)).generate_state(1)[0])


class EpochSampler(DistributedSampler):
    """Yields ``(epoch, index)`` for this process's share of a dataset of ``length``, shuffled by
    (seed, epoch).

    Under DDP every process draws the same permutation and takes every ``num_replicas``-th index
    from position ``rank``, after dropping the ``length % num_replicas`` last ones so every process
    runs the same number of steps (the train loader drops its incomplete batch anyway).
    Lightning calls :meth:`set_epoch` at the start of each training epoch.
    """

    def __init__(self, length: int, seed: int = 0, num_replicas: int = 1, rank: int = 0):
        super().__init__(range(length), num_replicas, rank, shuffle=True, seed=seed, drop_last=True)
        self.length = length

    def __iter__(self) -> Iterator[tuple[int, int]]:
        rng = np.random.default_rng(np.random.SeedSequence(self.seed, spawn_key=(0, self.epoch)))
        order = rng.permutation(self.length)[: len(self) * self.num_replicas]
        return iter([(self.epoch, int(i)) for i in order[self.rank :: self.num_replicas]])

    def __len__(self) -> int:
        return self.length // self.num_replicas


class ShardSampler(DistributedSampler):
    """Evaluation under DDP: process ``rank`` takes indices ``rank, rank + num_replicas, ...`` in
    order. Every image is evaluated exactly once; shards may differ by one image (torch's
    ``DistributedSampler`` would instead pad them with duplicates, which biases the metric)."""

    def __init__(self, length: int, num_replicas: int, rank: int):
        super().__init__(range(length), num_replicas, rank, shuffle=False)
        self.indices = range(rank, length, num_replicas)

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)
