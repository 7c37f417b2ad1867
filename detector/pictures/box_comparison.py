"""Two checkpoints' detections on the same image, side by side, over the same ground truth: the
picture of a looser and a tighter fit (``detector inspect compare-boxes``)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from matplotlib.figure import Figure
from torch import Tensor

from detector.core.boxes import box_iou
from detector.pictures.draw import _numpy, _outline, draw_boxes, image_grid

__all__ = ["best_iou_per_object", "box_comparison_figure"]


def best_iou_per_object(prediction: dict[str, Tensor], target: dict[str, Tensor]) -> Tensor:
    """Each object's best IoU with a detection of its class: ``(M,)``, 0 where it has none.

    Args:
        prediction: ``boxes (N, 4)`` xyxy and ``labels (N,)``.
        target: ``boxes (M, 4)`` xyxy in the same units and ``labels (M,)``.
    """
    boxes = torch.tensor(_numpy(target["boxes"]), dtype=torch.float32).reshape(-1, 4)  # (M, 4) a copy: records are read-only
    labels = torch.tensor(_numpy(target["labels"])).reshape(-1)  # (M,)
    found = torch.as_tensor(_numpy(prediction["boxes"]), dtype=torch.float32).reshape(-1, 4)  # (N, 4)
    found_labels = torch.as_tensor(_numpy(prediction["labels"])).reshape(-1)  # (N,)
    if len(found) == 0 or len(boxes) == 0:
        return torch.zeros(len(boxes))
    iou = box_iou(boxes, found)  # (M, N)
    same = labels[:, None] == found_labels[None, :]  # (M, N)
    return torch.where(same, iou, 0.0).amax(dim=1)  # (M,)


def box_comparison_figure(
    image: np.ndarray,
    target: dict[str, Tensor],
    predictions: Sequence[dict[str, Tensor]],
    names: Sequence[str],
    class_names: Sequence[str] | None = None,
    size: float = 6.0,
) -> Figure:
    """One image, one panel per model (left to right: the baseline first), each with the ground truth
    (white, dashed), the model's detections (solid, class and score) and, at each object's lower left
    corner, its best IoU with a detection of its class; the title gives their mean.

    Args:
        image: ``(H, W, 3)`` uint8.
        target: ``boxes (M, 4)`` xyxy in the image's pixels and ``labels (M,)``.
        predictions: per model ``boxes (N, 4)`` xyxy pixels, ``labels (N,)``, ``scores (N,)``.
        names: per model, the name its panel's title starts with.

    Returns:
        A figure of ``len(predictions)`` panels; panel ``i`` holds ``M + N_i`` rectangles (the
        ground truth first).
    """
    fig, axes = image_grid(len(predictions), ncols=len(predictions), size=size)
    truth = _numpy(target["boxes"]).reshape(-1, 4)
    for ax, pred, name in zip(axes, predictions, names, strict=True):
        ax.imshow(image)
        draw_boxes(ax, truth, colours=["white"] * len(truth), linestyle="--", linewidth=2.0, outline=1.5)
        draw_boxes(ax, pred["boxes"], pred["labels"], class_names, pred["scores"], colour_offset=3, linewidth=1.8)  # red first
        best = best_iou_per_object(pred, target)  # (M,)
        for (x1, _, _, y2), iou in zip(truth, best.tolist(), strict=True):
            text = ax.text(x1, y2, f"IoU {iou:.2f}", va="bottom", color="white", fontsize=9, weight="bold", clip_on=True)
            text.set_path_effects(_outline(3.0))
        mean = f"{float(best.mean()):.3f}" if len(best) else "n/a"
        ax.set_title(f"{name}\nmean best IoU of the {_count(len(best), 'object')}: {mean}; "
                     f"{_count(len(pred['boxes']), 'detection')}", fontsize=10)
    fig.tight_layout()
    return fig


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"
