"""COCO AP of any multiset of a split's images, from pycocotools' per-image matches computed once.

A bootstrap resample of a split (images drawn with replacement) is a multiset of its images: image
``i`` counted ``w_i`` times. Its COCO mAP could be computed by pycocotools on a dataset with each
image copied ``w_i`` times, but at about 4 s per evaluation of a BCCD-sized split (72 images, 7,200
detections: ``bench/bootstrap.py``), a thousand resamples of six runs take seven hours. The
matching of detections to objects is per image (``COCOeval.evaluateImg``) and does not change when
an image is copied, so it is done here once per run (about a second); a resample only changes how
often each image's hits, misses and objects count in ``COCOeval.accumulate``, which is computed
here for R resamples at once from the weights ``(R, N)`` (about 6 ms per resample):

* Per class, pycocotools sorts every detection of every image by score and walks down the list:
  precision and recall after each detection, the precision envelope (the running maximum from the
  right), and the envelope read at the 101 recall points. Along the list, recall rises only at a
  hit and precision is highest at a hit, so the envelope read at any recall point equals the one
  over the hits alone (a miss or an ignored detection lowers precision or leaves it as it was):
  only the hits are kept as points.
* With weights ``w``: true positives at a hit = the running sum of the weights of the hits' images;
  false positives = the running sum over every detection's image at that place, less the hits and
  the ignored detections above it; objects = ``w @ objects``; then AP as pycocotools computes it
  (``tp / (tp + fp + eps)``, the envelope, ``searchsorted`` on recall with ``side="left"``, 0
  beyond the last hit). An image drawn twice counts as two copies (a run of identical hits adds no
  recall point between its first and last copy that the envelope could read differently); an
  image not drawn has weight 0 and drops out. The cost is O(R x (D + T x M)) for D detections.

With every weight 1 the numbers equal pycocotools' ``COCOeval`` (area ``all``, 100 detections per
image) as :class:`~detector.evaluation.metrics.DetectionMetrics` computes them, and with integer
weights those of pycocotools on the dataset with the copies (``tests/test_bootstrap.py`` checks
both), up to the order of detections with exactly equal scores in different images.
"""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass

import numpy as np
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval, Params
from torch import Tensor

from detector.core.boxes import xyxy_to_xywh

__all__ = ["CocoMatches", "ClassMatches", "match_images", "METRICS"]

METRICS = ("map", "map_50", "map_75")
"""What :meth:`CocoMatches.metrics` returns: COCO mAP@[.5:.95], mAP@0.5, mAP@0.75."""

MAX_DETECTIONS = 100  # COCO's: the detections per image and class AP counts (pycocotools' maxDets[-1])


