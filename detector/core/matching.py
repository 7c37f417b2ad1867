"""Anchor <-> ground-truth assignment for a whole batch: the lesson's ``map_to_ground_truth``, and
ATSS's adaptive rule beside it.

The lesson matched one image at a time, with a Python loop over its objects; here one set of
tensor operations matches every anchor of every image (no loop over images or objects).

``method="fixed"`` (the default) has exactly the lesson's rules:

1. IoU ``(B, M, A)`` of every ground-truth box with every anchor; padding rows (label ``-1``) are
   set to ``-1`` so they never win anything.
2. Each anchor takes its best object (ties: the lowest object index, ``torch.max``'s first maximum).
3. Each real object's best anchor (ties: the lowest anchor index) is forced to that object, its
   overlap set to :data:`FORCED_OVERLAP` = 1.99, above any threshold. When several objects share
   a best anchor, the LATER object (highest index) gets it, as the lesson's
   ``for i, o in enumerate(prior_idx): gt_idx[o] = i`` does; the earlier objects keep only the
   anchors they win in step 2. (A scatter with duplicate indices is not deterministic, so the
   winner is picked with ``scatter_reduce(..., "amax")`` over object indices.)
4. Anchors with overlap ``> iou_threshold`` (strictly, as the lesson's ``gt_overlap > 0.4``) are
   positive; the rest are background. Images without objects (and ``M = 0``) are all background.

``method="atss"`` (Zhang et al. 2020, "Bridging the Gap Between Anchor-based and Anchor-free
Detection via Adaptive Training Sample Selection", Algorithm 1, as mmdetection's ``ATSSAssigner``
implements it) replaces the one threshold by one per object:

1. The same IoU ``(B, M, A)``, and the squared distance of every anchor's centre to every object's
   centre (squared: the same order as the distance, one square root fewer).
2. On each grid, each object's ``atss_topk`` anchors nearest its centre are its candidates (all of
   the grid's anchors if it has fewer; ties: the lowest anchor index, as a stable sort has them).
   With k anchors per cell the nearest cell's k shapes tie, so ``atss_topk = 9`` on the lesson's
   9-anchor cells takes the nearest cell of each grid.
3. The object's threshold is the mean + the standard deviation (unbiased, as ``torch.std``; 0 for
   a single candidate) of its candidates' IoU; a candidate with IoU ``>=`` it whose centre lies
   strictly inside the object is positive for it.
4. An anchor positive for several objects goes to the one it overlaps most (ties: the lowest index).
5. ATSS forces nothing, and mmdetection leaves an object without a positive unlearned. Here such an
   object (a small one whose candidates' centres all miss it, or whose anchors went to objects they
   overlap more) is forced onto the anchor it overlaps most among those still background, as the
   lesson's step 3 forces (overlap :data:`FORCED_OVERLAP`; the later object wins an anchor two of
   them want), in one pass. It never takes an anchor ATSS gave another object: forcing the
   object's very best anchor would, in the usual case of two overlapping objects wanting the same
   anchor, hand it to the one that fits it worse and leave the other without. An object that
   overlaps no background anchor at all stays without a positive.

Background anchors keep their best-overlap object and its IoU in ``matched_idx`` and ``overlap``,
under either rule.
"""

from __future__ import annotations

from typing import Literal, NamedTuple, get_args

import torch
from torch import Tensor

from detector.core.anchors import Anchors
from detector.core.boxes import batched_box_iou
from detector.defaults import ATSS_TOPK, MATCH_IOU

__all__ = ["FORCED_OVERLAP", "MATCHINGS", "Match", "Matching", "match"]

FORCED_OVERLAP = 1.99
"""The overlap the lesson gives each object's best anchor: above any IoU, so always positive."""

Matching = Literal["fixed", "atss"]
MATCHINGS: tuple[str, ...] = get_args(Matching)
"""The matching rules: the lesson's fixed threshold, ATSS's adaptive one."""


class Match(NamedTuple):
    """Per-anchor targets for a batch.

    Attributes:
        matched_idx: ``(B, A)`` int64 index into the batch's ``M`` objects of each anchor's object
            (for background anchors: their best-overlap object, or 0 in an image without objects).
        positive: ``(B, A)`` bool, the anchor is responsible for its object.
        target_labels: ``(B, A)`` int64 class of the matched object in ``0..C-1``; ``-1`` = background.
        target_boxes: ``(B, A, 4)`` xyxy in ``[0, 1]`` of the matched object; zeros for background.
        overlap: ``(B, A)`` IoU with the matched object, :data:`FORCED_OVERLAP` for forced anchors,
            0 in images without objects.
    """

    matched_idx: Tensor
    positive: Tensor
    target_labels: Tensor
    target_boxes: Tensor
    overlap: Tensor


