"""The SSD loss of the lesson (``ssd_1_loss`` / ``ssd_loss``), for a whole batch at once.

Per image, exactly as the lesson's ``ssd_1_loss``:

* ``loc``: the box coder's per-coordinate loss averaged over the positive anchors x 4 coordinates
  (the lesson: mean L1 between decoded positive boxes and their ground truth; see
  ``detector.box_coder`` for the ``"ssd"`` coder's smooth L1 on encoded deltas).
* ``cls``: binary cross-entropy with logits over the C real classes, background = all-zero targets,
  SUMMED over anchors and classes and divided by C (the lesson's ``BCE_Loss``). With ``focal=True``
  each term is weighted by ``(alpha * t + (1 - alpha) * (1 - t)) * (1 - pt) ** gamma`` (Lin et al.
  2017, "Focal Loss for Dense Object Detection": alpha 0.25, gamma 2; the lesson's ``FocalLoss``),
  the weight part of the autograd graph as in the lesson; ``torchvision.ops.sigmoid_focal_loss``
  computes exactly these terms.

Batch reduction:

* ``"mean"`` (default): ``cls`` = mean over images; ``loc`` = mean over the images that have positive
  anchors (an image without objects has none, and its ``loc`` is undefined: the lesson's mean over
  an empty set). The loss scale, and so the best learning rate, does not change with batch size.
* ``"lesson_sum"``: the lesson's ``ssd_loss``, the SUM over images of the per-image terms (images
  without objects add 0 to ``loc``). Its scale grows with the batch size.

``loss = loc_weight * loc + cls_weight * cls``, the only place the terms are combined.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import sigmoid_focal_loss

from detector.anchors import Anchors
from detector.box_coder import BoxCoder, make_box_coder
from detector.matching import match

__all__ = ["SSDLoss"]

Reduction = Literal["mean", "lesson_sum"]


class SSDLoss(nn.Module):
    """Matching + localisation + classification, returning the named terms.

    Args:
        coder: ``"tanh"`` (the lesson's ``actn_to_bb``) or ``"ssd"``; decides the localisation loss.
        iou_threshold: matching threshold (lesson: 0.4).
        focal: focal weighting on the BCE (the lesson's final model) or plain BCE (its first one).
        alpha, gamma: focal parameters (lesson: 0.25, 2; the second article used gamma 1).
        loc_weight, cls_weight: the weights of the two terms in ``"loss"``.
        reduction: ``"mean"`` or ``"lesson_sum"``, see the module docstring.
    """

    def __init__(
        self,
        coder: str | BoxCoder = "tanh",
        iou_threshold: float = 0.4,
        focal: bool = True,
        alpha: float = 0.25,
        gamma: float = 2.0,
        loc_weight: float = 1.0,
        cls_weight: float = 1.0,
        reduction: Reduction = "mean",
    ) -> None:
        super().__init__()
        if reduction not in ("mean", "lesson_sum"):
            raise ValueError(f"reduction must be 'mean' or 'lesson_sum'; got {reduction!r}")
        if not 0.0 <= alpha <= 1.0 or gamma < 0:
            raise ValueError(f"focal loss needs 0 <= alpha <= 1 and gamma >= 0; got {alpha=}, {gamma=}")
        self.coder = make_box_coder(coder)
        self.iou_threshold = iou_threshold
        self.focal, self.alpha, self.gamma = focal, alpha, gamma
        self.loc_weight, self.cls_weight = loc_weight, cls_weight
        self.reduction = reduction

    def forward(
        self, cls_logits: Tensor, box_deltas: Tensor, anchors: Anchors, boxes: Tensor, labels: Tensor
    ) -> dict[str, Tensor]:
        """The batch's loss.

        Args:
            cls_logits: ``(B, A, C)`` raw class activations, anchors in ``make_anchors`` order.
            box_deltas: ``(B, A, 4)`` raw box activations for the coder.
            anchors: the ``A`` anchors.
            boxes: ``(B, M, 4)`` float xyxy ground truth in ``[0, 1]``.
            labels: ``(B, M)`` int64 in ``0..C-1``, ``-1`` for padding; ``M`` may be 0.

        Returns:
            ``{"loc": (), "cls": (), "loss": ()}`` scalar tensors; ``loss`` is the weighted total.
        """
        B, A, C = cls_logits.shape
        if box_deltas.shape != (B, A, 4) or A != len(anchors):
            raise ValueError(
                f"expected cls_logits (B, A, C) and box_deltas (B, A, 4) with A = {len(anchors)} anchors; "
                f"got {tuple(cls_logits.shape)} and {tuple(box_deltas.shape)}"
            )
        if labels.numel() and int(labels.max()) >= C:
            raise ValueError(f"labels must be < C = {C} (the number of classes); got {int(labels.max())}")
        targets = match(anchors, boxes, labels, self.iou_threshold)
        positive = targets.positive[:, :, None]  # (B, A, 1)

        # loc: background rows get the anchor itself as a harmless finite target, then are masked out.
        target_boxes = torch.where(positive, targets.target_boxes, anchors.xyxy.to(box_deltas))  # (B, A, 4)
        per_coord = self.coder.loc_loss(box_deltas, target_boxes, anchors) * positive  # (B, A, 4)
        num_pos = targets.positive.sum(dim=1)  # (B,)
        loc = per_coord.sum(dim=(1, 2)) / (4 * num_pos).clamp(min=1)  # (B,) 0 where no positives

        # cls: one-hot over the C real classes; background (-1) is the all-zero row.
        classes = torch.arange(C, device=cls_logits.device)  # (C,)
        onehot = (targets.target_labels[:, :, None] == classes).to(cls_logits.dtype)  # (B, A, C)
        if self.focal:
            terms = sigmoid_focal_loss(cls_logits, onehot, self.alpha, self.gamma, reduction="none")  # (B, A, C)
        else:
            terms = F.binary_cross_entropy_with_logits(cls_logits, onehot, reduction="none")  # (B, A, C)
        cls = terms.sum(dim=(1, 2)) / C  # (B,)

        if self.reduction == "lesson_sum":
            loc_total, cls_total = loc.sum(), cls.sum()
        else:
            has_pos = num_pos > 0  # (B,)
            loc_total = (loc * has_pos).sum() / has_pos.sum().clamp(min=1)
            cls_total = cls.mean()
        loss = self.loc_weight * loc_total + self.cls_weight * cls_total
        return {"loc": loc_total, "cls": cls_total, "loss": loss}
