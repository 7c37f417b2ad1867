"""Pure, loop-free functions on boxes.

One box format lives inside the code: float ``xyxy`` = ``(x1, y1, x2, y2)``, either in pixels
(records, after loading) or normalised to ``[0, 1]`` (batches, anchors, predictions).
``cxcywh`` = ``(centre x, centre y, width, height)`` is used only where the maths is about
centres and sizes (anchors, box coders). COCO's ``xywh`` appears only at the JSON boundary.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchvision.ops import box_convert, box_iou

__all__ = [
    "box_area",
    "batched_box_iou",
    "box_iou",
    "clip_boxes",
    "cxcywh_to_xyxy",
    "xyxy_to_cxcywh",
    "xywh_to_xyxy",
    "xyxy_to_xywh",
]


def cxcywh_to_xyxy(boxes: Tensor) -> Tensor:
    """``(..., 4)`` cxcywh -> ``(..., 4)`` xyxy."""
    return box_convert(boxes, "cxcywh", "xyxy")


def xyxy_to_cxcywh(boxes: Tensor) -> Tensor:
    """``(..., 4)`` xyxy -> ``(..., 4)`` cxcywh."""
    return box_convert(boxes, "xyxy", "cxcywh")


def xywh_to_xyxy(boxes: Tensor) -> Tensor:
    """``(..., 4)`` COCO xywh (top-left corner, width, height) -> ``(..., 4)`` xyxy."""
    return box_convert(boxes, "xywh", "xyxy")


def xyxy_to_xywh(boxes: Tensor) -> Tensor:
    """``(..., 4)`` xyxy -> ``(..., 4)`` COCO xywh."""
    return box_convert(boxes, "xyxy", "xywh")


def box_area(boxes: Tensor) -> Tensor:
    """``(..., 4)`` xyxy -> ``(...)`` area; degenerate (inverted) boxes have area 0."""
    wh = (boxes[..., 2:] - boxes[..., :2]).clamp(min=0)  # (..., 2)
    return wh[..., 0] * wh[..., 1]


def batched_box_iou(boxes: Tensor, anchors: Tensor) -> Tensor:
    """Jaccard overlap of every box of every image with every anchor.

    Args:
        boxes: ``(B, M, 4)`` xyxy, one row per (possibly padded) object.
        anchors: ``(A, 4)`` xyxy, shared by the whole batch.

    Returns:
        ``(B, M, A)`` IoU. Padding rows give whatever their coordinates give; mask them by label.
    """
    B, M, _ = boxes.shape
    # torchvision's box_iou is 2-D only, so flatten the batch into rows and fold it back.
    return box_iou(boxes.reshape(B * M, 4), anchors).view(B, M, anchors.shape[0])  # (B, M, A)


def clip_boxes(boxes: Tensor, width: float | Tensor = 1.0, height: float | Tensor = 1.0) -> Tensor:
    """Clamp ``(..., 4)`` xyxy boxes into ``[0, width] x [0, height]`` (default: the unit square)."""
    x = boxes[..., 0::2].clamp(min=0).minimum(torch.as_tensor(width, dtype=boxes.dtype, device=boxes.device))
    y = boxes[..., 1::2].clamp(min=0).minimum(torch.as_tensor(height, dtype=boxes.dtype, device=boxes.device))
    return torch.stack([x[..., 0], y[..., 0], x[..., 1], y[..., 1]], dim=-1)