@dataclass
class ClassMatches:
    """One class's detections over a split of N images, sorted by score as pycocotools sorts them
    (D detections; at T IoU thresholds, M the most hits and I the most ignored detections at any).

    Attributes:
        objects: ``(N,)`` non-ignored objects of the class per image (``npig``'s terms).
        image: ``(D,)`` the image of each detection, in score order.
        hit_at: ``(T, M)`` where each hit lies in that order (padded with 0 past ``hits[t]``).
        hits: ``(T,)`` hits at each threshold.
        ignored_image: ``(T, I)`` the image of each ignored detection (on a difficult object) in
            score order, padded with 0.
        ignored_before: ``(T, M)`` how many ignored detections lie above each hit.
    """

    objects: Tensor
    image: Tensor
    hit_at: Tensor
    hits: Tensor
    ignored_image: Tensor
    ignored_before: Tensor

    def precision_recall(self, weights: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Weighted ``(precision, recall)`` at each hit ``(R, T, M)`` as pycocotools computes them
        on the copies, and the objects ``(R,)``: true positives = the weights of the hits at or
        above it; false positives = the weights of every detection at or above it less those hits
        and the ignored detections above it."""
        R, (T, M) = len(weights), self.hit_at.shape
        objects = weights @ self.objects  # (R,)
        seen = weights[:, self.image].cumsum(-1)  # (R, D) detections at or above each place
        tp = weights[:, self.image[self.hit_at]].cumsum(-1)  # (R, T, M)
        ignored = torch.cat([torch.zeros(R, T, 1, dtype=weights.dtype), weights[:, self.ignored_image].cumsum(-1)], -1)
        fp = seen[:, self.hit_at] - tp - ignored.gather(-1, self.ignored_before.expand(R, T, M))
        precision = tp / (tp + fp + np.spacing(1))
        recall = tp / objects.clamp(min=np.finfo(np.float64).tiny)[:, None, None]
        return precision, recall, objects


@dataclass
class CocoMatches:
    """Per-image COCO matches of one run over one split: what :meth:`average_precision` needs."""

    num_images: int
    iou_thresholds: Tensor  # (T,) pycocotools' 0.50, 0.55, ..., 0.95
    recall_thresholds: Tensor  # (101,) 0, 0.01, ..., 1
    classes: list[ClassMatches]

    def average_precision(self, weights: Tensor | None = None) -> Tensor:
        """COCO AP per IoU threshold and class of each weighted image set: ``weights`` ``(R, N)``
        (how often each image counts; ``None``: each once) -> ``(R, T, K)``, NaN for a class
        without objects in that set (left out of the means, as pycocotools does)."""
        if weights is None:
            weights = torch.ones(1, self.num_images, dtype=torch.float64)
        weights = weights.to(torch.float64)
        R, T = len(weights), len(self.iou_thresholds)
        out = torch.full((R, T, len(self.classes)), float("nan"), dtype=torch.float64)
        for k, c in enumerate(self.classes):
            M = c.hit_at.shape[1]
            if not M:  # no hit at any threshold: AP 0 wherever the class has objects
                objects = weights @ c.objects
                out[:, :, k] = torch.where(objects[:, None] > 0, 0.0, float("nan"))
                continue
            precision, recall, objects = c.precision_recall(weights)
            valid = torch.arange(M) < c.hits[:, None]  # (T, M)
            recall = torch.where(valid, recall, torch.inf)  # past the last hit: no recall point reads it
            precision = torch.where(valid, precision, 0.0)
            # the envelope: the running maximum from the right; one 0 past the end for recall points beyond the last hit
            envelope = torch.cat([precision.flip(-1).cummax(-1).values.flip(-1), torch.zeros(R, T, 1, dtype=torch.float64)], -1)
            at = torch.searchsorted(recall.contiguous(), self.recall_thresholds.expand(R, T, -1).contiguous(), side="left")
            ap = envelope.gather(-1, at).mean(-1)  # (R, T)
            out[:, :, k] = torch.where(objects[:, None] > 0, ap, float("nan"))
        return out

    def metrics(self, weights: Tensor | None = None) -> dict[str, Tensor]:
        """COCO ``map``, ``map_50``, ``map_75`` of each weighted image set (``(R,)`` each; NaN
        when no class has objects in the set), averaged over classes as ``COCOeval.summarize``."""
        ap = self.average_precision(weights)  # (R, T, K)
        t50 = int((self.iou_thresholds - 0.5).abs().argmin())
        t75 = int((self.iou_thresholds - 0.75).abs().argmin())
        return {"map": ap.nanmean(-1).nanmean(-1), "map_50": ap[:, t50].nanmean(-1), "map_75": ap[:, t75].nanmean(-1)}


def _coco(images: list[dict[str, Tensor]], num_classes: int, detections: bool) -> COCO:
    """A pycocotools ``COCO`` of per-image boxes: image ids ``0..N-1``, category ids the labels."""
    annotations = []
    for i, image in enumerate(images):
        boxes = xyxy_to_xywh(image["boxes"].double()).tolist()
        labels = image["labels"].tolist()
        scores = image["scores"].tolist() if detections else [None] * len(labels)
        crowd = image.get("difficult", torch.zeros(len(labels), dtype=torch.bool)).tolist()
        for box, label, score, difficult in zip(boxes, labels, scores, crowd):
            a = {"id": len(annotations) + 1, "image_id": i, "category_id": int(label), "bbox": box, "area": box[2] * box[3]}
            a.update({"score": score, "iscrowd": 0} if detections else {"iscrowd": int(difficult)})
            annotations.append(a)
    coco = COCO()
    coco.dataset = {
        "images": [{"id": i} for i in range(len(images))],
        "annotations": annotations,
        "categories": [{"id": c} for c in range(num_classes)],
    }
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def match_images(detections: list[dict[str, Tensor]], ground_truths: list[dict[str, Tensor]], num_classes: int) -> CocoMatches:
    """pycocotools' per-image matching of one run's detections with the objects, once.

    Args:
        detections: per image ``boxes`` ``(N, 4)`` xyxy, ``scores`` ``(N,)``, ``labels`` ``(N,)``
            (what :func:`~detector.evaluation.evaluator.evaluate` returns).
        ground_truths: per image ``boxes`` ``(M, 4)`` xyxy, ``labels`` ``(M,)``, optional
            ``difficult`` ``(M,)`` (ignored objects: COCO's ``iscrowd``, as DetectionMetrics passes them).
        num_classes: C; labels are ``0..C-1``.
    """
    if len(detections) != len(ground_truths):
        raise ValueError(f"{len(detections)} images of detections but {len(ground_truths)} of ground truth")
    N = len(ground_truths)
    params = Params(iouType="bbox")
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress
        evaluation = COCOeval(_coco(ground_truths, num_classes, False), _coco(detections, num_classes, True), "bbox")
        evaluation.params.imgIds = list(range(N))
        evaluation.params.catIds = list(range(num_classes))
        evaluation.params.areaRng, evaluation.params.areaRngLbl = [params.areaRng[0]], ["all"]
        evaluation.params.maxDets = [MAX_DETECTIONS]
        evaluation.evaluate()
    T = len(params.iouThrs)
    classes = []
    for k in range(num_classes):
        per_image = evaluation.evalImgs[k * N:(k + 1) * N]  # ordered by class, area (one), image
        objects = torch.zeros(N, dtype=torch.float64)
        scores, image, matched, ignored = [np.zeros(0)], [np.zeros(0, np.int64)], [np.zeros((T, 0), bool)], [np.zeros((T, 0), bool)]
        for i, e in enumerate(per_image):
            if e is None:  # neither objects nor detections of the class
                continue
            objects[i] = float(np.count_nonzero(np.asarray(e["gtIgnore"]) == 0))
            scores.append(np.asarray(e["dtScores"], dtype=np.float64))
            image.append(np.full(len(e["dtScores"]), i, dtype=np.int64))
            matched.append(np.asarray(e["dtMatches"]).reshape(T, -1) > 0)
            ignored.append(np.asarray(e["dtIgnore"]).reshape(T, -1).astype(bool))
        order = np.argsort(-np.concatenate(scores), kind="mergesort")  # pycocotools' order: ties by image
        is_ignored = np.concatenate(ignored, 1)[:, order]  # (T, D)
        is_hit = np.concatenate(matched, 1)[:, order] & ~is_ignored
        hit_places = [np.flatnonzero(h) for h in is_hit]
        ignored_places = [np.flatnonzero(g) for g in is_ignored]
        image_of = np.concatenate(image)[order]
        classes.append(ClassMatches(
            objects=objects,
            image=torch.from_numpy(image_of),
            hit_at=_padded(hit_places),
            hits=torch.tensor([len(p) for p in hit_places]),
            ignored_image=_padded([image_of[p] for p in ignored_places]),
            ignored_before=_padded([np.searchsorted(g, h) for g, h in zip(ignored_places, hit_places)]),
        ))
    return CocoMatches(N, torch.from_numpy(params.iouThrs), torch.from_numpy(params.recThrs), classes)


def _padded(rows: list[np.ndarray]) -> Tensor:
    """Integer rows of different lengths -> ``(len(rows), longest)`` int64, padded with 0."""
    out = torch.zeros(len(rows), max((len(r) for r in rows), default=0), dtype=torch.int64)
    for i, r in enumerate(rows):
        out[i, : len(r)] = torch.from_numpy(np.asarray(r, dtype=np.int64))
    return out