def match(
    anchors: Anchors,
    boxes: Tensor,
    labels: Tensor,
    iou_threshold: float = MATCH_IOU,
    method: Matching = "fixed",
    atss_topk: int = ATSS_TOPK,
) -> Match:
    """Assign every anchor of every image to a ground-truth object or to background.

    Args:
        anchors: the ``A`` anchors (their ``xyxy`` corners are what is compared).
        boxes: ``(B, M, 4)`` float xyxy in ``[0, 1]``; rows with label ``-1`` are padding.
        labels: ``(B, M)`` int64 class in ``0..C-1``, ``-1`` for padding. ``M`` may be 0.
        iou_threshold: ``"fixed"``: an anchor whose best IoU is strictly above this is positive
            (lesson: 0.4). ``"atss"`` does not read it.
        method: ``"fixed"`` (the lesson's) or ``"atss"`` (adaptive), see the module docstring.
        atss_topk: ``"atss"``: the candidates per object and grid (the paper's k = 9).

    Returns:
        :class:`Match`, see the module docstring for the rules, the tie rules included.
    """
    if boxes.dim() != 3 or boxes.shape[-1] != 4 or labels.shape != boxes.shape[:2]:
        raise ValueError(
            f"expected boxes (B, M, 4) and labels (B, M); got {tuple(boxes.shape)} and {tuple(labels.shape)}"
        )
    if not 0.0 <= iou_threshold < 1.0:
        raise ValueError(f"iou_threshold must be in [0, 1); got {iou_threshold}")
    if method not in MATCHINGS:
        raise ValueError(f"unknown matching {method!r}; choose one of {list(MATCHINGS)}")
    if method == "atss" and atss_topk < 1:
        raise ValueError(f"atss_topk must be >= 1; got {atss_topk}")
    with torch.no_grad():  # a with block, not a decorator: mutmut mutates no decorated function
        B, M = labels.shape
        if M == 0:  # one all-padding column keeps every reduction below well-defined
            boxes, labels, M = boxes.new_zeros(B, 1, 4), labels.new_full((B, 1), -1), 1
        A = len(anchors)
        is_real = labels >= 0  # (B, M)
        iou = batched_box_iou(boxes, anchors.xyxy.to(boxes))  # (B, M, A)
        iou = iou.masked_fill(~is_real[:, :, None], -1.0)  # (B, M, A) padding never wins
        if method == "fixed":
            matched_idx, positive, overlap = _fixed(iou, is_real, iou_threshold)
        else:
            matched_idx, positive, overlap = _atss(iou, is_real, boxes, anchors, atss_topk)

        # Gather each anchor's class and box.
        target_labels = labels.gather(1, matched_idx).masked_fill(~positive, -1)  # (B, A)
        target_boxes = boxes.gather(1, matched_idx[:, :, None].expand(B, A, 4))  # (B, A, 4)
        target_boxes = target_boxes.masked_fill(~positive[:, :, None], 0.0)  # (B, A, 4)
        return Match(matched_idx, positive, target_labels, target_boxes, overlap)


def _forced_anchors(iou: Tensor, objects: Tensor) -> Tensor:
    """The lesson's step 3 for the objects marked in ``objects`` ``(B, M)`` bool: ``(B, A)`` int64, the
    object each anchor is forced to, ``-1`` for none (each object's best anchor, ties the lowest
    anchor; the later object winning a shared anchor: amax over object indices, the others -1)."""
    B, M, A = iou.shape
    best_anchor = iou.argmax(dim=2)  # (B, M)
    index = torch.arange(M, device=iou.device).expand(B, M).masked_fill(~objects, -1)  # (B, M)
    return index.new_full((B, A), -1).scatter_reduce(1, best_anchor, index, reduce="amax")  # (B, A)


def _fixed(iou: Tensor, is_real: Tensor, iou_threshold: float) -> tuple[Tensor, Tensor, Tensor]:
    """The lesson's rule: ``(matched_idx, positive, overlap)``, each ``(B, A)``."""
    # Step 2: each anchor's best object (the lesson's gt_overlap, gt_idx = overlaps.max(0)).
    overlap, matched_idx = iou.max(dim=1)  # (B, A) each
    # Step 3: each object's best anchor (the lesson's prior_idx = overlaps.max(1)[1]).
    forced = _forced_anchors(iou, is_real)  # (B, A)
    is_forced = forced >= 0  # (B, A)
    matched_idx = torch.where(is_forced, forced, matched_idx)  # (B, A)
    overlap = torch.where(is_forced, overlap.new_tensor(FORCED_OVERLAP), overlap.clamp(min=0))  # (B, A)
    # Step 4: threshold.
    return matched_idx, overlap > iou_threshold, overlap


