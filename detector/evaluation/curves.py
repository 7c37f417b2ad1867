"""What a results folder plots, computed from a split's detections: precision-recall curves, F1
against the score threshold, and the detection confusion matrix.

The PR and F1 curves count exactly what :func:`detector.evaluation.voc_ap.voc_evaluate` counts: the VOC
devkit's matching at IoU > 0.5 (:func:`detector.evaluation.voc_ap.match_detections`), difficult objects
ignored. So the area under each class's precision envelope *is* that class's all-point VOC AP,
and a curve never disagrees with the number printed beside it.

The confusion matrix is ultralytics' (``ConfusionMatrix.process_batch``): its own class-agnostic
one-to-one matching per image at a score threshold, IoU > 0.45 by default, which answers another
question (which class was a found object given, what was missed, what was invented).

Inputs everywhere are the per-image dicts :class:`detector.evaluation.metrics.DetectionMetrics` takes (and
returns from ``per_image()``): detections ``boxes (N, 4)`` float xyxy, ``scores (N,)``,
``labels (N,)`` int64 in ``0..C-1``; ground truths ``boxes (M, 4)``, ``labels (M,)``, optional
``difficult (M,)`` bool.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from detector.core.boxes import box_iou
from detector.defaults import CONFUSION_IOU, PICTURE_SCORE
from detector.evaluation.voc_ap import all_point_ap, check_images, class_precision_recall, match_detections

__all__ = ["F1Curves", "PRCurve", "PRCurves", "confusion_matrix", "f1_curves", "pr_curves"]


@dataclass(frozen=True)
class PRCurve:
    """Precision against recall after each counted (not ignored) detection, in score order.

    ``recall``, ``precision``, ``envelope``, ``scores``: ``(D,)`` float64. ``envelope`` is the
    monotone precision envelope (the best precision at this recall or beyond): on the recall
    interval ``(recall[i - 1], recall[i]]`` (``recall[-1] = 0``) the curve is at ``envelope[i]``,
    and zero beyond ``recall[D - 1]``. ``scores[i]``: the score threshold at which the curve
    reaches point ``i``. ``recall`` is NaN throughout when ``num_positives`` is 0.
    """

    recall: Tensor
    precision: Tensor
    envelope: Tensor
    scores: Tensor
    num_positives: int

    @property
    def ap(self) -> float:
        """The area under the envelope: VOC2010+ all-point AP (NaN without positives)."""
        if self.num_positives == 0:
            return math.nan
        return all_point_ap(self.recall, self.precision).item()


@dataclass(frozen=True)
class PRCurves:
    """One :class:`PRCurve` per class (``classes[c]``) and ``all``: every counted detection of every
    class in score order against all positives (micro-averaged; the detections of a class without
    positives count as false positives there)."""

    classes: list[PRCurve]
    all: PRCurve
    iou_threshold: float

    @property
    def ap(self) -> Tensor:
        """``(C,)`` float64 area under each class's envelope (``voc_evaluate``'s ``voc_ap``)."""
        return torch.tensor([curve.ap for curve in self.classes], dtype=torch.float64)


def _curve(recall: Tensor, precision: Tensor, scores: Tensor, num_positives: int) -> PRCurve:
    envelope = precision.flip(0).cummax(0).values.flip(0)  # (D,) as in all_point_ap
    return PRCurve(recall, precision, envelope, scores, num_positives)


def pr_curves(
    detections: list[dict[str, Tensor]],
    ground_truths: list[dict[str, Tensor]],
    num_classes: int,
    iou_threshold: float = 0.5,
) -> PRCurves:
    """Precision-recall curves per class and for all classes, from the VOC devkit's matching.

    Args:
        detections, ground_truths: per image, as in the module docstring.
        num_classes: ``C``.
        iou_threshold: a detection matches above it (strictly), as in ``voc_evaluate``.

    Returns:
        :class:`PRCurves`; ``curves.classes[c].ap`` equals ``voc_evaluate(...)["voc_ap"][c]`` (the
        same float64 operations on the same counts).
    """
    matches = match_detections(detections, ground_truths, num_classes, iou_threshold)
    counted = ~matches.ignored  # (D,)
    classes = []
    for c in range(num_classes):
        recall, precision = class_precision_recall(matches, c)
        scores = matches.scores[(matches.labels == c) & counted]  # (Dc,)
        classes.append(_curve(recall, precision, scores, int(matches.num_positives[c])))
    tp = matches.tp[counted].double().cumsum(0)  # (D',) every class together
    total = int(matches.num_positives.sum())
    recall = tp / total if total else torch.full_like(tp, math.nan)
    precision = tp / torch.arange(1, len(tp) + 1, dtype=torch.float64)  # (D',) TP / (TP + FP)
    return PRCurves(classes, _curve(recall, precision, matches.scores[counted], total), iou_threshold)


@dataclass(frozen=True)
class F1Curves:
    """Precision, recall and F1 per class as functions of the score threshold.

    ``thresholds (T,)`` float64; ``precision``, ``recall``, ``f1``: ``(C, T)`` float64, from the
    detections with score ``>= thresholds[k]``; ``mean_f1 (T,)``: the mean of ``f1`` over the
    classes with positives. ``best_threshold``: the lowest threshold where ``mean_f1`` is highest,
    ``best_f1`` that value (both NaN when no class has positives); ``iou_threshold``: the matching's.
    """

    thresholds: Tensor
    precision: Tensor
    recall: Tensor
    f1: Tensor
    mean_f1: Tensor
    best_threshold: float
    best_f1: float
    iou_threshold: float


def f1_curves(
    detections: list[dict[str, Tensor]],
    ground_truths: list[dict[str, Tensor]],
    num_classes: int,
    iou_threshold: float = 0.5,
    steps: int = 1000,
) -> F1Curves:
    """F1 against the score threshold per class and averaged over classes, from the VOC devkit's
    matching (:func:`detector.evaluation.voc_ap.match_detections`, difficult objects ignored).

    At threshold ``t`` the detections with score ``>= t`` are kept; their matching verdicts do not
    depend on the lower-scored ones, so this is what matching only the kept ones would give.
    ``F1 = 2 TP / (2 TP + FP + FN)``, with ``FN`` the positives not found: 0 where nothing is kept
    but the class has positives, NaN for a class without positives (left out of the mean, as it
    is left out of mAP). Precision ``TP / (TP + FP)`` is NaN where nothing is kept.

    Args:
        detections, ground_truths: per image, as in the module docstring.
        num_classes: ``C``.
        iou_threshold: a detection matches above it (strictly).
        steps: the thresholds are ``k / steps`` for ``k = 0..steps`` (``T = steps + 1``).

    Returns:
        :class:`F1Curves`.
    """
    matches = match_detections(detections, ground_truths, num_classes, iou_threshold)
    thresholds = torch.arange(steps + 1, dtype=torch.float64) / steps  # (T,)
    tp = torch.zeros(num_classes, len(thresholds), dtype=torch.float64)  # (C, T)
    kept = torch.zeros_like(tp)  # (C, T) detections with score >= t
    for c in range(num_classes):
        counted = (matches.labels == c) & ~matches.ignored  # (D,)
        scores = matches.scores[counted]  # (Dc,) descending
        cum_tp = torch.cat([tp.new_zeros(1), matches.tp[counted].double().cumsum(0)])  # (Dc + 1,)
        # -scores ascends: the count of -s <= -t is the count of s >= t.
        kept[c] = torch.searchsorted(-scores, -thresholds, right=True).double()  # (T,)
        tp[c] = cum_tp[kept[c].long()]
    positives = matches.num_positives.double()[:, None]  # (C, 1)
    precision = tp / kept  # (C, T) 0 / 0 = NaN where nothing is kept
    recall = tp / positives  # (C, T) NaN without positives
    f1 = 2 * tp / (kept + positives)  # (C, T) 2 TP / (2 TP + FP + FN): TP + FP = kept, TP + FN = positives
    f1[matches.num_positives == 0] = math.nan
    with_positives = matches.num_positives > 0  # (C,)
    if with_positives.any():
        mean_f1 = f1[with_positives].mean(0)  # (T,)
        best = int(mean_f1.argmax())  # first maximum: the lowest threshold
        best_threshold, best_f1 = thresholds[best].item(), mean_f1[best].item()
    else:
        mean_f1 = torch.full_like(thresholds, math.nan)
        best_threshold = best_f1 = math.nan
    return F1Curves(thresholds, precision, recall, f1, mean_f1, best_threshold, best_f1, iou_threshold)


def confusion_matrix(
    detections: list[dict[str, Tensor]],
    ground_truths: list[dict[str, Tensor]],
    num_classes: int,
    score_threshold: float = PICTURE_SCORE,
    iou_threshold: float = CONFUSION_IOU,
) -> Tensor:
    """The detection confusion matrix of ultralytics (``ConfusionMatrix.process_batch``).

    Per image, the detections with score ``> score_threshold`` and the objects are matched
    regardless of class, in ultralytics' two passes over the pairs with IoU ``> iou_threshold``:
    each detection keeps its highest-IoU object, then each object keeps its highest-IoU detection
    among those that kept it. (Not quite a greedy one-to-one assignment: a detection whose best
    object went to a better-overlapping detection stays unmatched, even if it overlaps another
    free object above the threshold.) Counted at ``[predicted class, true class]``: each matched
    pair; at ``[C, true class]``: each object left unmatched (missed); at ``[predicted class, C]``:
    each detection left unmatched (invented).

    Difficult objects are left out of the matrix: they take part in the matching, but neither they
    nor a detection matched to one are counted (the VOC devkit's "neither a hit nor a miss").
    Where nothing in an image matched, ultralytics' code leaves its detections uncounted (its
    ``if n:``); here they count as invented, like every unmatched detection.

    Args:
        detections, ground_truths: per image, as in the module docstring.
        num_classes: ``C``.
        score_threshold: detections at or below it are dropped (ultralytics' ``conf``, 0.25).
        iou_threshold: ultralytics' ``iou_thres``, 0.45.

    Returns:
        ``(C + 1, C + 1)`` int64: rows the predicted class, columns the true class; index ``C`` is
        background.
    """
    check_images(detections, ground_truths, num_classes)
    C = num_classes
    rows, cols = [torch.zeros(0, dtype=torch.int64)], [torch.zeros(0, dtype=torch.int64)]  # (predicted, true) per count
    for det, gt in zip(detections, ground_truths):
        det, gt = {k: v.cpu() for k, v in det.items()}, {k: v.cpu() for k, v in gt.items()}
        keep = det["scores"] > score_threshold  # (N,)
        det_labels, det_boxes = det["labels"][keep].long(), det["boxes"][keep].double()  # (N',), (N', 4)
        gt_labels = gt["labels"].long()  # (M,)
        difficult = gt.get("difficult", torch.zeros_like(gt_labels)).bool()  # (M,)
        M, N = len(gt_labels), len(det_labels)
        iou = box_iou(gt["boxes"].double(), det_boxes)  # (M, N)
        iou = torch.where(iou > iou_threshold, iou, -1.0)  # (M, N) -1: not a candidate pair
        # Pass 1: each detection's best object (a row of -1 pads images without objects).
        padded = torch.cat([iou, iou.new_full((1, N), -1.0)])  # (M + 1, N)
        best_gt = padded.argmax(dim=0)  # (N,) not max(dim): on busy CPU cores it took ms per call
        best_iou = padded.gather(0, best_gt[None, :]).squeeze(0)  # (N,)
        chose = best_gt[None, :] == torch.arange(M)[:, None]  # (M, N) detection n kept object m
        # Pass 2: each object's best detection among those that kept it (a column of -1 pads).
        votes = torch.where(chose & (best_iou[None, :] > iou_threshold), best_iou[None, :], -1.0)  # (M, N)
        votes = torch.cat([votes, votes.new_full((M, 1), -1.0)], dim=1)  # (M, N + 1)
        det_of_gt = votes.argmax(dim=1)  # (M,)
        gt_iou = votes.gather(1, det_of_gt[:, None]).squeeze(1)  # (M,)
        matched = gt_iou > iou_threshold  # (M,)
        det_matched = torch.zeros(N, dtype=torch.bool)  # (N,)
        det_matched[det_of_gt[matched]] = True
        counted = ~difficult  # (M,)
        missed = ~matched & counted  # (M,)
        rows += [det_labels[det_of_gt[matched & counted]], torch.full((int(missed.sum()),), C)]
        cols += [gt_labels[matched & counted], gt_labels[missed]]
        rows.append(det_labels[~det_matched])  # invented
        cols.append(torch.full((int((~det_matched).sum()),), C))
    flat = torch.cat(rows) * (C + 1) + torch.cat(cols)  # (K,) one entry per count
    return torch.bincount(flat, minlength=(C + 1) ** 2).reshape(C + 1, C + 1)
