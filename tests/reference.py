"""The oracle: the lesson's SSD loss and NMS, one image at a time, written out loop by loop.

A plain port, from the lesson's semantics, of ``actn_to_bb``, ``map_to_ground_truth`` (with its
Python loop over objects), ``ssd_1_loss``, ``ssd_loss`` and the per-class greedy NMS of
``show_nmf``. Coordinates are (x, y) ordered (the lesson's were (y, x)). Padding is removed as the
lesson's ``get_y`` did, but by our ``-1`` label sentinel. It exists only for the tests and the
benches: the batched code in ``detector`` must agree with it. Nothing here calls ``torchvision``.

Beyond the lesson, written the same plain way from the papers: ATSS's matching (``atss_match_one``,
loops over objects and grids, as mmdetection's ``ATSSAssigner`` reads), the GIoU / DIoU / CIoU
losses (``iou_loss``), and the IoU-aware class losses (``quality_bce_loss``: GFL's quality focal
loss and VarifocalNet's varifocal loss, on the dense soft-target matrix).

Where the lesson is undefined, this file states the project's choice: an image without objects
has ``loc = 0`` (the lesson's mean over zero positives is NaN) and all-background class targets.
Every tensor made here is on its inputs' device, so the loops run on a GPU too (``bench/gpu.py``).
"""

from __future__ import annotations

import math

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


def level_ranges(anchors: Anchors) -> list[tuple[int, int]]:
    """``[(start, end), ...]``: the anchors of each grid, the runs of equal cell size."""
    cells = anchors.cell_size.view(-1).tolist()
    ranges, start = [], 0
    for a in range(1, len(cells) + 1):
        if a == len(cells) or cells[a] != cells[a - 1]:
            ranges.append((start, a))
            start = a
    return ranges


def atss_match_one(anchors: Anchors, boxes: Tensor, labels: Tensor, topk: int = 9):
    """ATSS for one image's ``(boxes (n, 4), labels (n,))`` real objects, object by object and grid by
    grid -> ``(pos (A,), gt_idx (A,), gt_overlap (A,))``: per grid the ``topk`` anchors nearest the
    object's centre (a stable sort: ties to the lower anchor), threshold mean + std of their IoU,
    centres strictly inside; a shared anchor to the object it overlaps most (ties: the lower
    index); an object left without a positive gets the background anchor it overlaps most, if any
    (the later object wins one two of them want)."""
    A = len(anchors)
    if len(labels) == 0:
        zeros = boxes.new_zeros(A)
        return zeros.bool(), zeros.long(), zeros
    overlaps = jaccard(boxes, anchors.xyxy.to(boxes))  # (n, A)
    centres = anchors.cxcywh[:, :2].to(boxes)  # (A, 2)
    chosen = torch.zeros(len(boxes), A, dtype=torch.bool, device=boxes.device)
    for i, box in enumerate(boxes):
        dx = (box[0] + box[2]) / 2 - centres[:, 0]
        dy = (box[1] + box[3]) / 2 - centres[:, 1]
        distance = dx * dx + dy * dy  # squared, as the batched code: the same order
        candidates = []
        for start, end in level_ranges(anchors):
            order = torch.sort(distance[start:end], stable=True).indices[:topk]
            candidates += (order + start).tolist()
        ious = overlaps[i, candidates]
        threshold = ious.mean() + (ious.std() if len(candidates) > 1 else 0.0)
        for a in candidates:
            x, y = centres[a].tolist()
            inside = box[0] < x < box[2] and box[1] < y < box[3]
            if overlaps[i, a] >= threshold and inside:
                chosen[i, a] = True
    gt_overlap, gt_idx = overlaps.max(0)  # background anchors: their best object
    gt_overlap, gt_idx = gt_overlap.clone(), gt_idx.clone()
    pos = chosen.any(0)
    for a in pos.nonzero().flatten().tolist():
        best = None
        for i in range(len(boxes)):
            if chosen[i, a] and (best is None or overlaps[i, a] > overlaps[best, a]):
                best = i
        gt_idx[a], gt_overlap[a] = best, overlaps[best, a]
    owners = set(gt_idx[pos].tolist())
    taken = pos.clone()
    for i in range(len(boxes)):
        if i not in owners:  # no positive: the background anchor it overlaps most, forced as the lesson forces
            free = overlaps[i].masked_fill(taken, -1.0)
            o = int(free.argmax())
            if free[o] > 0:
                gt_idx[o], gt_overlap[o], pos[o] = i, FORCED_OVERLAP, True
    return pos, gt_idx, gt_overlap


