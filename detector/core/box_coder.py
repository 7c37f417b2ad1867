"""Box coders: how the network's four box activations per anchor become a box, and back.

Two coders, chosen by name in the config (:func:`make_box_coder`):

``"tanh"`` (:class:`TanhCoder`, the lesson's ``actn_to_bb``, the default)
    ``t = tanh(act)``; centre = anchor centre + ``t[:2] / 2 * cell_size``; size = anchor size *
    ``(t[2:] / 2 + 1)``. A box moves at most half a grid cell and scales between 0.5x and 1.5x.
    Its localisation loss is the lesson's: L1 between the *decoded* box and the ground truth, in
    ``[0, 1]`` image units.

``"ssd"`` (:class:`SSDCoder`, Liu et al. 2016, "SSD: Single Shot MultiBox Detector", eq. 2, with
the Caffe SSD "variances" 0.1 and 0.2)
    deltas = ``((cx - cxa) / wa / 0.1, (cy - cya) / ha / 0.1, log(w / wa) / 0.2, log(h / ha) / 0.2)``.
    Unbounded, so a box can go anywhere. Its localisation loss is the paper's: smooth L1 (beta 1,
    Girshick 2015, Fast R-CNN) between the predicted deltas and the *encoded* ground truth, where
    the variances make each coordinate roughly unit-scale.

Every coder has ``decode(deltas, anchors)`` and ``loc_loss(deltas, target_boxes, anchors)``; the
loss (``detector.core.loss``) masks and reduces the latter, so the space the loss lives in is the
coder's decision, written in one place. Coordinates are ``(x, y)`` ordered; the lesson's were
``(y, x)``: same semantics, permuted.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import Tensor

from detector.core.anchors import Anchors
from detector.core.boxes import cxcywh_to_xyxy, xyxy_to_cxcywh

__all__ = ["BoxCoder", "TanhCoder", "SSDCoder", "make_box_coder", "BOX_CODERS"]


class BoxCoder(Protocol):
    """What the loss and the post-processing need from a coder."""

    name: str

    def decode(self, deltas: Tensor, anchors: Anchors) -> Tensor:
        """``(..., A, 4)`` raw box activations -> ``(..., A, 4)`` xyxy boxes in ``[0, 1]`` units."""
        ...

    def loc_loss(self, deltas: Tensor, target_boxes: Tensor, anchors: Anchors) -> Tensor:
        """Per-coordinate localisation loss, unreduced.

        Args:
            deltas: ``(..., A, 4)`` raw box activations.
            target_boxes: ``(..., A, 4)`` xyxy ground truth in ``[0, 1]``, finite and non-degenerate
                on every row (the loss puts the anchor itself on background rows and masks them).

        Returns:
            ``(..., A, 4)`` loss per anchor and coordinate.
        """
        ...


@dataclass(frozen=True)
class TanhCoder:
    """The lesson's bounded ``actn_to_bb``; loss = L1 on decoded boxes (see the module docstring)."""

    name: str = "tanh"

    def decode(self, deltas: Tensor, anchors: Anchors) -> Tensor:
        """``(..., A, 4)`` activations -> ``(..., A, 4)`` xyxy; ``anchors`` broadcast over ``...``."""
        _check_deltas(deltas, anchors)
        t = torch.tanh(deltas)  # (..., A, 4)
        centre = anchors.cxcywh[:, :2] + t[..., :2] / 2 * anchors.cell_size  # (..., A, 2)
        size = anchors.cxcywh[:, 2:] * (t[..., 2:] / 2 + 1)  # (..., A, 2)
        return cxcywh_to_xyxy(torch.cat([centre, size], dim=-1))  # (..., A, 4)

    def loc_loss(self, deltas: Tensor, target_boxes: Tensor, anchors: Anchors) -> Tensor:
        """``(..., A, 4)`` ``|decode(deltas) - target_boxes|``, the lesson's L1 in image units."""
        return (self.decode(deltas, anchors) - target_boxes).abs()  # (..., A, 4)


@dataclass(frozen=True)
class SSDCoder:
    """The standard SSD encoding; loss = smooth L1 on encoded deltas (see the module docstring).

    Attributes:
        center_variance: divides the centre offsets (0.1, Caffe SSD's ``variance[0:2]``).
        size_variance: divides the log sizes (0.2, Caffe SSD's ``variance[2:4]``).
        max_log_size: decode clamps ``log(w / wa)`` to this so ``exp`` cannot overflow; torchvision's
            ``BoxCoder`` uses ``math.log(1000. / 16)`` (a box at most 62.5x its anchor).
        beta: smooth L1's switch from quadratic to linear (1.0, Fast R-CNN and Caffe SSD).
    """

    name: str = "ssd"
    center_variance: float = 0.1
    size_variance: float = 0.2
    max_log_size: float = math.log(1000.0 / 16)
    beta: float = 1.0

    def encode(self, boxes: Tensor, anchors: Anchors) -> Tensor:
        """``(..., A, 4)`` xyxy boxes (positive width and height) -> ``(..., A, 4)`` deltas."""
        _check_deltas(boxes, anchors)
        box = xyxy_to_cxcywh(boxes)  # (..., A, 4)
        anchor = anchors.cxcywh  # (A, 4)
        offset = (box[..., :2] - anchor[:, :2]) / anchor[:, 2:] / self.center_variance  # (..., A, 2)
        log_size = torch.log(box[..., 2:] / anchor[:, 2:]) / self.size_variance  # (..., A, 2)
        return torch.cat([offset, log_size], dim=-1)  # (..., A, 4)

    def decode(self, deltas: Tensor, anchors: Anchors) -> Tensor:
        """``(..., A, 4)`` deltas -> ``(..., A, 4)`` xyxy; the inverse of :meth:`encode`."""
        _check_deltas(deltas, anchors)
        anchor = anchors.cxcywh  # (A, 4)
        centre = anchor[:, :2] + deltas[..., :2] * self.center_variance * anchor[:, 2:]  # (..., A, 2)
        log_size = (deltas[..., 2:] * self.size_variance).clamp(max=self.max_log_size)  # (..., A, 2)
        size = anchor[:, 2:] * torch.exp(log_size)  # (..., A, 2)
        return cxcywh_to_xyxy(torch.cat([centre, size], dim=-1))  # (..., A, 4)

    def loc_loss(self, deltas: Tensor, target_boxes: Tensor, anchors: Anchors) -> Tensor:
        """``(..., A, 4)`` smooth L1 between ``deltas`` and ``encode(target_boxes)`` (SSD eq. 2)."""
        target = self.encode(target_boxes, anchors)  # (..., A, 4)
        return F.smooth_l1_loss(deltas, target, reduction="none", beta=self.beta)  # (..., A, 4)


BOX_CODERS: dict[str, type] = {"tanh": TanhCoder, "ssd": SSDCoder}


def make_box_coder(coder: str | BoxCoder) -> BoxCoder:
    """The coder called ``coder`` (``"tanh"`` or ``"ssd"``); a coder object is returned unchanged."""
    if not isinstance(coder, str):
        return coder
    if coder not in BOX_CODERS:
        raise ValueError(f"unknown box coder {coder!r}; choose one of {sorted(BOX_CODERS)}")
    return BOX_CODERS[coder]()


def _check_deltas(deltas: Tensor, anchors: Anchors) -> None:
    if deltas.dim() < 2 or deltas.shape[-2:] != (len(anchors), 4):
        raise ValueError(f"box tensor must be (..., A={len(anchors)}, 4); got {tuple(deltas.shape)}")
