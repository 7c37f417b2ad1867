"""Did an idea help? The paired bootstrap of a difference in COCO mAP between configs trained with
several seeds each, evaluated on the same images.

Each side (a config) has one run per seed; every run was evaluated on the same N images
(:class:`~detector.evaluation.coco_matches.CocoMatches`). A side's value of a metric is its mean
over seeds; the difference of side B from side A is B's mean less A's. Its 95 % interval comes from
the paired bootstrap with percentile intervals (Efron and Tibshirani, *An Introduction to the
Bootstrap*, 1993, ch. 13):

1. draw N images with replacement, the same draw for every run of every side (paired: an easy image
   drawn twice helps both sides twice);
2. with ``resample_seeds`` (the default), also draw the seed indices with replacement, the same
   indices on every side (seed ``s`` of A pairs with seed ``s`` of B), so that the interval holds
   the training noise between seeds as well as the noise of a small test split; without it, every
   seed counts once in every resample and the interval holds the split's noise alone (it answers
   "are these trained models better on images like these", not "does this config train better
   models");
3. recompute every run's metric on the drawn images (:meth:`CocoMatches.metrics`, exact and fast),
   average over the drawn seeds, take the difference from side A;
4. the interval: the 2.5th and 97.5th percentiles of the differences over the resamples.

The difference reported is the one on the split as it is (every image and seed once). An interval
that excludes 0 shows a difference; one that contains it shows none (which is not a proof that
there is none: more seeds or a larger split narrow it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from detector.evaluation.coco_matches import METRICS, CocoMatches

__all__ = ["Comparison", "Difference", "compare_runs", "draw_counts", "percentile_interval"]

LEVEL = 0.95
"""The confidence of the intervals: 95 %."""


def draw_counts(n: int, resamples: int, generator: torch.Generator) -> Tensor:
    """``resamples`` draws of ``n`` items with replacement, as counts ``(resamples, n)`` (float64):
    how often each item was drawn (each row sums to ``n``)."""
    picks = torch.randint(0, n, (resamples, n), generator=generator)
    return torch.zeros(resamples, n, dtype=torch.float64).scatter_add_(1, picks, torch.ones(resamples, n, dtype=torch.float64))


def percentile_interval(samples: Tensor, level: float = LEVEL) -> tuple[float, float]:
    """The percentile interval of bootstrap ``samples`` ``(R,)``: the ``(1 - level) / 2`` and
    ``(1 + level) / 2`` quantiles (NaN samples, resamples where a metric is undefined, left out)."""
    kept = samples[~samples.isnan()].double()
    if not len(kept):
        return math.nan, math.nan
    low, high = torch.quantile(kept, torch.tensor([(1 - level) / 2, (1 + level) / 2], dtype=torch.float64)).tolist()
    return low, high


@dataclass
class Difference:
    """One side's difference from the first side (the baseline) in one metric.

    Attributes:
        difference: the side's mean over seeds less the baseline's, on the split as it is.
        low, high: the bootstrap interval of the difference (:data:`LEVEL`), seeds and images
            resampled (or images only, as the comparison was asked for).
        images_only: the interval with the images resampled and every seed kept (the split's noise
            alone), for reference.
        level: the interval's confidence.
    """

    difference: float
    low: float
    high: float
    images_only: tuple[float, float]
    level: float = LEVEL

    @property
    def shown(self) -> int:
        """+1: the interval lies above 0 (better), -1: below 0 (worse), 0: it contains 0."""
        return 1 if self.low > 0 else -1 if self.high < 0 else 0

    def verdict(self, side: str, baseline: str) -> str:
        """``B better (+0.031, 95 % CI +0.012 to +0.050)``, ``B worse (...)`` or ``no difference
        shown between B and A (...)``."""
        numbers = f"({self.difference:+.3f}, {self.level:.0%} CI {self.low:+.3f} to {self.high:+.3f})".replace("%", " %")
        if self.shown:
            return f"{side} {'better' if self.shown > 0 else 'worse'} than {baseline} {numbers}"
        return f"no difference shown between {side} and {baseline} {numbers}"


@dataclass
class Comparison:
    """One metric over every side.

    Attributes:
        metric: ``map``, ``map_50`` or ``map_75``.
        per_seed: per side, the metric of each seed's run on the split as it is.
        differences: per side after the first, its :class:`Difference` from the first.
    """

    metric: str
    per_seed: list[list[float]]
    differences: list[Difference] = field(default_factory=list)

    @property
    def means(self) -> list[float]:
        return [sum(v) / len(v) for v in self.per_seed]

    @property
    def sds(self) -> list[float | None]:
        """The sample standard deviation over seeds (``None`` with one seed)."""
        return [float(torch.tensor(v, dtype=torch.float64).std()) if len(v) > 1 else None for v in self.per_seed]

    def as_dict(self) -> dict[str, Any]:
        return {
            "metric": self.metric,
            "sides": [{"mean": m, "sd": s, "per_seed": v} for m, s, v in zip(self.means, self.sds, self.per_seed)],
            "differences": [
                {"difference": d.difference, "low": d.low, "high": d.high, "level": d.level, "shown": d.shown,
                 "images_only": {"low": d.images_only[0], "high": d.images_only[1]}}
                for d in self.differences
            ],
        }


def _seed_mean(values: Tensor, counts: Tensor) -> Tensor:
    """One side's mean over its seeds in each resample: ``values`` ``(S, R)``, ``counts`` ``(R, S)``
    (how often each seed was drawn) -> ``(R,)``."""
    return (values * counts.T).sum(0) / counts.sum(1)


def compare_runs(
    runs: list[list[CocoMatches]],
    resamples: int = 1000,
    seed: int = 0,
    resample_seeds: bool = True,
    level: float = LEVEL,
) -> list[Comparison]:
    """The paired bootstrap (module docstring) of every side's difference from the first.

    Args:
        runs: per side, per seed (the same number on every side; seed ``s`` of each side paired),
            the run's matches on the same N images.
        resamples: how many bootstrap resamples.
        seed: the resampling's random seed (the same seed, the same intervals).
        resample_seeds: draw the seeds with replacement too (module docstring, step 2).
        level: the intervals' confidence.

    Returns:
        one :class:`Comparison` per metric of :data:`~detector.evaluation.coco_matches.METRICS`.
    """
    seeds = {len(side) for side in runs}
    if len(runs) < 2 or len(seeds) != 1 or not min(seeds):
        raise ValueError(f"compare_runs needs two sides or more with the same number of runs (>= 1); got {[len(s) for s in runs]}")
    images = {m.num_images for side in runs for m in side}
    if len(images) != 1:
        raise ValueError(f"every run must be evaluated on the same images; got image counts {sorted(images)}")
    (n,), (S,) = images, seeds
    generator = torch.Generator().manual_seed(seed)
    image_counts = draw_counts(n, resamples, generator)  # (R, N), first: the images do not depend on resample_seeds
    seed_counts = draw_counts(S, resamples, generator) if resample_seeds else torch.ones(resamples, S, dtype=torch.float64)
    full = [[m.metrics() for m in side] for side in runs]  # per side, per seed: {metric: (1,)}
    drawn = [[m.metrics(image_counts) for m in side] for side in runs]  # per side, per seed: {metric: (R,)}
    comparisons = []
    for metric in METRICS:
        values = torch.stack([torch.stack([d[metric] for d in side]) for side in drawn])  # (sides, S, R)
        per_seed = [[float(f[metric][0]) for f in side] for side in full]
        comparison = Comparison(metric, per_seed)
        every_seed = torch.ones_like(seed_counts)
        for k in range(1, len(runs)):
            chosen = _seed_mean(values[k], seed_counts) - _seed_mean(values[0], seed_counts)
            images_only = _seed_mean(values[k], every_seed) - _seed_mean(values[0], every_seed)
            low, high = percentile_interval(chosen, level)
            difference = sum(per_seed[k]) / S - sum(per_seed[0]) / S
            comparison.differences.append(Difference(difference, low, high, percentile_interval(images_only, level), level))
        comparisons.append(comparison)
    return comparisons
