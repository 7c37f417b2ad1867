"""Raw activations -> detections: decode, sigmoid, per-class score threshold, top-k, NMS.

The lesson (``show_nmf``) did this per image and per class with a copied NMS loop (ssd.pytorch's
``nms(boxes, scores, overlap, top_k)``); here the whole batch goes through one
``torchvision.ops.batched_nms`` call, with the same semantics:

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

from typing import Sequence

import torch
from torch import Tensor
from torchvision.ops import batched_nms

from detector.anchors import Anchors
from detector.box_coder import BoxCoder, make_box_coder
from detector.boxes import clip_boxes

__all__ = ["postprocess", "to_pixels"]


def postprocess(
    cls_logits: Tensor,
    box_deltas: Tensor,
    anchors: Anchors,
    coder: str | BoxCoder = "tanh",
    score_threshold: float = 0.01,
    iou_threshold: float = 0.4,
    topk_per_class: int = 50,
    max_per_image: int = 100,
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
    top_scores, top_anchors = scores.topk(min(topk_per_class, A), dim=2)  # (B, C, k) each
    image, label, rank = (top_scores > score_threshold).nonzero(as_tuple=True)  # (N,) each
    cand_scores = top_scores[image, label, rank]  # (N,)
    cand_boxes = boxes[image, top_anchors[image, label, rank]]  # (N, 4)
    # float64: for few boxes batched_nms shifts each group by idx * (max + 1), up to ~2,500 here, where
    # float32 rounds coordinates by ~1e-4 and flips IoUs near the threshold.
    group = image * C + label  # (N,)
    keep = batched_nms(cand_boxes.double(), cand_scores.double(), group, iou_threshold)  # (K,) score-descending

    # At most max_per_image per image: a stable sort by image keeps each image's score order.
    keep = keep[torch.sort(image[keep], stable=True).indices]  # (K,) grouped by image
    kept_image = image[keep]  # (K,)
    counts = torch.bincount(kept_image, minlength=B)  # (B,)
    first = counts.cumsum(0) - counts  # (B,) where each image's run starts
    place = torch.arange(len(keep), device=keep.device) - first[kept_image]  # (K,) rank within the image
    keep = keep[place < max_per_image]  # (K',)
    per_image = counts.clamp(max=max_per_image).tolist()
    return [
        {"boxes": b, "scores": s, "labels": l}
        for b, s, l in zip(
            cand_boxes[keep].split(per_image), cand_scores[keep].split(per_image), label[keep].split(per_image)
        )
    ]


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
