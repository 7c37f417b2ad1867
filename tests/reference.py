"""The oracle: the lesson's SSD loss and NMS, one image at a time, written out loop by loop.

A plain port, from the lesson's semantics, of ``actn_to_bb``, ``map_to_ground_truth`` (with its
Python loop over objects), ``ssd_1_loss``, ``ssd_loss`` and the per-class greedy NMS of
``show_nmf``. Coordinates are (x, y) ordered (the lesson's were (y, x)). Padding is removed as the
lesson's ``get_y`` did, but by our ``-1`` label sentinel. It exists only for the tests and the
benches: the batched code in ``detector`` must agree with it. Nothing here calls ``torchvision``.

Where the lesson is undefined, this file states the project's choice: an image without objects
has ``loc = 0`` (the lesson's mean over zero positives is NaN) and all-background class targets.
Every tensor made here is on its inputs' device, so the loops run on a GPU too (``bench/gpu.py``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from detector.core.anchors import Anchors

FORCED_OVERLAP = 1.99


def get_y(boxes: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """``(M, 4)``, ``(M,)`` padded -> ``(n, 4)``, ``(n,)`` real objects only (label != -1)."""
    keep = labels >= 0
    return boxes[keep], labels[keep]


def actn_to_bb(actn: Tensor, anchors: Anchors) -> Tensor:
    """``(A, 4)`` activations -> ``(A, 4)`` xyxy: tanh, move <= half a cell, scale 0.5x-1.5x."""
    t = torch.tanh(actn)
    centres = t[:, :2] / 2 * anchors.cell_size + anchors.cxcywh[:, :2]
    sizes = (t[:, 2:] / 2 + 1) * anchors.cxcywh[:, 2:]
    return torch.cat([centres - sizes / 2, centres + sizes / 2], dim=1)


def jaccard(a: Tensor, b: Tensor) -> Tensor:
    """``(n, 4)`` x ``(A, 4)`` xyxy -> ``(n, A)`` IoU, the lesson's intersect / union."""
    top_left = torch.max(a[:, None, :2], b[None, :, :2])
    bottom_right = torch.min(a[:, None, 2:], b[None, :, 2:])
    wh = (bottom_right - top_left).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return inter / (area_a[:, None] + area_b[None, :] - inter)


def map_to_ground_truth(overlaps: Tensor) -> tuple[Tensor, Tensor]:
    """``(n, A)`` IoU -> ``(A,)`` overlap, ``(A,)`` object index, with the lesson's forcing loop."""
    _, prior_idx = overlaps.max(1)  # each object's best anchor
    gt_overlap, gt_idx = overlaps.max(0)  # each anchor's best object
    gt_overlap = gt_overlap.clone()
    gt_idx = gt_idx.clone()
    for i, o in enumerate(prior_idx.tolist()):
        gt_overlap[o] = FORCED_OVERLAP
        gt_idx[o] = i  # a later object overwrites an earlier one on a shared anchor
    return gt_overlap, gt_idx


def match_one(anchors: Anchors, boxes: Tensor, labels: Tensor, threshold: float = 0.4):
    """One image's ``(boxes (n, 4), labels (n,))`` real objects -> ``(pos (A,), gt_idx (A,), gt_overlap (A,))``."""
    A = len(anchors)
    if len(labels) == 0:
        zeros = boxes.new_zeros(A)
        return zeros.bool(), zeros.long(), zeros
    overlaps = jaccard(boxes, anchors.xyxy.to(boxes))
    gt_overlap, gt_idx = map_to_ground_truth(overlaps)
    return gt_overlap > threshold, gt_idx, gt_overlap


def bce_loss(logits: Tensor, gt_clas: Tensor, num_classes: int, focal: bool, alpha: float, gamma: float) -> Tensor:
    """The lesson's ``BCE_Loss`` / ``FocalLoss``: ``(A, C)`` logits, ``(A,)`` class with C = background."""
    eye = torch.eye(num_classes + 1, dtype=logits.dtype, device=logits.device)
    t = eye[gt_clas][:, :-1]  # drop the background column
    bce = F.binary_cross_entropy_with_logits(logits, t, reduction="none")
    if focal:  # the lesson's get_weight, left in the graph: PyTorch 0.3 multiplied it in, differentiably
        p = logits.sigmoid()
        pt = p * t + (1 - p) * (1 - t)
        bce = bce * (alpha * t + (1 - alpha) * (1 - t)) * (1 - pt).pow(gamma)
    return bce.sum() / num_classes


