"""Why a number moved: which images, and which kind of error (TIDE, Bolya et al. 2020, "TIDE: A
General Toolbox for Identifying Object Detection Errors").

Every detection of a split (the ``max_detections`` highest-scoring per image) is matched as COCO
does at one IoU, ``iou`` (0.5): in score order, each takes the unmatched object of its class it
overlaps most, if that IoU is ``>= iou``; a detection overlapping a difficult object of its class
(intersection over the *detection's* area ``> iou``, COCO's crowd overlap) is ignored, neither
true nor false (difficult objects are TIDE's ignore regions, as COCO's ``iscrowd`` are in
``tidecv``). Each false positive then gets one kind, tested in this order:

- ``bkg``: the image has no objects, or the detection overlaps every object by at most
  ``background_iou`` (0.1): background taken for an object;
- ``loc``: its best IoU with an object of its class is in ``[background_iou, iou]``: right class,
  box off;
- ``cls``: it overlaps an object of another class by ``>= iou``: right box, wrong class;
- ``dupe``: it overlaps an object of its class that a higher-scoring detection matched by ``>= iou``;
- ``both``: none of these (wrong class and box off);

and each unmatched object that no ``cls`` or ``loc`` error points at is ``missed``. (An image
without objects is a background-only image: every detection on it is a ``bkg`` error.)

**dAP** of a kind: the AP gained by fixing every error of that kind and nothing else (TIDE's
``fix_main_errors``): a ``cls`` or ``loc`` error becomes a true positive of the object's class,
the highest-scoring one per object, the others and every ``dupe``, ``bkg`` and ``both`` error are
removed, a ``missed`` object leaves the positives; a gain below 0 (binning) is 0. The AP is TIDE's
at ``iou``: per class the 101-point interpolated area under the precision envelope (COCO's
``recThrs``), 0 for a class with detections but no objects, averaged over the classes with
detections or objects. With every class present in the split and no difficult objects this is
COCO's mAP@0.5 (pycocotools, ``metrics.json``'s ``map_50``). Also TIDE's two special errors: the
AP gained by scoring every false positive below every true one (``false_positives``), and by
finding every object without adding a detection (``false_negatives``).

Hand-written because no maintained library computes the breakdown (faster-coco-eval has the
per-image TP/FP/FN but no error kinds; tidecv is unmaintained since 2020 and needs opencv-python,
which clashes with the opencv-python-headless installed here); its numbers equal tidecv's
(``tests/evaluation/test_errors.py`` against ``tests/evaluation/tide_reference.py``, tidecv's computation). Overlaps are
pycocotools' (what COCOeval and TIDE use).

Per image (:meth:`ErrorAnalysis.image_counts`), at a score threshold: TP (a kept detection that
matched), FP (a kept one that did not, by kind; ignored ones are neither), FN (an object with no
kept detection matched to it; difficult objects are not counted). Matching in score order makes
these exactly the counts of matching only the kept detections.

Inputs are the per-image dicts of :class:`detector.evaluation.metrics.DetectionMetrics`:
detections ``boxes (N, 4)`` float xyxy, ``scores (N,)``, ``labels (N,)`` in ``0..C-1``; ground
truths ``boxes (M, 4)``, ``labels (M,)``, optional ``difficult (M,)`` bool.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from pycocotools import mask as mask_utils
from torch import Tensor

from detector.evaluation.voc_ap import check_images

__all__ = ["ERROR_KINDS", "FP_KINDS", "ErrorAnalysis", "ImageVerdicts", "analyse_errors"]

ERROR_KINDS = ("cls", "loc", "both", "dupe", "bkg", "missed")
"""TIDE's six main error kinds, in its order (``Cls``, ``Loc``, ``Both``, ``Dupe``, ``Bkg``, ``Miss``)."""
FP_KINDS = ERROR_KINDS[:5]
"""The kinds of false positive; a detection's kind code is ``1 + FP_KINDS.index(kind)``, 0 = TP."""
TP, CLS, LOC, BOTH, DUPE, BKG = range(6)
NOT_EVALUATED = -1  # a detection beyond the max_detections highest-scoring of its image

MAX_DETECTIONS = 100
"""Detections per image taken into the analysis, the highest-scoring (COCO's and TIDE's ``maxDets``)."""
BACKGROUND_IOU = 0.1
"""Below this IoU with every object a false positive is background (TIDE's ``background_threshold``)."""