def _atss(iou: Tensor, is_real: Tensor, boxes: Tensor, anchors: Anchors, topk: int) -> tuple[Tensor, Tensor, Tensor]:
    """ATSS's rule: ``(matched_idx, positive, overlap)``, each ``(B, A)``; ``iou`` ``(B, M, A)`` with
    padding rows at -1, ``boxes`` ``(B, M, 4)``."""
    B, M, A = iou.shape
    anchor_x, anchor_y = anchors.cxcywh[:, :2].to(boxes).t()  # (A,) each
    x1, y1, x2, y2 = (c[:, :, None] for c in boxes.unbind(dim=2))  # (B, M, 1) each
    centre_x, centre_y = (x1 + x2) / 2, (y1 + y2) / 2  # (B, M, 1) each

    # Steps 1-2, grid by grid (a handful: not a loop over images or objects): squared centre
    # distances, then the topk nearest; among anchors tied with the k-th, the lowest first.
    candidates, start = [], 0
    for size in anchors.level_sizes():
        dx = centre_x - anchor_x[start : start + size]  # (B, M, size)
        dy = centre_y - anchor_y[start : start + size]  # (B, M, size)
        distance = dx.mul_(dx).add_(dy.mul_(dy))  # (B, M, size)
        k = min(topk, size)
        kth = distance.topk(k, dim=2, largest=False).values[:, :, -1:]  # (B, M, 1) the k-th smallest
        nearer, tied = distance < kth, distance == kth  # (B, M, size) each
        room = k - nearer.sum(dim=2, keepdim=True, dtype=torch.int32)  # (B, M, 1) places left for the tied ones
        take = nearer | (tied & (tied.cumsum(dim=2, dtype=torch.int32) <= room))  # (B, M, size) exactly k per object
        candidates.append(take.nonzero()[:, 2].view(B, M, k) + start)  # (B, M, k) row-major: each object's k
        start += size
    candidate = torch.cat(candidates, dim=2)  # (B, M, K) anchor indices, K = sum over grids of min(topk, size)

    # Step 3: each object's threshold, mean + std of its candidates' IoU; positives inside the object.
    cand_iou = iou.gather(2, candidate)  # (B, M, K)
    threshold = cand_iou.mean(dim=2, keepdim=True)  # (B, M, 1)
    if candidate.shape[2] > 1:
        threshold = threshold + cand_iou.std(dim=2, keepdim=True)  # (B, M, 1) unbiased, as torch.std
    cand_x, cand_y = anchor_x.take(candidate), anchor_y.take(candidate)  # (B, M, K) each
    inside = (cand_x > x1) & (cand_x < x2) & (cand_y > y1) & (cand_y < y2)  # (B, M, K) strictly
    passed = (cand_iou >= threshold) & inside & is_real[:, :, None]  # (B, M, K)
    chosen = torch.zeros_like(iou, dtype=torch.bool).scatter_(2, candidate, passed)  # (B, M, A)

    # Step 4: an anchor chosen by several objects goes to the one it overlaps most.
    owner_iou, owner = iou.masked_fill(~chosen, -1.0).max(dim=1)  # (B, A) each
    positive = chosen.any(dim=1)  # (B, A)
    # Step 5: objects left without a positive are forced onto their best background anchor.
    owned = torch.zeros_like(is_real, dtype=torch.long).scatter_add_(1, owner, positive.long())  # (B, M)
    free_iou = iou.masked_fill(positive[:, None, :], -1.0)  # (B, M, A) ATSS's positives are taken
    orphan = is_real & (owned == 0) & (free_iou.amax(dim=2) > 0)  # (B, M)
    forced = _forced_anchors(free_iou, orphan)  # (B, A)
    is_forced = forced >= 0  # (B, A)
    best_iou, best = iou.max(dim=1)  # (B, A) background anchors: their best object
    matched_idx = torch.where(is_forced, forced, torch.where(positive, owner, best))  # (B, A)
    overlap = torch.where(positive, owner_iou, best_iou.clamp(min=0))  # (B, A)
    overlap = torch.where(is_forced, overlap.new_tensor(FORCED_OVERLAP), overlap)  # (B, A)
    return matched_idx, positive | is_forced, overlap
