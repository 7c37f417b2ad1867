"""Detection metrics: COCO mAP (torchmetrics + pycocotools) and the PASCAL VOC average precision.

Two families of numbers, both computed over the whole split:

* **COCO** (Lin et al. 2014, ``cocoapi/PythonAPI/pycocotools/cocoeval.py``): AP averaged over IoU
  thresholds 0.50:0.05:0.95 (``map``), at 0.50 (``map_50``) and 0.75 (``map_75``), 101-point
  interpolated, at most 100 detections per image. Computed by torchmetrics' ``MeanAveragePrecision``
  with the pycocotools backend.
* **VOC** (Everingham et al. 2010, the devkit's ``VOCevaldet.m`` and its Python port
  ``voc_eval.py``): AP@0.5 per class, VOC2007's 11-point interpolation (``voc07``) and the
  VOC2010+ all-point area under the monotone precision envelope (``voc``). Hand-written in
  :func:`voc_evaluate`, because the devkit's matching rules (strict ``>``, max-IoU ground truth
  taken even when already matched, "difficult" objects) are in no installed library.

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

from detector.boxes import box_iou
from detector.private_apis import KeepsPerClassShape

__all__ = ["DetectionMetrics", "all_point_ap", "eleven_point_ap", "voc_evaluate"]


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


def _check_images(
    detections: list[dict[str, Tensor]], ground_truths: list[dict[str, Tensor]], num_classes: int
) -> None:
    """Fail loudly on malformed per-image dicts, naming the image index and the field."""
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


def voc_evaluate(
    detections: list[dict[str, Tensor]],
    ground_truths: list[dict[str, Tensor]],
    num_classes: int,
    iou_threshold: float = 0.5,
) -> dict[str, Any]:
    """PASCAL VOC average precision per class, with the devkit's rules (``voc_eval.py``).

    Per class, detections of the whole split are sorted by score, descending (ties keep input order).
    Each is matched to the ground truth of that class in its image with the largest IoU; if that IoU
    is strictly greater than ``iou_threshold`` (``ovmax > ovthresh``) it is a TP when the object is
    not yet taken, an FP when it is (a duplicate), and ignored (neither) when the object is
    difficult. Otherwise it is an FP. Difficult objects do not count as positives.

    Args:
        detections: per image, ``boxes (N, 4)`` float xyxy, ``scores (N,)``, ``labels (N,)`` int64 in ``0..C-1``.
        ground_truths: per image, ``boxes (M, 4)`` float xyxy (same coordinates as the detections,
            pixels for VOC), ``labels (M,)`` int64 in ``0..C-1``, optional ``difficult (M,)`` bool
            (absent = none difficult).
        num_classes: ``C``.
        iou_threshold: the devkit's ``ovthresh``, 0.5 for VOC.

    Returns:
        ``{"voc07_ap": (C,) float64, "voc_ap": (C,) float64, "num_positives": (C,) int64,
        "voc07_map": float, "voc_map": float}``: 11-point and all-point AP per class (NaN for a
        class without non-difficult ground truth) and their means over the other classes (NaN if none).
    """
    _check_images(detections, ground_truths, num_classes)
    if not detections:
        raise ValueError("voc_evaluate needs at least one image")
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

    order = torch.sort(torch.cat(scores), descending=True, stable=True).indices  # (D,) the split in score order
    labels_s, ignored_s, claim_s = torch.cat(labels)[order], torch.cat(ignored)[order], torch.cat(claim)[order]
    # The devkit's sequential loop, loop-free: an object's first claimant in score order is the TP,
    # later claimants are duplicates (FP). Sorting by object with a stable sort keeps score order.
    by_object = torch.sort(claim_s, stable=True).indices  # (D,)
    first = torch.ones_like(ignored_s)  # (D,)
    first[by_object[1:]] = claim_s[by_object[1:]] != claim_s[by_object[:-1]]
    tp = (claim_s >= 0) & first  # (D,)

    gt_labels_all, gt_difficult_all = torch.cat(gt_labels), torch.cat(gt_difficult)  # (G,), (G,)
    num_positives = torch.bincount(gt_labels_all[~gt_difficult_all], minlength=num_classes)  # (C,)
    ap07 = torch.full((num_classes,), float("nan"), dtype=torch.float64)
    ap = ap07.clone()
    for c in range(num_classes):
        if num_positives[c] == 0:
            continue
        counted = (labels_s == c) & ~ignored_s  # (Dc,) ignored detections change neither TP nor FP
        tp_c = tp[counted].double().cumsum(0)  # (Dc,)
        fp_c = (~tp[counted]).double().cumsum(0)  # (Dc,)
        recall = tp_c / num_positives[c]
        precision = tp_c / (tp_c + fp_c)  # > 0 denominators: every counted detection is a TP or an FP
        ap07[c], ap[c] = eleven_point_ap(recall, precision), all_point_ap(recall, precision)
    return {
        "voc07_ap": ap07,
        "voc_ap": ap,
        "num_positives": num_positives,
        "voc07_map": ap07.nanmean().item(),
        "voc_map": ap.nanmean().item(),
    }


class DetectionMetrics(KeepsPerClassShape, Metric):
    """COCO mAP and VOC AP@0.5 over a whole split, per class too; states sync under DDP.

    Every image's detections and ground truth are kept as list states reduced by concatenation
    (``dist_reduce_fx="cat"``), with per-image counts to split them again; ranks are concatenated
    in the same order for every state, so after a DDP sync the metric sees the whole split and
    :meth:`compute` gives the same numbers as one process would (up to image order).

    ``update(preds, targets)``: ``preds`` per image ``boxes (N, 4)`` float xyxy, ``scores (N,)``,
    ``labels (N,)`` int64 in ``0..C-1``; ``targets`` per image ``boxes (M, 4)`` float xyxy,
    ``labels (M,)`` int64, optional ``difficult (M,)`` bool. Pixels of the original image give
    VOC-comparable numbers and meaningful COCO area ranges; ``[0, 1]`` boxes give the same
    ``map``, ``map_50``, ``map_75`` and ``voc*`` values (IoU is scale-free), but every object is "small".

    ``compute()`` returns 0-d float tensors ``map``, ``map_50``, ``map_75``, ``map_small``,
    ``map_medium``, ``map_large``, ``mar_100`` (COCO, difficult objects passed as ``iscrowd``),
    ``voc07_map_50``, ``voc_map_50`` (:func:`voc_evaluate` at IoU > 0.5), and ``per_class``: a dict
    of ``(C,)`` tensors indexed by class ``map``, ``map_50``, ``map_75``, ``voc07_map_50``,
    ``voc_map_50`` (NaN for classes without non-difficult ground truth) and ``num_positives`` (int64).

    ``**kwargs`` go to ``torchmetrics.Metric`` (e.g. ``dist_sync_fn``, ``process_group``).
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False  # update() only appends, so merge_state and DDP sync are plain concatenation

    _STATES = (
        "det_boxes", "det_scores", "det_labels", "det_counts", "gt_boxes", "gt_labels", "gt_difficult", "gt_counts"
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
        _check_images(preds, targets, self.num_classes)
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

    def _per_image(self) -> tuple[list[dict[str, Tensor]], list[dict[str, Tensor]]]:
        """The states (lists, or tensors after a DDP sync) split back into per-image dicts, on the CPU."""
        if isinstance(self.det_counts, list) and not self.det_counts:
            raise RuntimeError("DetectionMetrics.compute() called before any update(): no images to evaluate")
        s = {name: dim_zero_cat(getattr(self, name)).cpu() for name in self._STATES}
        # .long()/.bool(): torchmetrics fills a rank without data with a float placeholder, which cat promotes.
        det_counts, gt_counts = s["det_counts"].long().tolist(), s["gt_counts"].long().tolist()
        boxes, scores, labels = (s[k].split(det_counts) for k in ("det_boxes", "det_scores", "det_labels"))
        gt_boxes, gt_labels, gt_difficult = (s[k].split(gt_counts) for k in ("gt_boxes", "gt_labels", "gt_difficult"))
        preds = [
            {"boxes": b.reshape(-1, 4), "scores": sc, "labels": lb.long()} for b, sc, lb in zip(boxes, scores, labels)
        ]
        targets = [
            {"boxes": b.reshape(-1, 4), "labels": lb.long(), "difficult": d.bool()}
            for b, lb, d in zip(gt_boxes, gt_labels, gt_difficult)
        ]
        return preds, targets

    def compute(self) -> dict[str, Any]:
        """COCO and VOC numbers over every image seen (all processes); keys in the class docstring."""
        preds, targets = self._per_image()
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