@dataclass(frozen=True)
class ImageVerdicts:
    """One image's verdicts, detections and objects in the order given.

    ``kind (N,)`` int64: :data:`TP` (0) or the false positive's kind code (``1 + FP_KINDS.index``),
    :data:`NOT_EVALUATED` (-1) beyond the ``max_detections`` best; ``ignored (N,)`` bool: on a
    difficult object (neither TP nor FP; its ``kind`` is what fixing it would be, as in TIDE);
    ``scores (N,)`` float64; ``matched (M,)`` int64: the detection that matched each object, -1
    for none; ``difficult (M,)`` bool.
    """

    kind: np.ndarray
    ignored: np.ndarray
    scores: np.ndarray
    matched: np.ndarray
    difficult: np.ndarray

    def at(self, score_threshold: float) -> dict[str, np.ndarray]:
        """Boolean masks at ``score >= score_threshold``: ``tp``, ``fp`` ``(N,)``, ``fn`` ``(M,)``."""
        kept = (self.scores >= score_threshold) & (self.kind != NOT_EVALUATED)  # (N,)
        found = self.matched >= 0
        found[found] = kept[self.matched[found]]  # (M,) matched by a kept detection
        return {"tp": kept & (self.kind == TP), "fp": kept & (self.kind > TP) & ~self.ignored, "fn": ~found & ~self.difficult}


@dataclass(frozen=True)
class ErrorAnalysis:
    """What :func:`analyse_errors` found.

    ``ap``: TIDE's AP at ``iou`` (module docstring; NaN with no class to average); ``dap``:
    ``{kind: dAP}`` for the six :data:`ERROR_KINDS`; ``dap_false_positives``,
    ``dap_false_negatives``: the special errors (not clamped); ``errors``: ``{kind: count}`` over
    every evaluated detection and object (ignored detections not counted); ``images``: one
    :class:`ImageVerdicts` per image; ``iou``, ``background_iou``: the thresholds it used.
    """

    ap: float
    dap: dict[str, float]
    dap_false_positives: float
    dap_false_negatives: float
    errors: dict[str, int]
    images: list[ImageVerdicts]
    iou: float
    background_iou: float

    def summary_line(self) -> str:
        """``errors (dAP@0.5): cls 0.012, loc 0.041, ...``: what ``detector eval`` prints."""
        return f"errors (dAP@{self.iou:g}): " + ", ".join(f"{k} {self.dap[k]:.3f}" for k in ERROR_KINDS)

    def image_counts(self, score_threshold: float) -> list[dict[str, int]]:
        """Per image at ``score >= score_threshold``: ``tp``, ``fp``, ``fn``, ``objects`` (not
        difficult), ``detections`` (kept, ignored ones included) and ``fp`` by kind (``cls``, ...)."""
        rows = []
        for v in self.images:
            m = v.at(score_threshold)
            kept = (v.scores >= score_threshold) & (v.kind != NOT_EVALUATED)
            row = {"tp": int(m["tp"].sum()), "fp": int(m["fp"].sum()), "fn": int(m["fn"].sum())}
            row.update(objects=int((~v.difficult).sum()), detections=int(kept.sum()))
            row.update({k: int((m["fp"] & (v.kind == 1 + i)).sum()) for i, k in enumerate(FP_KINDS)})
            rows.append(row)
        return rows

    def as_dict(self, score_threshold: float) -> dict[str, object]:
        """The JSON-ready numbers (``metrics.json``'s ``errors``); counts at ``score_threshold``."""
        rows = self.image_counts(score_threshold)
        totals = {k: sum(r[k] for r in rows) for k in ("tp", "fp", "fn", *FP_KINDS)}
        return {
            "ap": None if math.isnan(self.ap) else self.ap,
            "ap_definition": f"TIDE's AP@{self.iou:g} (COCO's 101-point interpolation, averaged over classes)",
            "iou": self.iou,
            "background_iou": self.background_iou,
            "dap": dict(self.dap),
            "dap_false_positives": self.dap_false_positives,
            "dap_false_negatives": self.dap_false_negatives,
            "errors_all_scores": dict(self.errors),
            "score_threshold": score_threshold,
            "at_score_threshold": totals,
            "summary": self.summary_line(),
        }


def _xywh(boxes: Tensor) -> np.ndarray:
    b = boxes.detach().cpu().double().numpy().reshape(-1, 4)
    return np.concatenate([b[:, :2], b[:, 2:] - b[:, :2]], axis=1)


def _iou(dets: np.ndarray, objects: np.ndarray, crowd: bool) -> np.ndarray:
    """``(N, M)`` pycocotools overlaps of xywh boxes; ``crowd``: intersection over the detection's area."""
    if not len(dets) or not len(objects):
        return np.zeros((len(dets), len(objects)))
    return np.asarray(mask_utils.iou(dets, objects, [int(crowd)] * len(objects)), dtype=np.float64)


@dataclass
class _Split:
    """Everything the dAP scenarios need, in TIDE's processing order (images in order, each
    image's detections by score)."""

    num_classes: int
    det_class: list[int]  # per evaluated detection
    det_score: list[float]
    det_tp: list[bool]
    det_ignored: list[bool]
    det_kind: list[int]
    det_target: list[int]  # cls/loc: the global index of the object it points at, else -1
    gt_class: list[int]  # per non-difficult object
    gt_used: list[bool]


