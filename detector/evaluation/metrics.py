"""Detection metrics: COCO mAP (torchmetrics + pycocotools) and the PASCAL VOC average precision.

Two families of numbers, both computed over the whole split:

* **COCO** (Lin et al. 2014, ``cocoapi/PythonAPI/pycocotools/cocoeval.py``): AP averaged over IoU
  thresholds 0.50:0.05:0.95 (``map``), at 0.50 (``map_50``) and 0.75 (``map_75``), 101-point
  interpolated, at most 100 detections per image. Computed by torchmetrics' ``MeanAveragePrecision``
  with the pycocotools backend.
* **VOC** (Everingham et al. 2010, the devkit's ``VOCevaldet.m`` and its Python port
  ``voc_eval.py``): AP@0.5 per class, VOC2007's 11-point interpolation (``voc07``) and the
  VOC2010+ all-point area under the monotone precision envelope (``voc``), by the devkit's rules
  (:mod:`detector.evaluation.voc_ap`).

Coordinates. Boxes are float xyxy, in pixels of the original image for numbers comparable with
published VOC results. The devkit measures widths as ``x2 - x1 + 1`` on 1-based inclusive XML
pixel indices; our JSON boxes already store ``x = xmin - 1, w = xmax - xmin + 1``, so the
continuous IoU of our xyxy boxes equals the devkit's, and no ``+ 1`` appears here. Boxes in
``[0, 1]`` give the same VOC numbers and the same COCO ``map``/``map_50``/``map_75`` (IoU is
scale-free), but COCO's small/medium/large ranges (32^2 and 96^2 pixels^2) only mean something in
pixels.

VOC "difficult" -> COCO ``iscrowd``. Both make an object optional: not counted in the number of
positives, and a detection on it is neither a TP nor an FP, however many such detections there
are (a crowd region absorbs several, and so does a difficult object in the devkit, which never
marks one as taken). What differs: COCO matches a detection to a crowd region only when no
ordinary object is left for it above the threshold (VOC takes the max-IoU object even when it is
difficult, and ignores the detection), and COCO's overlap with a crowd region is intersection over
the *detection's* area, so a small box inside a big region overlaps it fully. Acceptable because
the difference only decides, where an ordinary and a difficult object overlap, whether a
detection is ignored or scored; the COCO numbers are COCO's rules applied to VOC's labels (as
every COCO-style VOC evaluation does), and the VOC numbers here follow the devkit exactly.
COCO also differs from VOC in general: IoU ``>=`` the threshold, and a detection whose best object
is taken falls back to the next best free one.

Undefined values are NaN: a class with no non-difficult ground truth in the split has no AP
(torchmetrics/pycocotools report -1, converted here) and is left out of every mean.
"""

from __future__ import annotations

from typing import Any

import torch
from pycocotools.cocoeval import Params
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.detection import MeanAveragePrecision
from torchmetrics.utilities.data import dim_zero_cat

from detector.evaluation.voc_ap import check_images, voc_evaluate

__all__ = ["DetectionMetrics", "FITNESS_MAP_50", "fitness", "per_class"]

FITNESS_MAP_50 = 0.1
"""Weight of mAP@0.5 in :func:`fitness` (the rest on COCO mAP), ultralytics' ``fitness()`` weights."""


def fitness(map_50: Any, coco_map: Any) -> Any:
    """ultralytics' ``fitness``: 0.1 mAP@0.5 + 0.9 COCO mAP (floats or tensors), what the imported
    configs' ``best.ckpt`` keeps the best of: mAP@0.5 alone saturates early on a small val split
    and keeps loose boxes (docs/experiments.md)."""
    return FITNESS_MAP_50 * map_50 + (1 - FITNESS_MAP_50) * coco_map


def per_class(result: dict[str, Any]) -> dict[str, Tensor]:
    """:meth:`DetectionMetrics.compute`'s ``per_class`` dict with every value ``(C,)``: torchmetrics
    squeezes each one-element tensor that ``compute()`` returns to 0-d, so with one class the
    per-class values come back 0-d (read them through this, never ``result["per_class"]``)."""
    return {k: torch.atleast_1d(v) for k, v in result["per_class"].items()}


