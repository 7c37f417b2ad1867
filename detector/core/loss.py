"""The SSD loss of the lesson (``ssd_1_loss`` / ``ssd_loss``), for a whole batch at once.

Per image, exactly as the lesson's ``ssd_1_loss``:

* ``loc``: the box coder's per-coordinate loss averaged over the positive anchors x 4 coordinates
  (the lesson: mean L1 between decoded positive boxes and their ground truth; see
  ``detector.core.box_coder`` for the ``"ssd"`` coder's smooth L1 on encoded deltas).
* ``cls``: binary cross-entropy with logits over the C real classes, background = all-zero targets,
  SUMMED over anchors and classes and divided by C (the lesson's ``BCE_Loss``). With ``focal=True``
  each term is weighted by ``(alpha * t + (1 - alpha) * (1 - t)) * (1 - pt) ** gamma`` (Lin et al.
  2017, "Focal Loss for Dense Object Detection": alpha 0.25, gamma 2; the lesson's ``FocalLoss``),
  the weight part of the autograd graph as in the lesson; these are exactly the terms of
  ``torchvision.ops.sigmoid_focal_loss`` (and the gradient is that of the whole expression).

The class term is :class:`FocalBCESum`, written by hand: ``sigmoid_focal_loss`` builds a one-hot
``(B, A, C)`` target and about ten ``(B, A, C)`` intermediates, and autograd walks as many back; the
closed form below makes 8 elementwise passes forward and 3 back over the all-background block, then
corrects the few positive (anchor, class) entries. On a CPU that is the difference between a loss costing
more than the network's head and one that costs a few percent of it (``bench/loss.py``).

Batch reduction:

* ``"mean"`` (default): ``cls`` = mean over images; ``loc`` = mean over the images that have positive
  anchors (an image without objects has none, and its ``loc`` is undefined: the lesson's mean over
  an empty set). The loss scale, and so the best learning rate, does not change with batch size.
* ``"lesson_sum"``: the lesson's ``ssd_loss``, the SUM over images of the per-image terms (images
  without objects add 0 to ``loc``). Its scale grows with the batch size.

``loss = loc_weight * loc + cls_weight * cls``, the only place the terms are combined.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

import torch
from torch import Tensor, nn

from detector.core.anchors import Anchors
from detector.core.box_coder import BoxCoder, SSDCoder, make_box_coder
from detector.core.matching import match
from detector.defaults import MATCH_IOU

__all__ = ["FocalBCESum", "LossConfig", "SSDLoss"]

Reduction = Literal["mean", "lesson_sum"]


@dataclass
class LossConfig:
    """The settings of :class:`SSDLoss` (see its arguments); the lesson's final model by default."""

    coder: Literal["tanh", "ssd"] = "tanh"
    iou_threshold: float = MATCH_IOU
    focal: bool = True
    alpha: float = 0.25
    gamma: float = 2.0
    loc_weight: float = 1.0
    cls_weight: float = 1.0
    reduction: Reduction = "mean"
    smooth_l1_beta: float = 1.0


def _background_terms(z: Tensor, weight: float, gamma: float) -> tuple[Tensor, Tensor | None, tuple[Tensor, ...]]:
    """Focal BCE of logits ``z`` against target 0: ``(sum of the terms, p**gamma, (1 - p, softplus, p))``,
    the last two what the gradient needs.

    ``term = weight * p**gamma * softplus(z)`` with ``p = sigmoid(z)``, ``softplus(z) = -log(1 - p)``;
    ``d term / dz = weight * p**gamma * (gamma * (1 - p) * softplus(z) + p)`` (the focal
    factor's own derivative included, as autograd gives for the lesson's expression). ``gamma = 0`` is plain BCE.
    ``1 - p`` is clamped at the dtype's tiny, so a logit above ~88 (float32) costs ~88, not inf.
    """
    q = torch.sigmoid(-z)  # (...) 1 - p, exact for large z where 1 - sigmoid(z) would round to 0
    softplus = q.clamp(min=torch.finfo(q.dtype).tiny).log_().neg_()  # (...) -log(1 - p) = softplus(z)
    p = 1 - q  # (...)
    p_gamma = p.pow(gamma) if gamma else None  # (...)
    total = weight * (torch.dot(p_gamma.reshape(-1), softplus.view(-1)) if p_gamma is not None else softplus.sum())
    return total, p_gamma, (q, softplus, p)


def _background_grad(scale: Tensor, gamma: float, p_gamma: Tensor | None, saved: tuple[Tensor, ...]) -> Tensor:
    """``scale * d term / dz`` of :func:`_background_terms` (a new tensor); ``scale`` = the term's
    weight times the incoming gradient."""
    q, softplus, p = saved
    if not gamma:
        return p * scale
    grad = torch.addcmul(p, q, softplus, value=gamma)  # (...) gamma (1 - p) softplus + p
    return grad.mul_(p_gamma).mul_(scale)  # (...) times p**gamma


