"""Anchors and input size from the data: the SSD analogue of YOLOv5's autoanchor.

YOLOv5 (``utils/autoanchor.py``) measures the share of training boxes that some anchor fits (its
"best possible recall", by a width/height ratio test) and, below 98 %, evolves new anchor sizes by
k-means. Here an anchor "fits" a box exactly when training's matcher would call it positive for it:
IoU (:func:`detector.core.boxes.batched_box_iou`) strictly above the matching threshold
(:mod:`detector.core.matching`), on the anchors :func:`detector.core.anchors.make_anchors` builds, the boxes
squashed to the square input as the data pipeline squashes them. An SSD anchor also has a position,
so the fit depends on where the box lies, not only on its shape.

The choice, for boxes ``(N, 4)`` xyxy in ``[0, 1]`` (pixels over the image's size):

1. image size ``S``: the smallest of :data:`IMAGE_SIZES` at which ``target`` of the boxes have their
   shorter side at least :data:`MIN_OBJECT_PX` pixels (two cells of the finest stride-8 map); the
   grids are then those the SSD head makes at ``S`` (:func:`detector.model.head.head_grid_sizes`).
2. anchors: every combination of a subset of those grids, up to ``max_zooms`` of :data:`ZOOMS` and
   up to ``max_ratios`` of :data:`RATIOS` (``k = zooms x ratios`` per cell, the same on every grid,
   as the head needs) is scored, and the one with the fewest anchors that fits ``target`` of the
   boxes wins (ties: the higher coverage). When none does, the highest coverage wins (ties: fewer
   anchors) and :attr:`AnchorChoice.reached` says so.

The search is exhaustive over that small set and takes about a second: for each box, grid and
anchor shape only the anchor in the cell nearest the box's centre can be its best of that shape
(overlap along each axis only shrinks as the centres part), so one IoU per box, grid and shape
gives a bit per (grid, zoom, ratio, box), and a combination's coverage is an OR and a popcount.
:func:`best_anchor_iou` then checks the winner against every anchor, the matcher's way.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import combinations

import numpy as np
import torch
from torch import Tensor

from detector.core.anchors import AnchorConfig, Anchors, make_anchors
from detector.core.boxes import batched_box_iou, paired_box_iou, xyxy_to_cxcywh
from detector.defaults import IMAGE_SIZE, MATCH_IOU
from detector.model.head import head_grid_sizes

__all__ = [
    "IMAGE_SIZES",
    "MIN_OBJECT_PX",
    "RATIOS",
    "ZOOMS",
    "AnchorChoice",
    "best_anchor_iou",
    "choose_anchors",
    "choose_image_size",
    "nearest_cell_iou",
]

IMAGE_SIZES: tuple[int, ...] = tuple(range(IMAGE_SIZE, 641, 32))
"""Input sides to choose from: 224 (the lesson's, ImageNet's) to 640, multiples of the stride 32."""

MIN_OBJECT_PX = 16
"""The shorter side, in input pixels, that all but ``1 - target`` of the boxes should keep."""

ZOOMS: tuple[float, ...] = (0.5, 0.6, 0.75, 0.9, 1.0, 1.15, 1.3, 1.5, 1.75, 2.0)
"""Anchor zooms to choose from (the lesson's 0.75, 1.0, 1.3 among them): about 2 ** (1/4) apart."""

RATIOS: tuple[tuple[float, float], ...] = (
    (1.0, 1.0), (1.0, 0.67), (0.67, 1.0), (1.0, 0.5), (0.5, 1.0), (1.0, 0.33), (0.33, 1.0),
)
"""``(rh, rw)`` ratios to choose from, as the lesson writes them: square; tall and wide 3:2, 2:1, 3:1."""

_SEARCH_BOXES = 10_000  # the search sees at most this many boxes (a fixed random sample); the check sees all


@dataclass(frozen=True)
class AnchorChoice:
    """What :func:`choose_anchors` chose and how well it fits.

    Attributes:
        image_size: S, the network's input side.
        anchors: the grids (finest first), zooms and ratios.
        num_anchors: A, the anchors they make.
        coverage: the share of the boxes whose best IoU with any anchor is above ``iou_threshold``.
        boxes: N, the boxes measured.
        target: the coverage asked for; ``reached``: whether ``coverage >= target``.
        iou_threshold: the matching threshold.
        small_side_px: the ``1 - target`` quantile of the boxes' shorter side at ``image_size`` px.
        seconds: the time the choice took.
    """

    image_size: int
    anchors: AnchorConfig
    num_anchors: int
    coverage: float
    boxes: int
    target: float
    reached: bool
    iou_threshold: float
    small_side_px: float
    seconds: float

    def summary(self) -> str:
        """The choice in one line."""
        a = self.anchors
        ratios = [[float(x) for x in r] for r in a.ratios]
        fit = "" if self.reached else f" (the target {100 * self.target:g} % is out of reach: the best found)"
        return (
            f"image_size {self.image_size}, grids {list(a.grids)}, zooms {list(a.zooms)}, ratios {ratios}: "
            f"{self.num_anchors} anchors (k = {len(a.zooms) * len(a.ratios)}); {100 * self.coverage:.1f} % of "
            f"{self.boxes} training boxes have an anchor at IoU > {self.iou_threshold:g}{fit}; "
            f"chosen in {self.seconds:.1f} s"
        )


def best_anchor_iou(boxes: Tensor, anchors: Anchors, chunk: int = 1024) -> Tensor:
    """``(N, 4)`` xyxy boxes in ``[0, 1]`` -> ``(N,)`` each box's best IoU with any of the anchors
    (:func:`detector.core.boxes.batched_box_iou`, as the matcher computes it)."""
    xyxy = anchors.xyxy.to(boxes)  # (A, 4)
    parts = [batched_box_iou(boxes[None, i : i + chunk], xyxy).amax(dim=2)[0] for i in range(0, len(boxes), chunk)]
    return torch.cat(parts) if parts else boxes.new_zeros(0)  # (N,)


def nearest_cell_iou(boxes: Tensor, grid: int, zooms: Sequence[float], ratios: Sequence[Sequence[float]]) -> Tensor:
    """``(N, 4)`` xyxy boxes in ``[0, 1]`` -> ``(N, k)``: each box's IoU with each of the ``k`` anchors
    of ``make_anchors([grid], zooms, ratios)`` in the cell nearest the box's centre, which is the
    box's best IoU with any anchor of that shape on that grid."""
    anchors = make_anchors([grid], zooms, ratios)
    k = anchors.k
    centre = xyxy_to_cxcywh(boxes)[:, :2]  # (N, 2) x, y
    col, row = (centre * grid).floor().clamp(0, grid - 1).long().unbind(dim=1)  # (N,) each
    rows = (row * grid + col)[:, None] * k + torch.arange(k)  # (N, k) rows of make_anchors' order
    return paired_box_iou(boxes[:, None, :], anchors.xyxy.to(boxes)[rows])  # (N, k)


def choose_image_size(
    boxes: Tensor, target: float = 0.99, min_px: float = MIN_OBJECT_PX, sizes: Sequence[int] = IMAGE_SIZES
) -> int:
    """The smallest of ``sizes`` at which ``target`` of the ``(N, 4)`` boxes (xyxy in ``[0, 1]``)
    keep a shorter side of at least ``min_px`` pixels; the largest when none does."""
    side = _small_side(boxes, target)
    return next((s for s in sorted(sizes) if side * s >= min_px), max(sizes))


def choose_anchors(
    boxes: Tensor,
    iou_threshold: float = MATCH_IOU,
    target: float = 0.99,
    image_size: int | None = None,
    zooms: Sequence[float] = ZOOMS,
    ratios: Sequence[Sequence[float]] = RATIOS,
    max_zooms: int = 3,
    max_ratios: int = 3,
    seed: int = 0,
) -> AnchorChoice:
    """The image size and the fewest anchors that fit ``target`` of the boxes (module docstring).

    Args:
        boxes: ``(N, 4)`` float xyxy in ``[0, 1]``, the training split's boxes, N >= 1.
        iou_threshold: the matcher's; a box fits an anchor at IoU strictly above it.
        image_size: S to use (default: :func:`choose_image_size`).
        zooms, ratios: the candidates; at most ``max_zooms`` and ``max_ratios`` of them are taken.
        seed: of the sample the search sees when N > 10,000.
    """
    start = time.perf_counter()
    if len(boxes) == 0:
        raise ValueError("choosing anchors needs at least one box")
    boxes = boxes.float()
    size = image_size if image_size is not None else choose_image_size(boxes, target)
    grids = head_grid_sizes(size)
    sample = boxes
    if len(boxes) > _SEARCH_BOXES:
        sample = boxes[torch.randperm(len(boxes), generator=torch.Generator().manual_seed(seed))[:_SEARCH_BOXES]]
    shape = (len(zooms), len(ratios))
    fits = torch.stack([nearest_cell_iou(sample, g, zooms, ratios) > iou_threshold for g in grids])  # (G, N, Z*R)
    bits = _pack(fits.reshape(len(grids), len(sample), *shape).permute(0, 2, 3, 1).numpy())  # (G, Z, R, W)
    grid_pick, zoom_pick, ratio_pick = _search(bits, [g * g for g in grids], max_zooms, max_ratios, target * len(sample))
    anchors = AnchorConfig(
        grids=[grids[i] for i in grid_pick],
        zooms=[float(zooms[i]) for i in zoom_pick],
        ratios=[tuple(float(x) for x in ratios[i]) for i in ratio_pick],
    )
    made = anchors.make()
    coverage = float((best_anchor_iou(boxes, made) > iou_threshold).float().mean())
    return AnchorChoice(
        image_size=size,
        anchors=anchors,
        num_anchors=len(made),
        coverage=coverage,
        boxes=len(boxes),
        target=target,
        reached=coverage >= target,
        iou_threshold=iou_threshold,
        small_side_px=_small_side(boxes, target) * size,
        seconds=time.perf_counter() - start,
    )


def _small_side(boxes: Tensor, target: float) -> float:
    """The ``1 - target`` quantile of the ``(N, 4)`` boxes' shorter side."""
    wh = boxes[:, 2:] - boxes[:, :2]  # (N, 2)
    return float(torch.quantile(wh.amin(dim=1), 1.0 - target))


def _pack(fits: np.ndarray) -> np.ndarray:
    """``(..., N)`` bool -> ``(..., W)`` uint64, N bits packed into W = ceil(N / 64) words."""
    packed = np.packbits(fits, axis=-1)  # (..., ceil(N / 8)) uint8
    pad = [(0, 0)] * (packed.ndim - 1) + [(0, (-packed.shape[-1]) % 8)]
    return np.ascontiguousarray(np.pad(packed, pad)).view(np.uint64)


def _search(
    bits: np.ndarray, cells: list[int], max_zooms: int, max_ratios: int, need: float
) -> tuple[list[int], list[int], list[int]]:
    """Every (grid subset, zoom subset, ratio subset): the fewest anchors covering at least ``need``
    boxes (ties: more boxes), else the most boxes (ties: fewer anchors).

    Args:
        bits: ``(G, Z, R, W)`` packed: box ``n`` fits an anchor of grid ``g``, zoom ``z``, ratio ``r``.
        cells: ``(G,)`` cells per grid, ``g * g``.

    Returns:
        The chosen grid, zoom and ratio indices, each ascending.
    """
    G, Z, R, _ = bits.shape
    zoom_sets = [c for n in range(1, min(max_zooms, Z) + 1) for c in combinations(range(Z), n)]
    ratio_sets = [c for n in range(1, min(max_ratios, R) + 1) for c in combinations(range(R), n)]
    k = np.array([len(z) for z in zoom_sets])[:, None] * np.array([len(r) for r in ratio_sets])[None, :]  # (Zs, Rs)
    by_zooms = np.stack([np.bitwise_or.reduce(bits[:, list(z)], axis=1) for z in zoom_sets], axis=1)  # (G, Zs, R, W)
    # (G, Zs, Rs, W): per grid, for each zoom set and ratio set, the boxes that one of its anchors fits
    fits = np.stack([np.bitwise_or.reduce(by_zooms[:, :, list(r)], axis=2) for r in ratio_sets], axis=2)
    best: tuple | None = None  # (key, grids, zoom set, ratio set); a larger key is better
    stack = [(0, np.zeros_like(fits[0]), ())]  # depth-first over the grid subsets
    while stack:
        i, covered, picked = stack.pop()  # covered (Zs, Rs, W): the boxes the grids picked so far fit
        if i < G:
            stack += [(i + 1, covered, picked), (i + 1, covered | fits[i], (*picked, i))]
            continue
        if not picked:
            continue
        count = np.bitwise_count(covered).sum(axis=-1, dtype=np.int64)  # (Zs, Rs) boxes covered
        anchors = k * sum(cells[g] for g in picked)  # (Zs, Rs)
        reached = count >= need - 1e-9  # (Zs, Rs)
        # reached: fewer anchors, then more boxes; not reached (below every reached key): more boxes, then fewer anchors
        key = np.where(reached, (1 << 62) - anchors * (1 << 32) + count, count * (1 << 32) - anchors)  # (Zs, Rs)
        zs, rs = np.unravel_index(int(np.argmax(key)), key.shape)
        if best is None or key[zs, rs] > best[0]:
            best = (key[zs, rs], picked, zoom_sets[zs], ratio_sets[rs])
    assert best is not None
    return list(best[1]), list(best[2]), list(best[3])