class DetectionMetrics(Metric):
    """COCO mAP and VOC AP@0.5 over a whole split, per class too; states sync under DDP.

    Every image's detections and ground truth are kept as list states reduced by concatenation
    (``dist_reduce_fx="cat"``), with per-image counts to split them again; ranks are concatenated
    in the same order for every state, so after a DDP sync the metric sees the whole split and
    :meth:`compute` gives the same numbers as one process would (up to image order).

    ``update(preds, targets)``: ``preds`` per image ``boxes (N, 4)`` float xyxy, ``scores (N,)``,
    ``labels (N,)`` int64 in ``0..C-1``; ``targets`` per image ``boxes (M, 4)`` float xyxy,
    ``labels (M,)`` int64, optional ``difficult (M,)`` bool and ``image_id`` (an int or a 0-d
    tensor, kept for :meth:`per_image`, -1 when absent; no number depends on it). Pixels of the original image give
    VOC-comparable numbers and meaningful COCO area ranges; ``[0, 1]`` boxes give the same
    ``map``, ``map_50``, ``map_75`` and ``voc*`` values (IoU is scale-free), but every object is "small".

    ``compute()`` returns 0-d float tensors ``map``, ``map_50``, ``map_75``, ``map_small``,
    ``map_medium``, ``map_large``, ``mar_100`` (COCO, difficult objects passed as ``iscrowd``),
    ``voc07_map_50``, ``voc_map_50`` (:func:`voc_evaluate` at IoU > 0.5), and ``per_class``: a dict
    of tensors indexed by class ``map``, ``map_50``, ``map_75``, ``voc07_map_50``, ``voc_map_50``
    (NaN for classes without non-difficult ground truth) and ``num_positives`` (int64), each ``(C,)``
    as :func:`per_class` returns them (torchmetrics leaves them 0-d when ``C = 1``).

    ``**kwargs`` go to ``torchmetrics.Metric`` (e.g. ``dist_sync_fn``, ``process_group``).
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False  # update() only appends, so merge_state and DDP sync are plain concatenation

    _STATES = (
        "det_boxes", "det_scores", "det_labels", "det_counts", "gt_boxes", "gt_labels", "gt_difficult", "gt_counts",
        "image_ids",
    )

    def __init__(self, num_classes: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.num_classes = num_classes
        for name in self._STATES:
            self.add_state(name, default=[], dist_reduce_fx="cat")

    def update(self, preds: list[dict[str, Tensor]], targets: list[dict[str, Tensor]]) -> None:
        """Append one batch: ``preds``/``targets`` as in the class docstring, one dict per image."""
        check_images(preds, targets, self.num_classes)
        if not preds:
            return
        self.det_boxes.append(torch.cat([p["boxes"].float() for p in preds]))  # (sum N, 4)
        self.det_scores.append(torch.cat([p["scores"].float() for p in preds]))
        self.det_labels.append(torch.cat([p["labels"].long() for p in preds]))
        self.det_counts.append(torch.tensor([len(p["labels"]) for p in preds], device=self.device))  # (B,)
        self.gt_boxes.append(torch.cat([t["boxes"].float() for t in targets]))  # (sum M, 4)
        self.gt_labels.append(torch.cat([t["labels"].long() for t in targets]))
        # int64 rather than bool: all_gather support for bool varies by backend.
        self.gt_difficult.append(torch.cat([t.get("difficult", torch.zeros_like(t["labels"])).long() for t in targets]))
        self.gt_counts.append(torch.tensor([len(t["labels"]) for t in targets], device=self.device))  # (B,)
        ids = [torch.as_tensor(t.get("image_id", -1), device=self.device).long().reshape(()) for t in targets]
        self.image_ids.append(torch.stack(ids))  # (B,) without a device sync per image

    def per_image(self) -> tuple[list[dict[str, Tensor]], list[dict[str, Tensor]]]:
        """Every image seen, as ``(detections, ground_truths)`` per-image dicts on the CPU, in the
        format of :meth:`update` (``difficult`` and ``image_id``, 0-d int64, always present): what
        :func:`voc_evaluate` and the curves of :mod:`detector.evaluation.curves` take. Under DDP, this process's images, or every rank's inside
        ``with metric.sync_context():`` (as inside :meth:`compute`)."""
        if isinstance(self.det_counts, list) and not self.det_counts:
            raise RuntimeError("DetectionMetrics has no images to evaluate: called before any update()")
        s = {name: dim_zero_cat(getattr(self, name)).cpu() for name in self._STATES}
        # .long()/.bool(): torchmetrics fills a rank without data with a float placeholder, which cat promotes.
        det_counts, gt_counts = s["det_counts"].long().tolist(), s["gt_counts"].long().tolist()
        boxes, scores, labels = (s[k].split(det_counts) for k in ("det_boxes", "det_scores", "det_labels"))
        gt_boxes, gt_labels, gt_difficult = (s[k].split(gt_counts) for k in ("gt_boxes", "gt_labels", "gt_difficult"))
        preds = [
            {"boxes": b.reshape(-1, 4), "scores": sc, "labels": lb.long()} for b, sc, lb in zip(boxes, scores, labels)
        ]
        image_ids = s["image_ids"].long()  # (total,)
        targets = [
            {"boxes": b.reshape(-1, 4), "labels": lb.long(), "difficult": d.bool(), "image_id": i.clone()}
            for b, lb, d, i in zip(gt_boxes, gt_labels, gt_difficult, image_ids)
        ]
        return preds, targets

    def compute(self) -> dict[str, Any]:
        """COCO and VOC numbers over every image seen (all processes); keys in the class docstring."""
        preds, targets = self.per_image()
        C = self.num_classes
        # Fresh, unsynced: our own states are already gathered, syncing again would duplicate them.
        # COCO's own float64 thresholds: torchmetrics' defaults come from float32 torch.linspace
        # (0.550000011920929, 0.29999998...), which moves matches and recall points off pycocotools'.
        coco_params = Params(iouType="bbox")
        coco = MeanAveragePrecision(
            box_format="xyxy",
            iou_type="bbox",
            iou_thresholds=coco_params.iouThrs.tolist(),
            rec_thresholds=coco_params.recThrs.tolist(),
            extended_summary=True,
            backend="pycocotools",
            sync_on_compute=False,
        )
        crowds = [{"boxes": t["boxes"], "labels": t["labels"], "iscrowd": t["difficult"].long()} for t in targets]
        coco.update(preds, crowds)
        result = coco.compute()
        nan = float("nan")
        coco_keys = ("map", "map_50", "map_75", "map_small", "map_medium", "map_large", "mar_100")
        out: dict[str, Any] = {k: torch.where(result[k] < 0, nan, result[k]) for k in coco_keys}  # -1 = undefined

        # Per class from COCOeval's precision array (T IoUs, R recalls, K classes seen, A areas, M maxDets),
        # averaged as COCOeval.summarize() does: over valid (> -1) entries, area "all", maxDets 100.
        # One evaluation for all classes; class_metrics=True would add one per class (and lacks AP@0.5).
        precision = result["precision"][..., 0, -1].double()  # (T, R, K)
        thresholds = torch.tensor(coco.iou_thresholds)  # (T,) 0.50, 0.55, ..., 0.95
        seen = result["classes"].long().reshape(-1)  # (K,) class index of each k
        per_class = {}
        at = {  # IoU index or indices per key
            "map": slice(None), "map_50": (thresholds - 0.5).abs().argmin(), "map_75": (thresholds - 0.75).abs().argmin()
        }
        for key, t in at.items():
            p = precision[t].reshape(-1, len(seen))  # (T' * R, K)
            valid = p > -1  # (T' * R, K) False only for classes without ground truth
            per_class[key] = torch.full((C,), nan)
            per_class[key][seen] = ((p * valid).sum(0) / valid.sum(0)).float()  # 0 / 0 = NaN: no ground truth

        voc = voc_evaluate(preds, targets, C, iou_threshold=0.5)
        out["voc07_map_50"] = torch.tensor(voc["voc07_map"])
        out["voc_map_50"] = torch.tensor(voc["voc_map"])
        per_class["voc07_map_50"] = voc["voc07_ap"].float()
        per_class["voc_map_50"] = voc["voc_ap"].float()
        per_class["num_positives"] = voc["num_positives"]
        out["per_class"] = per_class
        return out