def _image(split: _Split, det: dict[str, Tensor], gt: dict[str, Tensor], iou: float, bg: float, max_dets: int) -> ImageVerdicts:
    """Match one image and give each of its false positives a kind (TIDE's ``TIDEExample`` and
    ``TIDERun._eval_image``), appending to ``split``."""
    scores = det["scores"].detach().cpu().double().numpy()  # (N,)
    labels = det["labels"].detach().cpu().numpy().astype(np.int64)
    boxes = _xywh(det["boxes"])
    gt_labels = gt["labels"].detach().cpu().numpy().astype(np.int64)  # (M,)
    difficult = gt.get("difficult")
    difficult = np.zeros(len(gt_labels), bool) if difficult is None else difficult.detach().cpu().numpy().astype(bool)
    gt_boxes = _xywh(gt["boxes"])
    order = np.argsort(-scores, kind="stable")[:max_dets]  # (n,) evaluated detections, best first
    kind = np.full(len(scores), NOT_EVALUATED, dtype=np.int64)
    ignored = np.zeros(len(scores), bool)
    matched = np.full(len(gt_labels), -1, dtype=np.int64)

    real = np.flatnonzero(~difficult)  # (Mr,) objects that count
    base = len(split.gt_class)  # global index of this image's first real object
    split.gt_class += gt_labels[real].tolist()
    split.gt_used += [False] * len(real)
    ious = _iou(boxes[order], gt_boxes[real], crowd=False)  # (n, Mr)
    same = labels[order][:, None] == gt_labels[real][None, :]  # (n, Mr)
    cls_iou = ious * same
    free = cls_iou.copy()
    used = np.zeros(len(real), bool)
    det_used = np.zeros(len(order), bool)
    for i in range(len(order)):
        if len(real):
            j = int(free[i].argmax())
            if free[i, j] >= iou:
                det_used[i], used[j] = True, True
                matched[real[j]] = order[i]
                free[:, j] = 0
    hard = np.flatnonzero(difficult)
    crowd = _iou(boxes[order], gt_boxes[hard], crowd=True)  # (n, Mh)
    on_hard = (crowd > iou) & (labels[order][:, None] == gt_labels[hard][None, :])  # (n, Mh)
    ignored[order] = ~det_used & on_hard.any(axis=1)
    for j, u in enumerate(used):
        split.gt_used[base + j] = bool(u)

    for i, d in enumerate(order):
        split.det_class.append(int(labels[d]))
        split.det_score.append(float(scores[d]))
        split.det_tp.append(bool(det_used[i]))
        split.det_ignored.append(bool(ignored[d]))
        target = -1
        if det_used[i]:
            k = TP
        elif not len(real):
            k = BKG
        elif bg <= cls_iou[i].max() <= iou:
            k, target = LOC, base + int(cls_iou[i].argmax())
        elif (ious[i] * ~same[i]).max() >= iou:
            k, target = CLS, base + int((ious[i] * ~same[i]).argmax())
        elif (cls_iou[i] * used).max() >= iou:
            k = DUPE
        elif ious[i].max() <= bg:
            k = BKG
        else:
            k = BOTH
        kind[d] = k
        split.det_kind.append(k)
        split.det_target.append(target)
    return ImageVerdicts(kind, ignored, scores, matched, difficult)


def _mean_ap(num_classes: int, cls: np.ndarray, score: np.ndarray, tp: np.ndarray, positives: np.ndarray) -> float:
    """TIDE's ``ClassedAPDataObject.get_mAP`` over points ``cls``, ``score``, ``tp`` ``(P,)`` (in
    insertion order; ties keep it) and ``positives (C,)``."""
    aps = []
    x = np.arange(101) / 100  # recall 0.00, 0.01, ..., 1.00
    for c in range(num_classes):
        mine = cls == c
        if not mine.any() and positives[c] == 0:
            continue  # an empty class: not averaged
        if positives[c] == 0:
            aps.append(0.0)
            continue
        order = np.argsort(-score[mine], kind="stable")
        hits = tp[mine][order].astype(np.float64)
        if not len(hits):
            aps.append(0.0)
            continue
        true = np.cumsum(hits)
        precision = true / np.arange(1, len(hits) + 1)
        recall = true / positives[c]
        envelope = np.maximum.accumulate(precision[::-1])[::-1]
        at = np.searchsorted(recall, x, side="left")  # (101,)
        y = np.where(at < len(envelope), envelope[np.minimum(at, len(envelope) - 1)], 0.0)
        aps.append(float(sum(y.tolist()) / len(y)))  # a plain sum, as tidecv's
    return sum(aps) / len(aps) if aps else math.nan


