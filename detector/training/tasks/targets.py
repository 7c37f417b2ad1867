"""The stepping stones' targets, computed from a detection batch on the fly (no extra CSVs).

The lesson wrote one CSV per task (``lrg.csv``: the largest object's class, ``bb.csv``: its box,
``mc.csv``: the set of classes present). Here each is a pure, batched function of the batch the
detector already gets (``boxes (B, M, 4)`` xyxy in ``[0, 1]`` after augmentation, ``labels (B, M)``
with -1 padding, ``difficult (B, M)``), so every task shares one data pipeline and its boxes move
with the pixels (the lesson's ``tfm_y``).

Difficult objects are left out of every target, as the lesson's ``get_trn_anno`` skipped
annotations with ``ignore`` set (the VOC "difficult" flag in the course's JSON).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from detector.core.boxes import box_area

__all__ = ["LargestObject", "largest_object", "present_classes"]


class LargestObject(NamedTuple):
    """Each image's largest usable object: see :func:`largest_object`."""

    boxes: Tensor  # (B, 4)
    labels: Tensor  # (B,) int64, -1 where none was found
    found: Tensor  # (B,) bool


def _usable(labels: Tensor, difficult: Tensor | None) -> Tensor:
    """``(B, M)`` bool: a real object (not padding) that is not difficult."""
    usable = labels >= 0  # (B, M)
    return usable if difficult is None else usable & ~difficult.bool()


def largest_object(boxes: Tensor, labels: Tensor, difficult: Tensor | None = None) -> LargestObject:
    """The largest object of each image, by box area (the lesson's ``get_lrg``).

    Args:
        boxes: ``(B, M, 4)`` xyxy (any unit; ``[0, 1]`` in a batch).
        labels: ``(B, M)`` int64 class indices, -1 marking padding (``M`` may be 0).
        difficult: ``(B, M)`` bool; difficult objects are never chosen.

    Returns:
        ``boxes (B, 4)`` and ``labels (B,)`` of each image's largest usable object, and
        ``found (B,)`` bool, False for an image with none (its box is zeros and its label -1).
        Ties go to the first object in the image's list.

    The area is the box's area in the (squashed, augmented) network input. Squashing scales every
    box of an image by the same factor, so it picks the same object the lesson picked from the
    original annotation; the small rotations of augmentation can at most swap two nearly equal boxes.
    """
    B, M = labels.shape
    usable = _usable(labels, difficult)  # (B, M)
    found = usable.any(dim=1)  # (B,)
    if M == 0:
        return LargestObject(boxes.new_zeros(B, 4), labels.new_full((B,), -1), found)
    area = box_area(boxes).masked_fill(~usable, -1.0)  # (B, M); unusable rows below any real area
    index = area.argmax(dim=1)  # (B,) first maximum
    rows = torch.arange(B, device=labels.device)
    chosen_boxes = boxes[rows, index] * found[:, None]  # (B, 4)
    chosen_labels = labels[rows, index].masked_fill(~found, -1)  # (B,)
    return LargestObject(chosen_boxes, chosen_labels, found)


def present_classes(labels: Tensor, num_classes: int, difficult: Tensor | None = None) -> Tensor:
    """Multi-hot targets: which classes appear in each image, each class once (the lesson's ``set``).

    Args:
        labels: ``(B, M)`` int64 class indices, -1 marking padding (``M`` may be 0).
        num_classes: C.
        difficult: ``(B, M)`` bool; difficult objects do not count.

    Returns:
        ``(B, C)`` float32 in ``{0, 1}``; an image with no usable object is all zeros.
    """
    if labels.numel() and int(labels.max()) >= num_classes:
        raise ValueError(f"label {int(labels.max())} out of range for {num_classes} classes")
    usable = _usable(labels, difficult)  # (B, M)
    one_hot = torch.nn.functional.one_hot(labels.clamp(min=0), num_classes)  # (B, M, C)
    counts = (one_hot * usable[..., None]).sum(dim=1)  # (B, C); sums to zeros when M == 0
    return (counts > 0).float()