def ssd_1_loss(
    cls_logits: Tensor,
    box_deltas: Tensor,
    boxes: Tensor,
    labels: Tensor,
    anchors: Anchors,
    threshold: float = 0.4,
    focal: bool = True,
    alpha: float = 0.25,
    gamma: float = 2.0,
) -> tuple[Tensor, Tensor, bool]:
    """One image: ``(A, C)``, ``(A, 4)``, ``(M, 4)``, ``(M,)`` -> ``(loc, cls, has_positives)``."""
    num_classes = cls_logits.shape[1]
    boxes, labels = get_y(boxes, labels)
    a_ic = actn_to_bb(box_deltas, anchors)
    pos, gt_idx, _ = match_one(anchors, boxes, labels, threshold)
    if len(labels):
        gt_clas = labels[gt_idx].clone()
        gt_bbox = boxes[gt_idx]
    else:
        gt_clas = labels.new_zeros(len(anchors))
        gt_bbox = box_deltas.new_zeros(len(anchors), 4)
    gt_clas[~pos] = num_classes
    has_positives = bool(pos.any())
    loc = (a_ic[pos] - gt_bbox[pos]).abs().mean() if has_positives else box_deltas.sum() * 0
    cls = bce_loss(cls_logits, gt_clas, num_classes, focal, alpha, gamma)
    return loc, cls, has_positives


def ssd_loss(
    cls_logits: Tensor,
    box_deltas: Tensor,
    boxes: Tensor,
    labels: Tensor,
    anchors: Anchors,
    reduction: str = "lesson_sum",
    **kwargs,
) -> dict[str, Tensor]:
    """The lesson's ``ssd_loss`` (``"lesson_sum"``: sum over images) or ``"mean"`` (see ``detector.core.loss``)."""
    locs, clss, has = [], [], []
    for b in range(len(cls_logits)):
        loc, cls, has_positives = ssd_1_loss(cls_logits[b], box_deltas[b], boxes[b], labels[b], anchors, **kwargs)
        locs.append(loc)
        clss.append(cls)
        has.append(has_positives)
    if reduction == "lesson_sum":
        loc_total, cls_total = sum(locs), sum(clss)
    else:
        with_pos = [loc for loc, h in zip(locs, has) if h]
        loc_total = sum(with_pos) / len(with_pos) if with_pos else sum(locs)
        cls_total = sum(clss) / len(clss)
    return {"loc": loc_total, "cls": cls_total, "loss": loc_total + cls_total}


def nms(boxes: Tensor, scores: Tensor, overlap: float = 0.4, top_k: int = 50) -> list[int]:
    """Greedy NMS of ssd.pytorch as the lesson used it: keep the ``top_k`` best, then suppress IoU > overlap."""
    order = scores.argsort(descending=True)[:top_k]
    keep = []
    while len(order):
        best, rest = order[0], order[1:]
        keep.append(int(best))
        iou = jaccard(boxes[best][None], boxes[rest])[0]  # the kept box against every remaining one
        order = rest[iou <= overlap]
    return keep


def postprocess(
    cls_logits: Tensor,
    box_deltas: Tensor,
    anchors: Anchors,
    score_threshold: float = 0.01,
    iou_threshold: float = 0.4,
    topk_per_class: int = 50,
    max_per_image: int = 100,
) -> list[dict[str, Tensor]]:
    """Per image, per class: threshold, top-k, NMS; then the image's best ``max_per_image``."""
    out = []
    for b in range(len(cls_logits)):
        boxes = actn_to_bb(box_deltas[b], anchors).clamp(0, 1)
        conf_scores = cls_logits[b].sigmoid().t()  # (C, A)
        det_boxes, det_scores, det_labels = [], [], []
        for cl in range(len(conf_scores)):
            mask = conf_scores[cl] > score_threshold
            if not mask.any():
                continue
            scores, cand = conf_scores[cl][mask], boxes[mask]
            ids = nms(cand, scores, iou_threshold, topk_per_class)
            det_boxes.append(cand[ids])
            det_scores.append(scores[ids])
            det_labels.append(torch.full((len(ids),), cl, dtype=torch.long, device=cand.device))
        if det_scores:
            boxes_b, scores_b, labels_b = torch.cat(det_boxes), torch.cat(det_scores), torch.cat(det_labels)
        else:
            no_labels = torch.zeros(0, dtype=torch.long, device=boxes.device)
            boxes_b, scores_b, labels_b = boxes[:0], conf_scores[0, :0], no_labels
        order = scores_b.argsort(descending=True)[:max_per_image]
        out.append({"boxes": boxes_b[order], "scores": scores_b[order], "labels": labels_b[order]})
    return out


def random_targets(
    counts: list[int], num_classes: int, generator: torch.Generator, dtype: torch.dtype = torch.float32
) -> tuple[Tensor, Tensor]:
    """A padded batch with ``counts[b]`` objects in image ``b``: ``boxes (B, M, 4)``, ``labels (B, M)``.

    Real boxes have centres in ``[0.05, 0.95]`` and sides in ``[0.03, 0.8]``, clipped to the unit
    square. Padding rows get random boxes too (not zeros), so only the ``-1`` label marks them.
    """
    B, M = len(counts), max(counts, default=0)
    centre = 0.05 + 0.9 * torch.rand(B, M, 2, generator=generator, dtype=torch.float64)
    size = 0.03 + 0.77 * torch.rand(B, M, 2, generator=generator, dtype=torch.float64)
    boxes = torch.cat([centre - size / 2, centre + size / 2], dim=-1).clamp(0, 1).to(dtype)
    labels = torch.randint(0, num_classes, (B, M), generator=generator)
    labels[torch.arange(M)[None, :] >= torch.tensor(counts)[:, None]] = -1
    return boxes, labels
