"""Raw activations -> detections: decode, sigmoid, per-class score threshold, top-k, NMS.

The lesson (``show_nmf``) did this per image and per class with a copied NMS loop (ssd.pytorch's
``nms(boxes, scores, overlap, top_k)``); here the whole batch goes through one
vectorised greedy NMS over every (image, class) group at once, with the same semantics:

* scores are the sigmoid of each class logit (no background column: low on every class = background);
* a (anchor, class) pair is a candidate when its score is strictly above ``score_threshold`` (the
  lesson's ``conf_scores[cl] > 0.25`` for pictures; ~0.01 for evaluation, as mAP rewards recall);
* top-k per class is applied BEFORE suppression, as ssd.pytorch's ``nms`` did (it kept the
  ``top_k`` highest-scoring candidates, then suppressed among them): per image and class, only the
  ``topk_per_class`` best candidates enter NMS (this also bounds NMS's cost);
* NMS per image and class suppresses a box whose IoU with a higher-scoring kept box is ``>
  iou_threshold`` (lesson: 0.4);
* then at most ``max_per_image`` detections per image, the highest scores.

Boxes are clipped to the unit square before NMS (torchvision's detection post-processing does the
same; the lesson did not clip, but a box part outside the picture is not part of the detection).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from detector.core.anchors import Anchors
from detector.core.box_coder import BoxCoder, make_box_coder
from detector.core.boxes import clip_boxes
from detector.defaults import EVAL_SCORE, NMS_IOU, PICTURE_SCORE

__all__ = ["PostprocessConfig", "flip_merge", "postprocess", "to_pixels"]


@dataclass
class PostprocessConfig:
    """Decoding + NMS. ``score_threshold`` is for evaluation (low: mAP rewards recall);
    ``picture_score_threshold`` is the lesson's threshold for drawing (about 0.25).

    ``flip_tta``: test-time augmentation in evaluation and prediction (not in training): the network
    also sees each image flipped left-right, and each anchor's two predictions (its own, and its
    mirror anchor's on the flipped image, with the x offset negated) are averaged before decoding
    and NMS. Twice the network's cost; ultralytics' ``augment`` and mmdetection's TTA do the same
    with more views, merging boxes after decoding instead."""

    score_threshold: float = EVAL_SCORE
    picture_score_threshold: float = PICTURE_SCORE
    iou_threshold: float = NMS_IOU
    topk_per_class: int = 50
    max_per_image: int = 100
    flip_tta: bool = False


def postprocess(
    cls_logits: Tensor,
    box_deltas: Tensor,
    anchors: Anchors,
    coder: str | BoxCoder = "tanh",
    score_threshold: float = PostprocessConfig.score_threshold,
    iou_threshold: float = PostprocessConfig.iou_threshold,
    topk_per_class: int = PostprocessConfig.topk_per_class,
    max_per_image: int = PostprocessConfig.max_per_image,
) -> list[dict[str, Tensor]]:
    """Detections for every image of a batch (semantics in the module docstring).

    Args:
        cls_logits: ``(B, A, C)`` raw class activations.
        box_deltas: ``(B, A, 4)`` raw box activations for ``coder``.
        anchors: the ``A`` anchors.
        coder: ``"tanh"``, ``"ssd"`` or a coder object.

    Returns:
        One dict per image: ``boxes (N, 4)`` float xyxy in ``[0, 1]``, ``scores (N,)`` in ``(0, 1)``,
        ``labels (N,)`` int64 in ``0..C-1``, sorted by score, highest first; ``N <= max_per_image``.
    """
    B, A, C = cls_logits.shape
    if box_deltas.shape != (B, A, 4) or A != len(anchors):
        raise ValueError(
            f"expected cls_logits (B, A, C) and box_deltas (B, A, 4) with A = {len(anchors)} anchors; "
            f"got {tuple(cls_logits.shape)} and {tuple(box_deltas.shape)}"
        )
    if topk_per_class < 1 or max_per_image < 1:
        raise ValueError(f"topk_per_class and max_per_image must be >= 1; got {topk_per_class}, {max_per_image}")
    boxes = clip_boxes(make_box_coder(coder).decode(box_deltas, anchors))  # (B, A, 4)
    scores = cls_logits.sigmoid().transpose(1, 2)  # (B, C, A)
    # The k best of each (image, class), then the threshold: the same set as threshold-then-top-k.
    k = min(topk_per_class, A)
    top_scores, top_anchors = scores.topk(k, dim=2)  # (B, C, k) each, score-descending
    valid = top_scores > score_threshold  # (B, C, k): a prefix of each row
    n = int(valid.sum(dim=2).max()) if valid.any() else 0  # the longest prefix: later ranks take no part
    top_scores, top_anchors, valid = top_scores[..., :n], top_anchors[..., :n], valid[..., :n]
    top_boxes = boxes[torch.arange(B, device=boxes.device)[:, None, None], top_anchors]  # (B, C, n, 4)
    keep = _greedy_nms(top_boxes, valid, iou_threshold)  # (B, C, n)

    # At most max_per_image per image, highest scores first.
    image, label, rank = keep.nonzero(as_tuple=True)  # (K,) each
    det_scores = top_scores[image, label, rank]  # (K,)
    order = torch.sort(det_scores, descending=True, stable=True).indices  # (K,)
    order = order[torch.sort(image[order], stable=True).indices]  # (K,) grouped by image, scores descending
    image, label, rank, det_scores = image[order], label[order], rank[order], det_scores[order]
    counts = torch.bincount(image, minlength=B)  # (B,)
    first = counts.cumsum(0) - counts  # (B,) where each image's run starts
    place = torch.arange(len(image), device=image.device) - first[image]  # (K,) rank within the image
    top = place < max_per_image  # (K,)
    per_image = counts.clamp(max=max_per_image).tolist()
    det_boxes = top_boxes[image[top], label[top], rank[top]]  # (K', 4)
    return [
        {"boxes": b, "scores": s, "labels": l}
        for b, s, l in zip(det_boxes.split(per_image), det_scores[top].split(per_image), label[top].split(per_image))
    ]


def _greedy_nms(boxes: Tensor, valid: Tensor, iou_threshold: float) -> Tensor:
    """Greedy NMS in every (image, class) group at once; ``(..., n, 4)`` boxes sorted by score,
    ``(..., n)`` bool candidates -> ``(..., n)`` bool kept.

    Hand-written because ``torchvision.ops.batched_nms`` on a CPU, above 1,000 boxes, runs one NMS
    per group (an evaluation batch has ~1,300 groups of <= 50 boxes, and the calls' overhead is
    most of its time); here the n ranks are n vectorised steps over all groups. Same rule as
    torchvision's and the lesson's: box j is suppressed when a kept box ranked before it overlaps it
    with IoU > ``iou_threshold``. Memory: a few ``(..., n, n)`` tensors (64 images x 20 classes x
    50 x 50: 13 MB each).
    """
    x1, y1, x2, y2 = (c.contiguous() for c in boxes.unbind(-1))  # (..., n) each: contiguous is ~5x faster
    area = (x2 - x1) * (y2 - y1)  # (..., n)
    w = (torch.minimum(x2[..., :, None], x2[..., None, :]) - torch.maximum(x1[..., :, None], x1[..., None, :])).clamp_(min=0)
    h = (torch.minimum(y2[..., :, None], y2[..., None, :]) - torch.maximum(y1[..., :, None], y1[..., None, :])).clamp_(min=0)
    inter = w.mul_(h)  # (..., n, n)
    overlaps = inter / (area[..., :, None] + area[..., None, :] - inter) > iou_threshold  # (..., n, n)
    n = valid.shape[-1]
    later = torch.ones(n, n, dtype=torch.bool, device=valid.device).triu(diagonal=1)  # (n, n) j ranked after i
    overlaps &= later
    keep = valid.clone()  # (..., n)
    for i in range(n):  # rank i is final once the ranks before it are decided
        keep &= ~(keep[..., i, None] & overlaps[..., i, :])  # (..., n)
    return keep


def flip_merge(
    cls_logits: Tensor, box_deltas: Tensor, flipped_cls: Tensor, flipped_box: Tensor, mirror: Tensor
) -> tuple[Tensor, Tensor]:
    """``flip_tta``: the outputs for the images averaged with the outputs for the same images flipped
    left-right, read at each anchor's mirror anchor (``mirror (A,)``: :func:`detector.core.anchors.mirror_index`).
    Both coders' first delta moves the centre along x, so the flip negates it; the others (y, and
    the log sizes or their tanh) stay. Shapes: ``(B, A, C)`` and ``(B, A, 4)``, each pair alike."""
    flipped_cls, flipped_box = flipped_cls[:, mirror], flipped_box[:, mirror]  # (B, A, C), (B, A, 4)
    flipped_box = torch.cat([-flipped_box[..., :1], flipped_box[..., 1:]], dim=-1)  # (B, A, 4)
    return (cls_logits + flipped_cls) / 2, (box_deltas + flipped_box) / 2


def to_pixels(
    detections: Sequence[dict[str, Tensor]], sizes: Tensor | Sequence[Sequence[int]]
) -> list[dict[str, Tensor]]:
    """The same detections with boxes in each original image's pixels.

    Args:
        detections: one dict per image with ``boxes (N, 4)`` xyxy in ``[0, 1]`` (other keys are kept).
        sizes: ``(B, 2)`` each image's ``(height, width)`` in pixels.

    Returns:
        New dicts; ``boxes (N, 4)`` xyxy in pixels, ``x`` scaled by the width and ``y`` by the height.
    """
    sizes = torch.as_tensor(sizes)
    if sizes.shape != (len(detections), 2):
        raise ValueError(f"sizes must be (B={len(detections)}, 2) (height, width); got {tuple(sizes.shape)}")
    out = []
    for det, (height, width) in zip(detections, sizes.tolist()):
        scale = det["boxes"].new_tensor([width, height, width, height])  # (4,)
        out.append({**det, "boxes": det["boxes"] * scale})  # (N, 4)
    return out