def iou_loss(pred: Tensor, target: Tensor, kind: str, eps: float = 1e-7) -> Tensor:
    """``(P, 4)``, ``(P, 4)`` xyxy -> ``(P,)``: ``1 - GIoU`` (Rezatofighi et al. 2019), or ``1 - DIoU`` /
    ``1 - CIoU`` (Zheng et al. 2020; CIoU's trade-off alpha a constant, not differentiated), written
    out from the papers, with torchvision's ``eps`` placement."""
    px1, py1, px2, py2 = pred.unbind(1)
    tx1, ty1, tx2, ty2 = target.unbind(1)
    inter = (torch.min(px2, tx2) - torch.max(px1, tx1)).clamp(min=0) * (torch.min(py2, ty2) - torch.max(py1, ty1)).clamp(min=0)
    union = (px2 - px1) * (py2 - py1) + (tx2 - tx1) * (ty2 - ty1) - inter
    iou = inter / (union + eps)
    cw, ch = torch.max(px2, tx2) - torch.min(px1, tx1), torch.max(py2, ty2) - torch.min(py1, ty1)  # enclosing box
    if kind == "giou":
        return 1 - iou + (cw * ch - union) / (cw * ch + eps)
    centre_distance = ((px1 + px2) / 2 - (tx1 + tx2) / 2) ** 2 + ((py1 + py2) / 2 - (ty1 + ty2) / 2) ** 2
    diou = 1 - iou + centre_distance / (cw**2 + ch**2 + eps)
    if kind == "diou":
        return diou
    v = 4 / math.pi**2 * (torch.atan((tx2 - tx1) / (ty2 - ty1)) - torch.atan((px2 - px1) / (py2 - py1))) ** 2
    alpha = (v / (1 - iou + v + eps)).detach()
    return diou + alpha * v


def quality_bce_loss(logits: Tensor, gt_clas: Tensor, quality: Tensor, num_classes: int, kind: str) -> Tensor:
    """The IoU-aware class loss of one image: ``(A, C)`` logits, ``(A,)`` class with C = background,
    ``(A,)`` the IoU target of each anchor's class (read at positives only). The dense soft target
    ``t``; ``"qfl"``: ``BCE(x, t) |t - p|^2`` everywhere (GFL, beta 2); ``"varifocal"``: ``t BCE(x, t)``
    where ``t > 0``, ``0.75 p^2 BCE(x, 0)`` elsewhere (VarifocalNet). Summed, divided by C."""
    eye = torch.eye(num_classes + 1, dtype=logits.dtype, device=logits.device)
    t = eye[gt_clas][:, :-1] * quality[:, None]  # (A, C) the soft target, 0 for background
    bce = F.binary_cross_entropy_with_logits(logits, t, reduction="none")
    p = logits.sigmoid()
    if kind == "qfl":
        weight = (t - p).abs() ** 2
    else:
        weight = torch.where(t > 0, t, 0.75 * p**2)
    return (bce * weight).sum() / num_classes


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
    box: str = "coder",
    quality: str = "none",
    matching: str = "fixed",
    atss_topk: int = 9,
    decode=actn_to_bb,
) -> tuple[Tensor, Tensor, bool]:
    """One image: ``(A, C)``, ``(A, 4)``, ``(M, 4)``, ``(M,)`` -> ``(loc, cls, has_positives)``.

    The lesson's: ``box = "coder"`` (its L1 on the boxes ``decode`` gives; it is the lesson's loss for
    ``actn_to_bb``), ``quality = "none"``, ``matching = "fixed"``. Beyond it: ``box`` ``"giou"`` /
    ``"diou"`` / ``"ciou"`` (:func:`iou_loss`, mean over positives), ``quality`` ``"qfl"`` /
    ``"varifocal"`` (:func:`quality_bce_loss`, the IoU of each positive's decoded box, detached),
    ``matching = "atss"`` (:func:`atss_match_one`)."""
    num_classes = cls_logits.shape[1]
    boxes, labels = get_y(boxes, labels)
    a_ic = decode(box_deltas, anchors)
    if matching == "atss":
        pos, gt_idx, _ = atss_match_one(anchors, boxes, labels, atss_topk)
    else:
        pos, gt_idx, _ = match_one(anchors, boxes, labels, threshold)
    if len(labels):
        gt_clas = labels[gt_idx].clone()
        gt_bbox = boxes[gt_idx]
    else:
        gt_clas = labels.new_zeros(len(anchors))
        gt_bbox = box_deltas.new_zeros(len(anchors), 4)
    gt_clas[~pos] = num_classes
    has_positives = bool(pos.any())
    if not has_positives:
        loc = box_deltas.sum() * 0
    elif box == "coder":
        loc = (a_ic[pos] - gt_bbox[pos]).abs().mean()
    else:
        loc = iou_loss(a_ic[pos], gt_bbox[pos], box).mean()
    if quality == "none":
        cls = bce_loss(cls_logits, gt_clas, num_classes, focal, alpha, gamma)
    else:
        ious = jaccard(a_ic.detach()[pos], gt_bbox[pos]).diagonal() if has_positives else box_deltas.new_zeros(0)
        target = box_deltas.new_zeros(len(anchors))
        target[pos] = ious.to(target.dtype)
        cls = quality_bce_loss(cls_logits, gt_clas, target, num_classes, quality)
    return loc, cls, has_positives


def ssd_loss(
    cls_logits: Tensor,
    box_deltas: Tensor,
    boxes: Tensor,
    labels: Tensor,
    anchors: Anchors,
    reduction: str = "lesson_sum",
    loc_weight: float = 1.0,
    **kwargs,
) -> dict[str, Tensor]:
    """The lesson's ``ssd_loss`` (``"lesson_sum"``: sum over images) or ``"mean"`` (see ``detector.core.loss``);
    ``kwargs`` go to :func:`ssd_1_loss`."""
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
    return {"loc": loc_total, "cls": cls_total, "loss": loc_weight * loc_total + cls_total}


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
