"""The PASCAL VOC average precision (Everingham et al. 2010, the devkit's ``VOCevaldet.m`` and its
Python port ``voc_eval.py``): AP@0.5 per class, VOC2007's 11-point interpolation and the VOC2010+
all-point area under the monotone precision envelope, from one matching of the split's detections
(:func:`match_detections`; the precision-recall curves of :mod:`detector.evaluation.curves` use it too).
Hand-written because the devkit's rules (strict ``>``, max-IoU ground truth taken even when already
matched, "difficult" objects) are in no installed library.

Coordinates. Boxes are float xyxy, in pixels of the original image for numbers comparable with
published VOC results. The devkit measures widths as ``x2 - x1 + 1`` on 1-based inclusive XML
pixel indices; our JSON boxes already store ``x = xmin - 1, w = xmax - xmin + 1``, so the
continuous IoU of our xyxy boxes equals the devkit's, and no ``+ 1`` appears here. Boxes in
``[0, 1]`` give the same VOC numbers and the same COCO ``map``/``map_50``/``map_75`` (IoU is
scale-free), but COCO's small/medium/large ranges (32^2 and 96^2 pixels^2) only mean something in
pixels.

Undefined values are NaN: a class with no non-difficult ground truth has no AP.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from detector.core.boxes import box_iou

__all__ = [
    "Matches",
    "all_point_ap",
    "check_images",
    "class_precision_recall",
    "eleven_point_ap",
    "match_detections",
    "voc_evaluate",
]


def eleven_point_ap(recall: Tensor, precision: Tensor) -> Tensor:
    """VOC2007 11-point interpolated AP (``VOCevaldet.m``; ``voc_ap(..., use_07_metric=True)``).

    Args:
        recall: ``(D,)`` float, non-decreasing, one entry per counted detection in score order.
        precision: ``(D,)`` float, same length.

    Returns:
        ``()`` float: mean over ``t in {0, 0.1, ..., 1}`` of the best precision at recall ``>= t``
        (0 where recall never reaches ``t``). ``t = k / 10`` exactly: voc_eval.py's
        ``np.arange(0., 1.1, 0.1)`` makes e.g. ``0.30000000000000004``, which drops a recall of exactly 3/10.
    """
    zero = precision.new_zeros(())
    points = [precision[recall >= k / 10].max() if (recall >= k / 10).any() else zero for k in range(11)]
    return torch.stack(points).mean()


def all_point_ap(recall: Tensor, precision: Tensor) -> Tensor:
    """VOC2010+ AP: area under the monotone precision envelope (``VOCap.m``; ``voc_ap(..., False)``).

    Args:
        recall: ``(D,)`` float, non-decreasing, one entry per counted detection in score order.
        precision: ``(D,)`` float, same length.

    Returns:
        ``()`` float: ``sum_i (r_i - r_{i-1}) * max_{j >= i} p_j`` with ``r_0 = 0``.
    """
    envelope = precision.flip(0).cummax(0).values.flip(0)  # (D,) best precision at this recall or beyond
    steps = torch.diff(recall, prepend=recall.new_zeros(1))  # (D,)
    return (steps * envelope).sum()


def check_images(
    detections: list[dict[str, Tensor]], ground_truths: list[dict[str, Tensor]], num_classes: int
) -> None:
    """Fail loudly on malformed per-image dicts (as :func:`voc_evaluate` takes them), naming the
    image index and the field; ``ValueError``."""
    if len(detections) != len(ground_truths):
        raise ValueError(
            f"{len(detections)} detection dicts but {len(ground_truths)} ground-truth dicts: one each per image"
        )
    for i, (det, gt) in enumerate(zip(detections, ground_truths)):
        named = (("detections", det, ("boxes", "scores", "labels")), ("ground truth", gt, ("boxes", "labels")))
        for name, d, required in named:
            missing = [k for k in required if k not in d]
            if missing:
                raise ValueError(f"image {i}: {name} lacks {missing} (has {sorted(d)})")
            n = len(d["labels"])
            if tuple(d["boxes"].shape) != (n, 4) or not d["boxes"].is_floating_point():
                raise ValueError(
                    f"image {i}: {name} boxes must be float ({n}, 4) for {n} labels, "
                    f"got {d['boxes'].dtype} {tuple(d['boxes'].shape)}"
                )
            for k in ("scores", "difficult"):
                if k in d and tuple(d[k].shape) != (n,):
                    raise ValueError(f"image {i}: {name} {k} must have shape ({n},), got {tuple(d[k].shape)}")
            if d["labels"].is_floating_point() or (n and (d["labels"].min() < 0 or d["labels"].max() >= num_classes)):
                raise ValueError(
                    f"image {i}: {name} labels must be integers in 0..{num_classes - 1} (drop padding label -1 first), "
                    f"got {d['labels'].unique().tolist()}"
                )


@dataclass(frozen=True)
class Matches:
    """Every detection of a split with the VOC devkit's verdict, in global score order.

    ``scores (D,)`` float64, descending (ties keep input order: images in order, then detections
    in order within an image); ``labels (D,)`` int64 in ``0..C-1``; ``tp (D,)`` bool;
    ``ignored (D,)`` bool (on a difficult object: neither TP nor FP; never ``tp``); the rest
    (``~tp & ~ignored``) are FPs. ``num_positives (C,)`` int64: the non-difficult objects per class.
    """

    scores: Tensor
    labels: Tensor
    tp: Tensor
    ignored: Tensor
    num_positives: Tensor


def match_detections(
    detections: list[dict[str, Tensor]],
    ground_truths: list[dict[str, Tensor]],
    num_classes: int,
    iou_threshold: float = 0.5,
) -> Matches:
    """The VOC devkit's matching (``voc_eval.py``), for every class at once: what :func:`voc_evaluate`
    and the curves of :mod:`detector.evaluation.curves` count.

    Per class, detections of the whole split are taken by score, descending (ties keep input order).
    Each is matched to the ground truth of that class in its image with the largest IoU; if that IoU
    is strictly greater than ``iou_threshold`` (``ovmax > ovthresh``) it is a TP when the object is
    not yet taken, an FP when it is (a duplicate), and ignored (neither) when the object is
    difficult (which is never taken). Otherwise it is an FP. Difficult objects do not count as
    positives. A detection's verdict depends only on the detections scored above it, so keeping
    the detections with score ``>= t`` keeps their verdicts (no rematching at another threshold).

    Args:
        detections: per image, ``boxes (N, 4)`` float xyxy, ``scores (N,)``, ``labels (N,)`` int64 in ``0..C-1``.
        ground_truths: per image, ``boxes (M, 4)`` float xyxy (same coordinates as the detections,
            pixels for VOC), ``labels (M,)`` int64 in ``0..C-1``, optional ``difficult (M,)`` bool
            (absent = none difficult).
        num_classes: ``C``.
        iou_threshold: the devkit's ``ovthresh``, 0.5 for VOC.

    Returns:
        :class:`Matches`: the ``D`` detections of the split, in score order, and ``num_positives (C,)``.
    """
    check_images(detections, ground_truths, num_classes)
    if not detections:
        raise ValueError("matching needs at least one image")
    # Per detection: its best same-class object in its own image (the devkit's jmax, ovmax), and
    # from that whether it is ignored (a difficult object) and which object it claims (-1: none).
    scores, labels, ignored, claim, gt_labels, gt_difficult = [], [], [], [], [], []
    offset = 0  # index of this image's first object in the whole split
    for det, gt in zip(detections, ground_truths):
        difficult = gt.get("difficult", torch.zeros_like(gt["labels"])).bool()  # (M,)
        iou = box_iou(det["boxes"].double(), gt["boxes"].double())  # (N, M)
        iou[det["labels"][:, None] != gt["labels"][None, :]] = -1.0  # only objects of the detection's class
        iou = torch.cat([iou, iou.new_full((len(iou), 1), -1.0)], dim=1)  # (N, M + 1): column M = "no object"
        jmax = iou.argmax(dim=1)  # (N,) first maximum, as np.argmax
        hit = iou.gather(1, jmax[:, None]).squeeze(1) > iou_threshold  # (N,) strict: ovmax > ovthresh
        on_difficult = torch.cat([difficult, difficult.new_zeros(1)])[jmax]  # (N,)
        ignored.append(hit & on_difficult)
        claim.append(torch.where(hit & ~on_difficult, jmax + offset, -1))
        scores.append(det["scores"].double())
        labels.append(det["labels"].long())
        gt_labels.append(gt["labels"].long())
        gt_difficult.append(difficult)
        offset += len(difficult)

    scores_all = torch.cat(scores)  # (D,)
    order = torch.sort(scores_all, descending=True, stable=True).indices  # (D,) the split in score order
    labels_s, ignored_s, claim_s = torch.cat(labels)[order], torch.cat(ignored)[order], torch.cat(claim)[order]
    # The devkit's sequential loop, loop-free: an object's first claimant in score order is the TP,
    # later claimants are duplicates (FP). Sorting by object with a stable sort keeps score order.
    by_object = torch.sort(claim_s, stable=True).indices  # (D,)
    first = torch.ones_like(ignored_s)  # (D,)
    first[by_object[1:]] = claim_s[by_object[1:]] != claim_s[by_object[:-1]]
    tp = (claim_s >= 0) & first  # (D,)

    gt_labels_all, gt_difficult_all = torch.cat(gt_labels), torch.cat(gt_difficult)  # (G,), (G,)
    num_positives = torch.bincount(gt_labels_all[~gt_difficult_all], minlength=num_classes)  # (C,)
    return Matches(scores_all[order], labels_s, tp, ignored_s, num_positives)


def voc_evaluate(
    detections: list[dict[str, Tensor]],
    ground_truths: list[dict[str, Tensor]],
    num_classes: int,
    iou_threshold: float = 0.5,
) -> dict[str, Any]:
    """PASCAL VOC average precision per class, with the devkit's rules (``voc_eval.py``): the
    verdicts of :func:`match_detections` (same arguments), accumulated per class in score order.

    Returns:
        ``{"voc07_ap": (C,) float64, "voc_ap": (C,) float64, "num_positives": (C,) int64,
        "voc07_map": float, "voc_map": float}``: 11-point and all-point AP per class (NaN for a
        class without non-difficult ground truth) and their means over the other classes (NaN if none).
    """
    matches = match_detections(detections, ground_truths, num_classes, iou_threshold)
    num_positives = matches.num_positives
    ap07 = torch.full((num_classes,), float("nan"), dtype=torch.float64)
    ap = ap07.clone()
    for c in range(num_classes):
        if num_positives[c] == 0:
            continue
        recall, precision = class_precision_recall(matches, c)
        ap07[c], ap[c] = eleven_point_ap(recall, precision), all_point_ap(recall, precision)
    return {
        "voc07_ap": ap07,
        "voc_ap": ap,
        "num_positives": num_positives,
        "voc07_map": ap07.nanmean().item(),
        "voc_map": ap.nanmean().item(),
    }


def class_precision_recall(matches: Matches, c: int) -> tuple[Tensor, Tensor]:
    """Recall and precision of class ``c`` after each of its counted (not ignored) detections.

    Returns:
        ``(recall (Dc,), precision (Dc,))`` float64, in score order: ``TP / num_positives[c]``
        (NaN for a class without positives) and ``TP / (TP + FP)`` over the detections so far.
    """
    counted = (matches.labels == c) & ~matches.ignored  # (D,) ignored detections change neither TP nor FP
    tp_c = matches.tp[counted].double().cumsum(0)  # (Dc,)
    fp_c = (~matches.tp[counted]).double().cumsum(0)  # (Dc,)
    recall = tp_c / matches.num_positives[c]
    precision = tp_c / (tp_c + fp_c)  # > 0 denominators: every counted detection is a TP or an FP
    return recall, precision
