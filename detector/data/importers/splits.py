"""The splits a source lacks, carved out of its images: stratified, seeded, the same on any machine.

The source's own splits are kept. A missing ``val`` (``test``) split takes ``val_fraction``
(``test_fraction``) of all the images, out of the train split (or out of all the images when the
source has no split). Stratified by each image's rarest class (the class in fewest of the pool's
images; images without boxes are a stratum of their own), so a class of a few images is spread
over the splits rather than left to chance.

Reproducible without a random generator: the pool is ordered by stratum, then by the SHA-256 of
``seed`` and the image's path relative to the dataset's root (a value no library version or
platform changes, and which does not move when other images are added), and dealt out by smooth
weighted round-robin, which gives each split exactly its count and spreads every stratum evenly
over the splits (within one image).
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from detector.errors import ConfigError

__all__ = ["DEFAULT_TEST_FRACTION", "DEFAULT_VAL_FRACTION", "SplitPlan", "plan_splits"]

DEFAULT_VAL_FRACTION = 0.15
DEFAULT_TEST_FRACTION = 0.15


@dataclass
class SplitPlan:
    """Each image's split, and how it came about (what ``split.json`` records)."""

    splits: list[str]
    seed: int
    fractions: dict[str, float]  # the fraction of every carved split
    carved: dict[str, int] = field(default_factory=dict)  # split -> images carved
    pool: str = ""  # what they were carved from: "train", or "all images"
    notes: list[str] = field(default_factory=list)


def _key(seed: int, name: str) -> str:
    return hashlib.sha256(f"{seed}\0{name}".encode()).hexdigest()


def _deal(order: Sequence[int], counts: dict[str, int]) -> dict[int, str]:
    """Smooth weighted round-robin: ``order``'s images to the splits, ``counts[s]`` to split s,
    each split's share spread evenly along ``order``."""
    n = len(order)
    current = dict.fromkeys(counts, 0)
    dealt = {}
    for i in order:
        for s, c in counts.items():
            current[s] += c
        best = max(current, key=current.__getitem__)  # ties: the first in counts' order
        current[best] -= n
        dealt[i] = best
    return dealt


def plan_splits(
    names: Sequence[str],
    labels: Sequence[Sequence[str]],
    given: Sequence[str | None],
    val_fraction: float | None,
    test_fraction: float | None,
    seed: int,
) -> SplitPlan:
    """Each image's split.

    Args:
        names: each image's path relative to the dataset root, ``/``-separated (the stable key).
        labels: each image's class names (one per box).
        given: each image's split in the source (``train``, ``val``, ``test``), or None.
        val_fraction, test_fraction: share of all images for a missing val / test split; None: the
            default (0.15 each). Ignored, with a note, for a split the source has.
        seed: the split's seed.
    """
    fractions = {"val": DEFAULT_VAL_FRACTION if val_fraction is None else val_fraction,
                 "test": DEFAULT_TEST_FRACTION if test_fraction is None else test_fraction}
    for split, f in fractions.items():
        if not 0.0 <= f < 1.0:
            raise ConfigError(f"--{split}-fraction {f}: give a fraction of the images, at least 0 and below 1")
    total = len(names)
    have = {s for s in given if s is not None}
    notes = []
    if have and "train" not in have:
        notes.append(f"the source's {sorted(have)} split(s) have no train split beside them: all images re-split")
        have = set()
    if have:
        pool = [i for i, s in enumerate(given) if s == "train"]
        for split, explicit in (("val", val_fraction), ("test", test_fraction)):
            if split in have and explicit is not None:
                notes.append(f"--{split}-fraction ignored: the source has a {split} split")
    else:
        pool = list(range(total))
    wanted = {s: round(f * total) for s, f in fractions.items() if s not in have and round(f * total) > 0}
    if sum(wanted.values()) >= len(pool):
        raise ConfigError(f"--val-fraction and --test-fraction would take {sum(wanted.values())} of the {len(pool)} "
                          "images they split, leaving none to train on: give smaller fractions")
    images_of = Counter(c for i in pool for c in set(labels[i]))
    strata = {i: min(set(labels[i]), key=lambda c: (images_of[c], c)) if labels[i] else "" for i in pool}
    order = sorted(pool, key=lambda i: (strata[i], _key(seed, names[i])))
    dealt = _deal(order, {**wanted, "train": len(pool) - sum(wanted.values())})
    splits = [dealt.get(i, s or "train") for i, s in enumerate(given if have else [None] * total)]
    return SplitPlan(splits, seed, {s: fractions[s] for s in wanted}, wanted, "train" if have else "all images", notes)
