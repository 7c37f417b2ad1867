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

Beyond the lesson, each an option whose default is the lesson's loss:

* ``box``: what ``loc`` is. ``"coder"`` (default): the box coder's own loss, as above. ``"giou"``,
  ``"diou"``, ``"ciou"``: an IoU loss on the *decoded* box of each positive against its object
  (Rezatofighi et al. 2019; Zheng et al. 2020), ``torchvision.ops``' ``generalized_box_iou_loss``,
  ``distance_box_iou_loss``, ``complete_box_iou_loss``, averaged over the positives of each image.
  It REPLACES the coder's loss, as mmdetection's ATSS, GFL, FCOS and VarifocalNet heads do
  (``reg_decoded_bbox``): one box term, one weight to tune, and nothing pulling on the offsets
  towards a different optimum. Its weight (``loc_weight``, 2 when not given) is mmdetection's for
  GIoU beside a focal class loss; at a centre error of 10 % of the box the gradient of 2 x GIoU on
  a coordinate (about 4 / w) is of the order of the SSD coder's smooth L1 on offsets (2.5 / w),
  and unlike smooth L1 it does not fade as the box closes in.
* ``quality``: an IoU-aware class target. Each positive's class target is the IoU ``y`` of its
  decoded box with its object (detached), instead of 1. ``"qfl"``, quality focal loss (Li et al.
  2020, "Generalized Focal Loss"): ``BCE(x, y) * |y - sigmoid(x)|**beta``, negatives
  ``BCE(x, 0) * sigmoid(x)**beta``, beta = 2 (:data:`QFL_BETA`). ``"varifocal"`` (Zhang et al. 2021,
  "VarifocalNet"): positives ``y * BCE(x, y)``, negatives ``alpha * sigmoid(x)**gamma * BCE(x, 0)``,
  alpha 0.75 and gamma 2 (:data:`VFL_ALPHA`, :data:`VFL_GAMMA`); a positive whose box misses its
  object (``y = 0``) is a negative, as in mmdetection. These are the papers' constants; the
  ``focal``, ``alpha`` and ``gamma`` settings are the focal loss's, which either replaces. The
  background block keeps its closed form (:class:`FocalBCESum` without the positive entries); the
  positives' own terms go through autograd. The normalisation stays the lesson's (summed, divided
  by C, then per image), not the papers' division by the number of positives.
