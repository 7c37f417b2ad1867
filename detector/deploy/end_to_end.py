"""The end-to-end ONNX graph: uint8 photos in, detections in their pixels out.

    detector export --checkpoint CKPT --onnx model.onnx --with-nms [--flip-tta] [--opset 17]

=======  =================  ===================  ============================================
input    images             uint8 (B, H, W, 3)   RGB, any B, H, W (all images of a call share H, W)
input    score_threshold    float32 ()           keep scores above it (the metadata's
                                                 ``score_threshold``: the checkpoint's picture
                                                 threshold, the lesson's 0.25)
output   boxes              float32 (N, 4)       x1, y1, x2, y2 in the input's pixels
output   scores             float32 (N,)         sorted by image, then score descending
output   labels             int64 (N,)           class index 0..C-1 (``class_names`` in the metadata)
output   batch_index        int64 (N,)           which of the B images each detection is on
=======  =================  ===================  ============================================

Inside, as PyTorch does it (:class:`detector.deploy.api.Detector`, ``detector eval``):

1. resize to ``S x S`` with OpenCV's ``INTER_LINEAR`` on uint8, bit for bit: its fixed-point
   arithmetic (11-bit weights rounded half to even, the horizontal pass in integers, the vertical
   one as its SIMD code rounds) written as gathers and integer operations (:class:`OpenCVResize`),
   so the graph sees exactly the pixels albumentations feeds the network in evaluation;
2. normalise as albumentations does, ``(x - 255 mean) * (1 / (255 std))`` in float32;
3. the network; with flip TTA, on the images and their mirror images in one batch of 2B, merged
   as :func:`detector.core.postprocess.flip_merge` merges them;
4. decode with the checkpoint's box coder and anchors, clip to the image, sigmoid;
5. per image and class, the ``topk_per_class`` best anchors scoring above ``score_threshold``,
   then ONNX ``NonMaxSuppression`` (per image and class, IoU > ``iou_threshold`` suppresses: the
   rule of :func:`detector.core.postprocess.postprocess`);
6. per image the ``max_per_image`` best, ordered by score (ties: class, then rank, as PyTorch).

So the graph's detections are PyTorch's up to the network's float rounding (about 1e-6 here),
tested on the VOC sample photos; the one place they can differ beyond that is the order of
exactly equal scores (a sigmoid saturated at 1.0): ONNX ``TopK`` and ``NonMaxSuppression`` put the
lower anchor first, ``torch.topk`` promises no order.

Why these shapes: the batch and the image size are dynamic because nothing in the graph needs them
fixed (the resize computes its sampling grid from the input's shape), and a batch of camera frames
shares one size; the outputs are flat with a ``batch_index`` (the layout of ``NonMaxSuppression``'s
own output) because the number of detections differs per image, and padding to
``max_per_image`` would hand every caller a mask to apply. ``NonMaxSuppression`` rather than
``torchvision.ops.batched_nms``: torchvision exports its NMS as one class-agnostic call on boxes
offset by class, which loses float precision as the offsets grow; the ONNX op suppresses per image
and per class itself. Photos much larger than twice ``S`` alias in a bilinear resize: the Python
wrappers shrink them first (:mod:`detector.deploy.sources`), as the decoder does for evaluation.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torchvision
from torch import Tensor, nn

from detector.core.box_coder import make_box_coder
from detector.core.boxes import clip_boxes
from detector.core.postprocess import flip_merge
from detector.deploy.export import sidecar, stamp
from detector.training.tasks.detection import DetectorModule

__all__ = ["EndToEnd", "OpenCVResize", "export_end_to_end"]

INPUTS = ("images", "score_threshold")
OUTPUTS = ("boxes", "scores", "labels", "batch_index")
COEF_BITS = 11  # OpenCV's INTER_RESIZE_COEF_BITS: weights are integers out of 2048


def _taps(source: Tensor, size: int, clamp_weight: bool) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """OpenCV's sampling of ``size`` outputs from ``source`` (a 0-d int64 tensor) pixels:
    ``(index0, index1, weight0, weight1)``, ``(size,)`` each, weights int32 out of 2048.

    ``f = float32((d + 0.5) * scale - 0.5)`` with ``scale = 1 / (size / source)`` in double;
    ``i = floor(f)``, weights ``round((1 - (f - i)) * 2048)`` and ``round((f - i) * 2048)``. Along
    x OpenCV also clamps the fraction to 0 at both borders (``clamp_weight``); along y it only
    clamps the row indices."""
    src = source.to(torch.float64)
    scale = 1.0 / (size / src)  # as OpenCV: 1 / inv_scale, inv_scale = dsize / ssize
    f = ((torch.arange(size, dtype=torch.float64) + 0.5) * scale - 0.5).to(torch.float32)  # (size,)
    i = f.floor()
    frac = f - i  # (size,) float32
    i = i.to(torch.int64)
    last = source - 1
    if clamp_weight:
        outside = (i < 0) | (i >= last)
        frac = torch.where(outside, torch.zeros_like(frac), frac)
        i = torch.where(i < 0, torch.zeros_like(i), i)
        i = torch.minimum(i, last)
    w0 = ((1.0 - frac) * (1 << COEF_BITS)).round().to(torch.int32)  # half to even, as cvRound
    w1 = (frac * (1 << COEF_BITS)).round().to(torch.int32)
    return i.clamp(min=0).minimum(last), (i + 1).clamp(min=0).minimum(last), w0, w1


class OpenCVResize(nn.Module):
    """``cv2.resize(image, (S, S), interpolation=cv2.INTER_LINEAR)`` on uint8, bit-exact, batched
    and traceable with a dynamic size: ``(B, H, W, 3)`` uint8 -> ``(B, S, S, 3)`` int32 in 0..255.

    OpenCV's arithmetic (``resize.cpp``, ``HResizeLinear`` then ``VResizeLinear`` for uchar): the
    horizontal pass sums ``pixel * weight`` in integers (scale 2048); the vertical pass computes
    ``((r0 >> 4) * b0 >> 16) + ((r1 >> 4) * b1 >> 16) + 2 >> 2``. (OpenCV's exact 2x downscale
    takes its area path, which gives the same numbers.)"""

    def __init__(self, size: int):
        super().__init__()
        self.size = size

    def forward(self, images: Tensor) -> Tensor:
        shape = torch._shape_as_tensor(images)  # (4,) int64: B, H, W, 3, traced as the graph's Shape
        x0, x1, a0, a1 = _taps(shape[2], self.size, clamp_weight=True)
        y0, y1, b0, b1 = _taps(shape[1], self.size, clamp_weight=False)
        pixels = images.to(torch.int32)  # (B, H, W, 3)
        rows = pixels.index_select(2, x0) * a0[:, None] + pixels.index_select(2, x1) * a1[:, None]  # (B, H, S, 3)
        r0 = torch.div(rows.index_select(1, y0), 16, rounding_mode="trunc")  # (B, S, S, 3); >> 4
        r1 = torch.div(rows.index_select(1, y1), 16, rounding_mode="trunc")
        top = torch.div(r0 * b0[:, None, None], 1 << 16, rounding_mode="trunc")  # v_mul_hi
        bottom = torch.div(r1 * b1[:, None, None], 1 << 16, rounding_mode="trunc")
        return torch.div(top + bottom + 2, 4, rounding_mode="trunc").clamp(0, 255)  # (B, S, S, 3)


class _NonMaxSuppression(torch.autograd.Function):
    """ONNX ``NonMaxSuppression`` (per image and class) in the exported graph; in PyTorch (the
    trace's own run) the same with torchvision's NMS. ``boxes (B, A, 4)`` xyxy, ``scores (B, C, A)``
    -> ``(K, 3)`` int64 ``[image, class, anchor]``, by image, class, then score descending."""

    @staticmethod
    def forward(ctx: Any, boxes: Tensor, scores: Tensor, max_per_class: int, iou: float, score: float) -> Tensor:
        out = [torch.zeros(0, 3, dtype=torch.int64)]
        for b in range(scores.shape[0]):
            for c in range(scores.shape[1]):
                idx = (scores[b, c] > score).nonzero().flatten()  # (n,)
                keep = idx[torchvision.ops.nms(boxes[b, idx], scores[b, c, idx], iou)][:max_per_class]  # (k,)
                out.append(torch.stack([torch.full_like(keep, b), torch.full_like(keep, c), keep], dim=1))
        return torch.cat(out)

    @staticmethod
    def symbolic(g: Any, boxes: Any, scores: Any, max_per_class: int, iou: float, score: float) -> Any:
        return g.op(
            "NonMaxSuppression",
            boxes,
            scores,
            g.op("Constant", value_t=torch.tensor([max_per_class], dtype=torch.int64)),
            g.op("Constant", value_t=torch.tensor([iou], dtype=torch.float32)),
            g.op("Constant", value_t=torch.tensor([score], dtype=torch.float32)),
            center_point_box_i=0,
        )


class EndToEnd(nn.Module):
    """A :class:`DetectorModule` as the graph of the module docstring (``flip_tta`` fixed at
    construction): ``images (B, H, W, 3)`` uint8, ``score_threshold ()`` -> ``boxes (N, 4)``,
    ``scores (N,)``, ``labels (N,)``, ``batch_index (N,)``."""

    def __init__(self, model: DetectorModule, flip_tta: bool):
        super().__init__()
        self.network = model.model
        self.resize = OpenCVResize(model.image_size)
        mean = np.asarray(model.model.backbone.mean, np.float32) * np.float32(255)  # albumentations' Normalize
        scale = np.reciprocal(np.asarray(model.model.backbone.std, np.float32) * np.float32(255))
        self.register_buffer("mean", torch.from_numpy(mean))
        self.register_buffer("scale", torch.from_numpy(scale))
        self.anchors, self.coder, self.cfg, self.flip_tta = model.anchors, make_box_coder(model.coder), model.post_cfg, flip_tta
        self.register_buffer("mirror", model.anchor_mirror.clone())

    def forward(self, images: Tensor, score_threshold: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        shape = torch._shape_as_tensor(images)  # (4,)
        x = (self.resize(images).to(torch.float32) - self.mean) * self.scale  # (B, S, S, 3)
        x = x.permute(0, 3, 1, 2)  # (B, 3, S, S)
        if self.flip_tta:
            cls_logits, box_deltas = self.network(torch.cat([x, x.flip(-1)]))  # (2B, A, C), (2B, A, 4)
            (cls_logits, flipped_cls), (box_deltas, flipped_box) = cls_logits.chunk(2), box_deltas.chunk(2)
            cls_logits, box_deltas = flip_merge(cls_logits, box_deltas, flipped_cls, flipped_box, self.mirror)
        else:
            cls_logits, box_deltas = self.network(x)  # (B, A, C), (B, A, 4)
        A, C = cls_logits.shape[1:]
        boxes = clip_boxes(self.coder.decode(box_deltas, self.anchors))  # (B, A, 4) in [0, 1]
        scores = cls_logits.sigmoid().transpose(1, 2)  # (B, C, A)
        k = min(self.cfg.topk_per_class, A)
        top_scores, top_anchors = scores.topk(k, dim=2)  # (B, C, k)
        candidates = torch.where(top_scores > score_threshold, top_scores, torch.full_like(top_scores, -1.0))
        masked = torch.full_like(scores, -1.0).scatter(2, top_anchors, candidates)  # (B, C, A): -1 = not a candidate
        found = _NonMaxSuppression.apply(boxes, masked, k, self.cfg.iou_threshold, -0.5)  # (K, 3)
        image, label, anchor = found[:, 0], found[:, 1], found[:, 2]  # (K,) each, by image and class
        found_scores = masked.reshape(-1)[(image * C + label) * A + anchor]  # (K,)
        # Image ascending, then score descending, ties in found order (class, rank): two stable sorts
        # (ONNX TopK puts the lower index first among equal values).
        order = found_scores.topk(found_scores.shape[0]).indices  # (K,)
        order = order[image[order].to(torch.float32).topk(order.shape[0], largest=False).indices]  # (K,)
        image, label, anchor, found_scores = image[order], label[order], anchor[order], found_scores[order]
        per_image = (image[:, None] == torch.arange(shape[0])[None, :]).to(torch.int64)  # (K, B)
        counts = per_image.sum(0)  # (B,)
        first = counts.cumsum(0) - counts  # (B,) where each image's run starts
        place = torch.arange(image.shape[0]) - first[image]  # (K,) rank within its image
        keep = (place < self.cfg.max_per_image).nonzero().flatten()  # (N,)
        image, label, anchor = image[keep], label[keep], anchor[keep]
        size = shape[[2, 1, 2, 1]].to(torch.float32)  # (4,) W, H, W, H
        pixels = boxes.reshape(-1, 4)[image * A + anchor] * size  # (N, 4)
        return pixels, found_scores[keep], label, image


def export_end_to_end(
    model: DetectorModule, path: str | Path, flip_tta: bool | None = None, opset: int = 17
) -> tuple[Path, Path]:
    """Write ``model`` as the end-to-end graph (module docstring) to ``path``, and its metadata as
    JSON beside it (``.json``; also in the ONNX file under ``"detector"``).

    ``flip_tta``: default the checkpoint's ``post_cfg.flip_tta``. The model is moved to the CPU in
    float32, eval mode (in place). Returns the two paths written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = model.float().eval().cpu()
    flip_tta = model.post_cfg.flip_tta if flip_tta is None else flip_tta
    graph = EndToEnd(model, flip_tta).eval()
    default = float(model.post_cfg.picture_score_threshold)
    example = (torch.zeros(1, 375, 500, 3, dtype=torch.uint8), torch.tensor(default))
    axes = {"images": {0: "batch", 1: "height", 2: "width"}, **{name: {0: "detections"} for name in OUTPUTS}}
    with warnings.catch_warnings():
        # Shape checks become constants, and the exporter announces its deprecation: both expected.
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=UserWarning, module="torch.onnx")
        torch.onnx.export(
            graph, example, str(path), dynamo=False, input_names=list(INPUTS), output_names=list(OUTPUTS),
            dynamic_axes=axes, opset_version=opset,
        )
    info = {k: v for k, v in sidecar(model).items() if not k.startswith("anchors_")}
    info.update(
        end_to_end=True,
        flip_tta=flip_tta,
        score_threshold=default,
        inputs={"images": ["batch", "height", "width", 3], "score_threshold": []},
        outputs={"boxes": ["detections", 4], "scores": ["detections"], "labels": ["detections"], "batch_index": ["detections"]},
    )
    return path, stamp(path, info)