class FocalBCESum(torch.autograd.Function):
    """``sum`` of the focal BCE terms over a ``(..., C)`` logit block whose one-hot targets are all 0
    except at the flat indices ``positive`` (each at most once), forward and backward in closed form.

    ``apply(logits, positive, alpha, gamma)``; ``alpha = None`` means unweighted BCE (with ``gamma =
    0``, the lesson's ``BCE_Loss``). A target-1 term at logit ``x`` is the target-0 term at ``-x``
    with weight ``alpha``, so both use :func:`_background_terms`.
    """

    @staticmethod
    def forward(ctx, logits: Tensor, positive: Tensor, alpha: float | None, gamma: float) -> Tensor:
        w_pos, w_neg = (1.0, 1.0) if alpha is None else (alpha, 1.0 - alpha)
        x_pos = logits.reshape(-1)[positive]  # (P,) the positive entries' logits
        parts = (
            (w_neg, logits),  # every entry as background...
            (w_pos, -x_pos),  # ...plus the positives' target-1 terms (target 1 at x = target 0 at -x)...
            (w_neg, x_pos),  # ...minus the background terms counted for them in the first part
        )
        totals, ctx.parts = [], []
        for weight, z in parts:
            total, p_gamma, saved = _background_terms(z, weight, gamma)
            totals.append(total)
            ctx.parts.append((weight, p_gamma, saved))  # intermediates, not inputs: kept on ctx
        ctx.save_for_backward(positive)
        ctx.gamma = gamma
        return totals[0] + totals[1] - totals[2]

    @staticmethod
    def backward(ctx, grad_total: Tensor):
        (positive,) = ctx.saved_tensors
        (grad, pos_grad, neg_grad) = (
            _background_grad(weight * grad_total, ctx.gamma, p_gamma, saved) for weight, p_gamma, saved in ctx.parts
        )  # d/dz of each part: (..., C), (P,), (P,)
        correction = -pos_grad - neg_grad  # (P,) d/dx: the target-1 part has z = -x, the third is subtracted
        return grad.view(-1).index_add_(0, positive, correction).view_as(grad), None, None, None


class SSDLoss(nn.Module):
    """Matching + localisation + classification, returning the named terms.

    Args:
        coder: ``"tanh"`` (the lesson's ``actn_to_bb``) or ``"ssd"``; decides the localisation loss.
        iou_threshold: matching threshold (lesson: 0.4).
        focal: focal weighting on the BCE (the lesson's final model) or plain BCE (its first one).
        alpha, gamma: focal parameters (lesson: 0.25, 2; the second article used gamma 1).
        loc_weight, cls_weight: the weights of the two terms in ``"loss"``.
        reduction: ``"mean"`` or ``"lesson_sum"``, see the module docstring.
        smooth_l1_beta: the ``"ssd"`` coder's smooth L1 switch point (1.0: Fast R-CNN and Caffe SSD;
            RetinaNet implementations use 0.1-0.11 (Detectron) or plain L1, 0 (mmdetection,
            torchvision), which keeps pulling on residuals that are already small).
    """

    def __init__(
        self,
        coder: str | BoxCoder = LossConfig.coder,
        iou_threshold: float = LossConfig.iou_threshold,
        focal: bool = LossConfig.focal,
        alpha: float = LossConfig.alpha,
        gamma: float = LossConfig.gamma,
        loc_weight: float = LossConfig.loc_weight,
        cls_weight: float = LossConfig.cls_weight,
        reduction: Reduction = LossConfig.reduction,
        smooth_l1_beta: float = LossConfig.smooth_l1_beta,
    ) -> None:
        super().__init__()
        if reduction not in ("mean", "lesson_sum"):
            raise ValueError(f"reduction must be 'mean' or 'lesson_sum'; got {reduction!r}")
        if not 0.0 <= alpha <= 1.0 or gamma < 0:
            raise ValueError(f"focal loss needs 0 <= alpha <= 1 and gamma >= 0; got {alpha=}, {gamma=}")
        if smooth_l1_beta < 0:
            raise ValueError(f"smooth_l1_beta must be >= 0; got {smooth_l1_beta}")
        self.coder = make_box_coder(coder)
        if smooth_l1_beta != 1.0:
            if not isinstance(self.coder, SSDCoder):
                raise ValueError(f"smooth_l1_beta is for the 'ssd' coder's loss; the {self.coder.name!r} coder's is L1")
            self.coder = replace(self.coder, beta=smooth_l1_beta)
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
        box_deltas = box_deltas.to(torch.promote_types(box_deltas.dtype, torch.float32))  # fp16/bf16 -> float32
        targets = match(anchors, boxes, labels, self.iou_threshold)
        b, a = targets.positive.nonzero(as_tuple=True)  # (P,) each: image and anchor of every positive

        # loc: only the positive anchors' rows are decoded and compared, then summed per image.
        per_coord = self.coder.loc_loss(box_deltas[b, a], targets.target_boxes[b, a], anchors.select(a))  # (P, 4)
        num_pos = targets.positive.sum(dim=1)  # (B,)
        loc = box_deltas.new_zeros(B).index_add(0, b, per_coord.sum(dim=1))  # (B,) sums, 0 where no positives
        loc = loc / (4 * num_pos).clamp(min=1)  # (B,) the mean over positives x 4 coordinates

        # cls: one-hot over the C real classes, background (-1) the all-zero row, given to the closed
        # form as the flat indices of its ones; summed over anchors, classes AND images, divided by C.
        ones = (b * A + a) * C + targets.target_labels[b, a]  # (P,) flat index into (B, A, C)
        logits = cls_logits.to(torch.promote_types(cls_logits.dtype, torch.float32))  # fp16/bf16 -> float32
        alpha, gamma = (self.alpha, self.gamma) if self.focal else (None, 0.0)
        cls_sum = FocalBCESum.apply(logits.contiguous(), ones, alpha, gamma) / C  # () sum over the batch

        if self.reduction == "lesson_sum":
            loc_total, cls_total = loc.sum(), cls_sum
        else:
            has_pos = num_pos > 0  # (B,)
            loc_total = (loc * has_pos).sum() / has_pos.sum().clamp(min=1)
            cls_total = cls_sum / B  # the mean over images
        loss = self.loc_weight * loc_total + self.cls_weight * cls_total
        return {"loc": loc_total, "cls": cls_total, "loss": loss}