* ``matching``: ``"fixed"`` (the lesson's threshold) or ``"atss"`` with ``atss_topk`` candidates per
  grid (:func:`detector.core.matching.match`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Literal, get_args

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import complete_box_iou_loss, distance_box_iou_loss, generalized_box_iou_loss

from detector.core.anchors import Anchors
from detector.core.box_coder import BoxCoder, SSDCoder, make_box_coder
from detector.core.boxes import paired_box_iou
from detector.core.matching import MATCHINGS, Matching, match
from detector.defaults import ATSS_TOPK, MATCH_IOU

__all__ = ["BOX_LOSSES", "FocalBCESum", "LossConfig", "QUALITIES", "SSDLoss"]

Reduction = Literal["mean", "lesson_sum"]
BoxLoss = Literal["coder", "giou", "diou", "ciou"]
Quality = Literal["none", "varifocal", "qfl"]
QUALITIES: tuple[str, ...] = get_args(Quality)

BOX_LOSSES: dict[str, Callable[..., Tensor]] = {
    "giou": generalized_box_iou_loss,
    "diou": distance_box_iou_loss,
    "ciou": complete_box_iou_loss,
}
"""The IoU losses of ``box``, each ``(P, 4), (P, 4) xyxy -> (P,)`` with ``reduction="none"``."""

IOU_LOSS_WEIGHT = 2.0
"""``loc_weight`` when not given and ``box`` is an IoU loss: mmdetection's GIoU weight beside a focal
(or quality focal) class loss in its ATSS and GFL configs. The coder's loss keeps 1, the lesson's."""

QFL_BETA = 2.0
"""Quality focal loss's beta (Li et al. 2020, GFL: the best of their ablation)."""

VFL_ALPHA, VFL_GAMMA = 0.75, 2.0
"""Varifocal loss's negative weight and exponent (Zhang et al. 2021, VarifocalNet; mmdetection's defaults)."""


@dataclass
class LossConfig:
    """The settings of :class:`SSDLoss` (see its arguments); the lesson's final model by default."""

    coder: Literal["tanh", "ssd"] = "tanh"
    iou_threshold: float = MATCH_IOU
    focal: bool = True
    alpha: float = 0.25
    gamma: float = 2.0
    loc_weight: float | None = None
    cls_weight: float = 1.0
    reduction: Reduction = "mean"
    smooth_l1_beta: float = 1.0
    box: BoxLoss = "coder"
    quality: Quality = "none"
    matching: Matching = "fixed"
    atss_topk: int = ATSS_TOPK


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

    ``apply(logits, positive, alpha, gamma[, positive_terms])``; ``alpha = None`` means unweighted BCE
    (with ``gamma = 0``, the lesson's ``BCE_Loss``). A target-1 term at logit ``x`` is the target-0
    term at ``-x`` with weight ``alpha``, so both use :func:`_background_terms`. ``positive_terms =
    False`` leaves the ``positive`` entries out altogether: the sum of the background terms of every
    other entry, for a loss whose positive terms are not the focal loss's (the IoU-aware ones).
    """

    @staticmethod
    def forward(ctx, logits: Tensor, positive: Tensor, alpha: float | None, gamma: float, positive_terms: bool = True) -> Tensor:
        w_pos, w_neg = (1.0, 1.0) if alpha is None else (alpha, 1.0 - alpha)
        x_pos = logits.reshape(-1)[positive]  # (P,) the positive entries' logits
        parts = (
            (w_neg, logits),  # every entry as background...
            (w_pos, -x_pos),  # ...plus the positives' target-1 terms (target 1 at x = target 0 at -x)...
            (w_neg, x_pos),  # ...minus the background terms counted for them in the first part
        )
        if not positive_terms:
            parts = parts[:1] + parts[2:]
        totals, ctx.parts = [], []
        for weight, z in parts:
            total, p_gamma, saved = _background_terms(z, weight, gamma)
            totals.append(total)
            ctx.parts.append((weight, p_gamma, saved))  # intermediates, not inputs: kept on ctx
        ctx.save_for_backward(positive)
        ctx.gamma = gamma
        return totals[0] + totals[1] - totals[2] if positive_terms else totals[0] - totals[1]

    @staticmethod
    def backward(ctx, grad_total: Tensor):
        (positive,) = ctx.saved_tensors
        grad, *pos_grads = (
            _background_grad(weight * grad_total, ctx.gamma, p_gamma, saved) for weight, p_gamma, saved in ctx.parts
        )  # d/dz of each part: (..., C), then (P,) each
        if len(pos_grads) == 2:  # d/dx: the target-1 part has z = -x, the third is subtracted
            correction = -pos_grads[0] - pos_grads[1]  # (P,)
        else:
            correction = -pos_grads[0]  # (P,) the subtracted background terms only
        return grad.view(-1).index_add_(0, positive, correction).view_as(grad), None, None, None, None


class SSDLoss(nn.Module):
    """Matching + localisation + classification, returning the named terms.

    Args:
        coder: ``"tanh"`` (the lesson's ``actn_to_bb``) or ``"ssd"``; decodes the boxes, and its own
            loss is the localisation loss when ``box = "coder"``.
        iou_threshold: the fixed matching's threshold (lesson: 0.4).
        focal: focal weighting on the BCE (the lesson's final model) or plain BCE (its first one).
        alpha, gamma: focal parameters (lesson: 0.25, 2; the second article used gamma 1).
        loc_weight, cls_weight: the weights of the two terms in ``"loss"``; ``loc_weight = None``:
            1 for the coder's loss (the lesson's), :data:`IOU_LOSS_WEIGHT` (2) for an IoU loss.
        reduction: ``"mean"`` or ``"lesson_sum"``, see the module docstring.
        smooth_l1_beta: the ``"ssd"`` coder's smooth L1 switch point (1.0: Fast R-CNN and Caffe SSD;
            RetinaNet implementations use 0.1-0.11 (Detectron) or plain L1, 0 (mmdetection,
            torchvision), which keeps pulling on residuals that are already small).
        box: ``"coder"``, ``"giou"``, ``"diou"`` or ``"ciou"``: the localisation loss, see the module docstring.
        quality: ``"none"`` (the focal loss or BCE), ``"varifocal"`` or ``"qfl"``: the class loss's
            target for positives, see the module docstring.
        matching: ``"fixed"`` or ``"atss"`` (:func:`detector.core.matching.match`).
        atss_topk: ATSS's candidates per object and grid (9, the paper's).
    """

    def __init__(
        self,
        coder: str | BoxCoder = LossConfig.coder,
        iou_threshold: float = LossConfig.iou_threshold,
        focal: bool = LossConfig.focal,
        alpha: float = LossConfig.alpha,
        gamma: float = LossConfig.gamma,
        loc_weight: float | None = LossConfig.loc_weight,
        cls_weight: float = LossConfig.cls_weight,
        reduction: Reduction = LossConfig.reduction,
        smooth_l1_beta: float = LossConfig.smooth_l1_beta,
        box: BoxLoss = LossConfig.box,
        quality: Quality = LossConfig.quality,
        matching: Matching = LossConfig.matching,
        atss_topk: int = LossConfig.atss_topk,
    ) -> None:
        super().__init__()
        if reduction not in ("mean", "lesson_sum"):
            raise ValueError(f"reduction must be 'mean' or 'lesson_sum'; got {reduction!r}")
        if not 0.0 <= alpha <= 1.0 or gamma < 0:
            raise ValueError(f"focal loss needs 0 <= alpha <= 1 and gamma >= 0; got {alpha=}, {gamma=}")
        if smooth_l1_beta < 0:
            raise ValueError(f"smooth_l1_beta must be >= 0; got {smooth_l1_beta}")
        if box != "coder" and box not in BOX_LOSSES:
            raise ValueError(f"unknown box loss {box!r}; choose one of {['coder', *BOX_LOSSES]}")
        if quality not in QUALITIES:
            raise ValueError(f"unknown quality {quality!r}; choose one of {list(QUALITIES)}")
        if matching not in MATCHINGS or atss_topk < 1:
            raise ValueError(f"matching must be one of {list(MATCHINGS)} and atss_topk >= 1; got {matching!r}, {atss_topk}")
        self.coder = make_box_coder(coder)
        if smooth_l1_beta != 1.0:
            if not isinstance(self.coder, SSDCoder):
                raise ValueError(f"smooth_l1_beta is for the 'ssd' coder's loss; the {self.coder.name!r} coder's is L1")
            if box != "coder":
                raise ValueError(f"smooth_l1_beta is for the coder's own box loss; box {box!r} does not use it")
            self.coder = replace(self.coder, beta=smooth_l1_beta)
        self.iou_threshold = iou_threshold
        self.focal, self.alpha, self.gamma = focal, alpha, gamma
        if loc_weight is None:
            loc_weight = 1.0 if box == "coder" else IOU_LOSS_WEIGHT
        self.loc_weight, self.cls_weight = loc_weight, cls_weight
        self.reduction = reduction
        self.box, self.quality = box, quality
        self.matching, self.atss_topk = matching, atss_topk

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
        targets = match(anchors, boxes, labels, self.iou_threshold, self.matching, self.atss_topk)
        b, a = targets.positive.nonzero(as_tuple=True)  # (P,) each: image and anchor of every positive

        # loc: only the positive anchors' rows are decoded and compared, then summed per image.
        deltas, target_boxes, positive_anchors = box_deltas[b, a], targets.target_boxes[b, a], anchors.select(a)
        decoded = None
        if self.box == "coder":
            per_anchor = self.coder.loc_loss(deltas, target_boxes, positive_anchors).sum(dim=1)  # (P,) over 4 coordinates
            terms = 4
        else:
            decoded = self.coder.decode(deltas, positive_anchors)  # (P, 4) xyxy
            per_anchor = BOX_LOSSES[self.box](decoded, target_boxes, reduction="none")  # (P,)
            terms = 1
        num_pos = targets.positive.sum(dim=1)  # (B,)
        loc = box_deltas.new_zeros(B).index_add(0, b, per_anchor)  # (B,) sums, 0 where no positives
        loc = loc / (terms * num_pos).clamp(min=1)  # (B,) the mean over positives (x 4 coordinates for the coder's)

        # cls: one-hot over the C real classes, background (-1) the all-zero row, given to the closed
        # form as the flat indices of its ones; summed over anchors, classes AND images, divided by C.
        ones = (b * A + a) * C + targets.target_labels[b, a]  # (P,) flat index into (B, A, C)
        logits = cls_logits.to(torch.promote_types(cls_logits.dtype, torch.float32))  # fp16/bf16 -> float32
        if self.quality == "none":
            alpha, gamma = (self.alpha, self.gamma) if self.focal else (None, 0.0)
            cls_sum = FocalBCESum.apply(logits.contiguous(), ones, alpha, gamma) / C  # () sum over the batch
        else:
            if decoded is None:
                decoded = self.coder.decode(deltas, positive_anchors)  # (P, 4) xyxy
            quality = paired_box_iou(decoded.detach(), target_boxes).to(logits.dtype)  # (P,) the soft targets
            cls_sum = self._quality_sum(logits.contiguous(), ones, quality) / C  # () sum over the batch

        if self.reduction == "lesson_sum":
            loc_total, cls_total = loc.sum(), cls_sum
        else:
            has_pos = num_pos > 0  # (B,)
            loc_total = (loc * has_pos).sum() / has_pos.sum().clamp(min=1)
            cls_total = cls_sum / B  # the mean over images
        loss = self.loc_weight * loc_total + self.cls_weight * cls_total
        return {"loc": loc_total, "cls": cls_total, "loss": loss}

    def _quality_sum(self, logits: Tensor, ones: Tensor, quality: Tensor) -> Tensor:
        """The IoU-aware class loss summed over a ``(B, A, C)`` block whose targets are 0 except
        ``quality`` ``(P,)`` at the flat indices ``ones`` ``(P,)``: the background in closed form,
        the positive entries through autograd."""
        if self.quality == "varifocal":  # a positive whose box misses its object (IoU 0) is a negative
            keep = quality > 0  # (P,)
            ones, quality = ones[keep], quality[keep]
            background = FocalBCESum.apply(logits, ones, 1.0 - VFL_ALPHA, VFL_GAMMA, False)  # alpha p^gamma BCE(x, 0)
        else:
            background = FocalBCESum.apply(logits, ones, None, QFL_BETA, False)  # p^beta BCE(x, 0)
        x = logits.reshape(-1)[ones]  # (P,) the positive entries' logits
        bce = F.binary_cross_entropy_with_logits(x, quality, reduction="none")  # (P,) against the soft target
        if self.quality == "varifocal":
            weight = quality  # (P,) VarifocalNet: q, not in the graph
        else:
            weight = (quality - torch.sigmoid(x)).abs().pow(QFL_BETA)  # (P,) GFL: |y - sigma|^beta, in the graph
        return background + (bce * weight).sum()
