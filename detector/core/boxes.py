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
    "paired_box_iou",
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
        ``(B, M, A)`` IoU, equal to ``torchvision.ops.box_iou`` image by image. Padding rows give
        whatever their coordinates give; mask them by label.
    """
    # By hand: box_iou is 2-D only and broadcasts (N, A, 2) corner pairs, 3x slower on a CPU than
    # these contiguous (B, M, A) planes, one per coordinate (the matching's largest cost).
    bx1, by1, bx2, by2 = boxes.permute(2, 0, 1).unsqueeze(-1).contiguous()  # 4 x (B, M, 1)
    ax1, ay1, ax2, ay2 = anchors.t().contiguous()  # 4 x (A,)
    inter = torch.minimum(bx2, ax2).sub_(torch.maximum(bx1, ax1)).clamp_(min=0)  # (B, M, A) width
    inter.mul_(torch.minimum(by2, ay2).sub_(torch.maximum(by1, ay1)).clamp_(min=0))  # (B, M, A) area
    area_b = (bx2 - bx1) * (by2 - by1)  # (B, M, 1)
    area_a = (ax2 - ax1) * (ay2 - ay1)  # (A,)
    return inter.div_((area_b + area_a).sub_(inter))  # (B, M, A) intersection / union


def paired_box_iou(boxes: Tensor, others: Tensor) -> Tensor:
    """Jaccard overlap of each box with its partner: ``(..., 4)`` and ``(..., 4)`` xyxy, broadcast
    against each other -> ``(...)`` IoU (the diagonal of ``torchvision.ops.box_iou``)."""
    inter = (torch.minimum(boxes[..., 2:], others[..., 2:]) - torch.maximum(boxes[..., :2], others[..., :2])).clamp(min=0)  # (..., 2)
    inter_area = inter[..., 0] * inter[..., 1]  # (...)
    return inter_area / (box_area(boxes) + box_area(others) - inter_area)  # (...)


def clip_boxes(boxes: Tensor, width: float | Tensor = 1.0, height: float | Tensor = 1.0) -> Tensor:
    """Clamp ``(..., 4)`` xyxy boxes into ``[0, width] x [0, height]`` (default: the unit square)."""
    x = boxes[..., 0::2].clamp(min=0).minimum(torch.as_tensor(width, dtype=boxes.dtype, device=boxes.device))
    y = boxes[..., 1::2].clamp(min=0).minimum(torch.as_tensor(height, dtype=boxes.dtype, device=boxes.device))
    return torch.stack([x[..., 0], y[..., 0], x[..., 1], y[..., 1]], dim=-1)
