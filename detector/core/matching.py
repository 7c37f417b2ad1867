"""Anchor <-> ground-truth assignment for a whole batch: the lesson's ``map_to_ground_truth``.

The lesson matched one image at a time, with a Python loop over its objects; here one set of
tensor operations matches every anchor of every image (no loop over images or objects), with
exactly the lesson's rules:

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
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from detector.core.anchors import Anchors
from detector.core.boxes import batched_box_iou
from detector.defaults import MATCH_IOU

__all__ = ["Match", "match", "FORCED_OVERLAP"]

FORCED_OVERLAP = 1.99
"""The overlap the lesson gives each object's best anchor: above any IoU, so always positive."""


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


def match(anchors: Anchors, boxes: Tensor, labels: Tensor, iou_threshold: float = MATCH_IOU) -> Match:
    """Assign every anchor of every image to a ground-truth object or to background.

    Args:
        anchors: the ``A`` anchors (their ``xyxy`` corners are what is compared).
        boxes: ``(B, M, 4)`` float xyxy in ``[0, 1]``; rows with label ``-1`` are padding.
        labels: ``(B, M)`` int64 class in ``0..C-1``, ``-1`` for padding. ``M`` may be 0.
        iou_threshold: an anchor whose best IoU is strictly above this is positive (lesson: 0.4).

    Returns:
        :class:`Match`, see the module docstring for the rules, the tie rules included.
    """
    if boxes.dim() != 3 or boxes.shape[-1] != 4 or labels.shape != boxes.shape[:2]:
        raise ValueError(
            f"expected boxes (B, M, 4) and labels (B, M); got {tuple(boxes.shape)} and {tuple(labels.shape)}"
        )
    if not 0.0 <= iou_threshold < 1.0:
        raise ValueError(f"iou_threshold must be in [0, 1); got {iou_threshold}")
    with torch.no_grad():  # a with block, not a decorator: mutmut mutates no decorated function
        B, M = labels.shape
        if M == 0:  # one all-padding column keeps every reduction below well-defined
            boxes, labels, M = boxes.new_zeros(B, 1, 4), labels.new_full((B, 1), -1), 1
        A = len(anchors)
        is_real = labels >= 0  # (B, M)
        iou = batched_box_iou(boxes, anchors.xyxy.to(boxes))  # (B, M, A)
        iou = iou.masked_fill(~is_real[:, :, None], -1.0)  # (B, M, A) padding never wins

        # Step 2: each anchor's best object (the lesson's gt_overlap, gt_idx = overlaps.max(0)).
        overlap, matched_idx = iou.max(dim=1)  # (B, A) each
        # Step 3: each object's best anchor (the lesson's prior_idx = overlaps.max(1)[1]); the later object
        # wins a shared anchor: amax over object indices, padding contributing -1 (= "no object").
        best_anchor = iou.argmax(dim=2)  # (B, M)
        objects = torch.arange(M, device=labels.device).expand(B, M).masked_fill(~is_real, -1)  # (B, M)
        forced = labels.new_full((B, A), -1).scatter_reduce(1, best_anchor, objects, reduce="amax")  # (B, A)
        is_forced = forced >= 0  # (B, A)
        matched_idx = torch.where(is_forced, forced, matched_idx)  # (B, A)
        overlap = torch.where(is_forced, overlap.new_tensor(FORCED_OVERLAP), overlap.clamp(min=0))  # (B, A)

        # Step 4: threshold; gather each anchor's class and box.
        positive = overlap > iou_threshold  # (B, A)
        target_labels = labels.gather(1, matched_idx).masked_fill(~positive, -1)  # (B, A)
        target_boxes = boxes.gather(1, matched_idx[:, :, None].expand(B, A, 4))  # (B, A, 4)
        target_boxes = target_boxes.masked_fill(~positive[:, :, None], 0.0)  # (B, A, 4)
        return Match(matched_idx, positive, target_labels, target_boxes, overlap)