def _scenarios(split: _Split) -> tuple[float, dict[str, float], float, float, dict[str, int]]:
    """The AP, each kind's dAP, the special errors' dAP and the error counts (TIDE's ``fix_errors``)."""
    C = split.num_classes
    cls, score, tp = np.array(split.det_class, dtype=np.int64), np.array(split.det_score, dtype=np.float64), np.array(split.det_tp, bool)
    ignored = np.array(split.det_ignored, bool)
    kind, target = np.array(split.det_kind, dtype=np.int64), np.array(split.det_target, dtype=np.int64)
    gt_class, gt_used = np.array(split.gt_class, dtype=np.int64), np.array(split.gt_used, bool)
    positives = np.bincount(gt_class, minlength=C)  # (C,)
    counted = ~ignored  # (D,) what the AP sees
    base = _mean_ap(C, cls[counted], score[counted], tp[counted], positives)

    # cls/loc errors that can turn into a TP: the object is unmatched; only the best-scoring one per
    # object, the first on ties (TIDE's BestGTMatch, shared by the two kinds).
    best: dict[int, int] = {}
    usable = np.zeros(len(gt_class), bool)  # an unmatched object some cls/loc error points at: not "missed"
    for d in np.flatnonzero(target >= 0):
        t = int(target[d])
        if not gt_used[t]:
            usable[t] = True
            if t not in best or score[best[t]] < score[d]:
                best[t] = int(d)
    fixable = np.zeros(len(kind), bool)
    fixable[list(best.values())] = True
    missed = ~gt_used & ~usable  # (G,)

    # tidecv rebuilds the points as the errors' (original or fixed), in their order, then the TPs.
    errors = np.flatnonzero(kind != TP)  # (E,) every error but the missed, in processing order
    tps = np.flatnonzero(tp & counted)

    def points(fix: int = NOT_EVALUATED) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(class, score, tp)`` of every point with the errors of kind ``fix`` fixed."""
        this = kind[errors] == fix  # (E,)
        turned = this & fixable[errors] & np.isin(kind[errors], (CLS, LOC))  # (E,) become TPs
        stays = ~this & counted[errors]  # (E,) unfixed FPs (an ignored detection has no point)
        keep = turned | stays
        chosen = errors[keep]
        cls_e = np.where(turned[keep], gt_class[np.maximum(target[chosen], 0)], cls[chosen])
        return (np.concatenate([cls_e, cls[tps]]), np.concatenate([score[chosen], score[tps]]),
                np.concatenate([turned[keep], np.ones(len(tps), bool)]))

    dap = {name: max(_mean_ap(C, *points(code), positives) - base, 0.0)
           for code, name in zip((CLS, LOC, BOTH, DUPE, BKG), FP_KINDS)}
    unchanged = points()
    dap["missed"] = max(_mean_ap(C, *unchanged, positives - np.bincount(gt_class[missed], minlength=C)) - base, 0.0)
    # Special errors: every FP scored below every TP (0 and 1); every unmatched object found.
    special_cls, _, special_tp = unchanged
    dap_fp = _mean_ap(C, special_cls, special_tp.astype(np.float64), special_tp, positives) - base
    dap_fn = _mean_ap(C, *unchanged, positives - np.bincount(gt_class[~gt_used], minlength=C)) - base

    counts = {name: int(((kind == code) & counted).sum()) for code, name in zip((CLS, LOC, BOTH, DUPE, BKG), FP_KINDS)}
    counts["missed"] = int(missed.sum())
    return base, dap, dap_fp, dap_fn, counts


def analyse_errors(
    detections: list[dict[str, Tensor]],
    ground_truths: list[dict[str, Tensor]],
    num_classes: int,
    iou: float = 0.5,
    background_iou: float = BACKGROUND_IOU,
    max_detections: int = MAX_DETECTIONS,
) -> ErrorAnalysis:
    """TIDE's error breakdown of a split and every detection's verdict (module docstring).

    Args:
        detections, ground_truths: per image, as in the module docstring (pixels or ``[0, 1]``:
            only overlaps matter).
        num_classes: ``C``.
        iou: a detection matches an object at IoU ``>=`` this (TIDE's ``pos_threshold``).
        background_iou: TIDE's ``background_threshold``.
        max_detections: the highest-scoring detections per image that are analysed.

    Returns:
        :class:`ErrorAnalysis`; its ``ap`` and ``dap`` equal tidecv's divided by 100.
    """
    check_images(detections, ground_truths, num_classes)
    split = _Split(num_classes, [], [], [], [], [], [], [], [])
    images = [_image(split, det, gt, iou, background_iou, max_detections) for det, gt in zip(detections, ground_truths)]
    ap, dap, dap_fp, dap_fn, errors = _scenarios(split)
    return ErrorAnalysis(ap, dap, dap_fp, dap_fn, errors, images, iou, background_iou)
