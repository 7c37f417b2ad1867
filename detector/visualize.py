"""Pictures of boxes: the lesson's ``draw_outline`` idea (a black stroke around every line and label so
it reads on any background), one colour per box, and grids of images.

Pure functions: they take arrays and return a matplotlib ``Figure`` (or an image array); the training
loop's loggers and the command-line tools all draw through them.
"""

from __future__ import annotations

from typing import Sequence

import matplotlib

matplotlib.use("Agg")  # headless: figures are rendered to files and arrays, never to a screen

import matplotlib.patheffects as patheffects
import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from torch import Tensor

__all__ = ["draw_boxes", "show_boxes", "detection_grid", "figure_to_array", "denormalize", "box_colour"]

_OUTLINE = [patheffects.withStroke(linewidth=3, foreground="black")]


def box_colour(i: int) -> tuple[float, float, float, float]:
    """A distinct colour for the ``i``-th box (cycles through the 20 of ``tab20``)."""
    return plt.get_cmap("tab20")(i % 20)


def _numpy(x: Tensor | np.ndarray | Sequence) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, Tensor) else np.asarray(x)


def draw_boxes(
    ax: Axes,
    boxes: Tensor | np.ndarray,
    labels: Tensor | np.ndarray | None = None,
    class_names: Sequence[str] | None = None,
    scores: Tensor | np.ndarray | None = None,
    linestyle: str = "-",
    colour_offset: int = 0,
) -> list[Rectangle]:
    """Draw ``(N, 4)`` xyxy pixel boxes on ``ax``, each with an outlined edge and label.

    Returns the ``N`` rectangle patches added (tests count them).
    """
    boxes = _numpy(boxes).reshape(-1, 4)
    labels = None if labels is None else _numpy(labels).reshape(-1)
    scores = None if scores is None else _numpy(scores).reshape(-1)
    patches = []
    for i, (x1, y1, x2, y2) in enumerate(boxes):
        colour = box_colour(i + colour_offset)
        rect = ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, edgecolor=colour, lw=2, ls=linestyle))
        rect.set_path_effects(_OUTLINE)
        patches.append(rect)
        text = []
        if labels is not None:
            c = int(labels[i])
            text.append(class_names[c] if class_names is not None and 0 <= c < len(class_names) else str(c))
        if scores is not None:
            text.append(f"{float(scores[i]):.2f}")
        if text:
            label = ax.text(x1, y1, " ".join(text), va="top", color=colour, fontsize=9, weight="bold")
            label.set_path_effects(_OUTLINE)
    return patches


def show_boxes(
    image: np.ndarray,
    boxes: Tensor | np.ndarray,
    labels: Tensor | np.ndarray | None = None,
    class_names: Sequence[str] | None = None,
    scores: Tensor | np.ndarray | None = None,
    ax: Axes | None = None,
    title: str | None = None,
) -> Figure:
    """One ``(H, W, 3)`` uint8 image with its ``(N, 4)`` xyxy pixel boxes; returns the figure."""
    if ax is None:
        fig, ax = plt.subplots(figsize=(5, 5))
    else:
        fig = ax.figure
    ax.imshow(image)
    ax.set_axis_off()
    draw_boxes(ax, boxes, labels, class_names, scores)
    if title:
        ax.set_title(title, fontsize=9)
    return fig


def detection_grid(
    images: Sequence[np.ndarray],
    predictions: Sequence[dict[str, Tensor]],
    targets: Sequence[dict[str, Tensor]] | None = None,
    class_names: Sequence[str] | None = None,
    ncols: int = 4,
    size: float = 3.5,
) -> Figure:
    """A grid of images with predicted boxes (solid, with scores) and ground truth (dashed).

    Args:
        images: ``(H, W, 3)`` uint8 arrays.
        predictions: per image ``boxes (N, 4)`` xyxy in that image's pixels, ``labels``, ``scores``.
        targets: per image ``boxes (M, 4)`` xyxy pixels and ``labels``, or ``None``.
    """
    n = len(images)
    ncols = max(1, min(ncols, n))
    nrows = max(1, -(-n // ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(size * ncols, size * nrows), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.set_axis_off()
        if i >= n:
            continue
        ax.imshow(images[i])
        if targets is not None:
            draw_boxes(ax, targets[i]["boxes"], targets[i]["labels"], class_names, linestyle="--")
        pred = predictions[i]
        draw_boxes(ax, pred["boxes"], pred["labels"], class_names, pred.get("scores"), colour_offset=7)
    fig.tight_layout()
    return fig


def figure_to_array(fig: Figure, close: bool = True) -> np.ndarray:
    """Render ``fig`` to an ``(H, W, 3)`` uint8 RGB array (for loggers)."""
    fig.canvas.draw()
    array = np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
    if close:
        plt.close(fig)
    return array


def denormalize(images: Tensor, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """``(B, 3, S, S)`` normalised float images -> ``(B, S, S, 3)`` uint8 RGB."""
    m = torch.as_tensor(mean, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
    s = torch.as_tensor(std, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
    pixels = (images * s + m).clamp(0, 1) * 255  # (B, 3, S, S)
    return pixels.round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
