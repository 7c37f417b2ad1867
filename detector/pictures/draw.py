"""Drawing boxes and labels the lesson's way: every box and label has a black outline
(``draw_outline``: a stroke under the line) so it reads on any background, and every box has its
own colour. Boxes are always ``(N, 4)`` xyxy in the pixels of the image they are drawn on.

:func:`show_boxes` draws one image at its own size (what ``detector predict`` writes),
:func:`show_labels` a classifier's answer in its top-left corner (the lesson's
``draw_text(ax, (0, 0), ...)``); :func:`figure_to_array` and :func:`save_figure` turn a figure into
an image array (for loggers) or a file.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: figures are rendered to files and arrays, never to a screen

import matplotlib.patheffects as patheffects  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402
from PIL import Image  # noqa: E402
from torch import Tensor  # noqa: E402

__all__ = [
    "box_colour",
    "denormalize",
    "draw_boxes",
    "draw_label_text",
    "figure_to_array",
    "image_grid",
    "save_figure",
    "show_boxes",
    "show_labels",
]

# tab20's ten saturated hues first, then their light partners: neighbouring boxes differ in hue.
_PALETTE = [plt.get_cmap("tab20")(i) for i in (*range(0, 20, 2), *range(1, 20, 2))]


def box_colour(i: int) -> tuple[float, float, float, float]:
    """A distinct RGBA colour for the ``i``-th box (20 colours, then they repeat)."""
    return _PALETTE[i % len(_PALETTE)]


def _outline(linewidth: float) -> list[patheffects.AbstractPathEffect]:
    """The lesson's ``draw_outline``: a black stroke ``linewidth`` wide under the artist."""
    return [patheffects.withStroke(linewidth=linewidth, foreground="black")]


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
    colours: Sequence | None = None,
    linewidth: float = 2.0,
    fontsize: float = 9.0,
    outline: float = 2.0,
) -> list[Rectangle]:
    """Draw ``(N, 4)`` xyxy pixel boxes on ``ax``, each with an outlined edge and label.

    Args:
        labels: ``(N,)`` class indices, written as ``class_names[label]`` (or the number).
        scores: ``(N,)`` written after the name with two decimals.
        colour_offset: box ``i`` gets :func:`box_colour` ``(i + colour_offset)``...
        colours: ...unless ``colours[i]`` (any matplotlib colour) is given.
        outline: how much wider than the line its black outline is (half of it shows each side).

    Returns:
        The ``N`` rectangle patches added, in box order (tests count them).
    """
    boxes = _numpy(boxes).reshape(-1, 4)
    labels = None if labels is None else _numpy(labels).reshape(-1)
    scores = None if scores is None else _numpy(scores).reshape(-1)
    patches = []
    for i, (x1, y1, x2, y2) in enumerate(boxes):
        colour = colours[i] if colours is not None else box_colour(i + colour_offset)
        rect = Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, edgecolor=colour, lw=linewidth, ls=linestyle)
        rect.set_path_effects(_outline(linewidth + outline))
        patches.append(ax.add_patch(rect))
        text = []
        if labels is not None:
            c = int(labels[i])
            text.append(class_names[c] if class_names is not None and 0 <= c < len(class_names) else str(c))
        if scores is not None:
            text.append(f"{float(scores[i]):.2f}")
        if text:
            label = ax.text(
                x1, y1, " ".join(text), va="top", color=colour, fontsize=fontsize, weight="bold", clip_on=True
            )
            label.set_path_effects(_outline(max(fontsize / 3, 2.0)))
    return patches


def draw_label_text(
    ax: Axes,
    labels: Tensor | np.ndarray | Sequence[int],
    class_names: Sequence[str] | None = None,
    scores: Tensor | np.ndarray | Sequence[float] | None = None,
    fontsize: float = 9.0,
) -> str:
    """Write a classifier's answer in the top-left corner of ``ax``'s image, one class per line
    (the lesson's ``draw_text(ax, (0, 0), ...)``), white with a black outline.

    Args:
        labels: ``(N,)`` class indices, written as ``class_names[label]`` (or the number).
        scores: ``(N,)`` written after each name with two decimals.

    Returns:
        The text written (``""`` for no labels: nothing is drawn).
    """
    labels = _numpy(labels).reshape(-1)
    scores = None if scores is None else _numpy(scores).reshape(-1)
    lines = []
    for i, label in enumerate(labels):
        c = int(label)
        name = class_names[c] if class_names is not None and 0 <= c < len(class_names) else str(c)
        lines.append(name if scores is None else f"{name} {float(scores[i]):.2f}")
    text = "\n".join(lines)
    if text:
        artist = ax.text(
            0.01, 0.99, text, transform=ax.transAxes, va="top", ha="left", color="white",
            fontsize=fontsize, weight="bold", clip_on=True,
        )
        artist.set_path_effects(_outline(max(fontsize / 3, 2.0)))
    return text


def image_grid(n: int, ncols: int = 4, size: float = 3.5) -> tuple[Figure, list[Axes]]:
    """A figure of ``ceil(n / ncols)`` rows of square panels ``size`` inches wide, axes switched
    off; returns the figure and its first ``n`` axes (the spare ones stay blank)."""
    ncols = max(1, min(ncols, n))
    nrows = max(1, math.ceil(n / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(size * ncols, size * nrows), squeeze=False)
    for ax in axes.flat:
        ax.set_axis_off()
    return fig, list(axes.flat)[:n]


def _image_figure(image: np.ndarray, ax: Axes | None, max_side: int) -> tuple[Figure, Axes, float]:
    """``(figure, axes, font size)`` showing ``image``; without ``ax`` the figure is the image
    itself (no margins, ``W x H`` pixels scaled down to ``max_side``, font proportional to it)."""
    if ax is None:
        height, width = image.shape[:2]
        dpi = 100
        scale = min(1.0, max_side / max(height, width))
        fig = plt.figure(figsize=(width * scale / dpi, height * scale / dpi), dpi=dpi)
        ax = fig.add_axes((0, 0, 1, 1))
        fontsize = max(7.0, 0.025 * max(height, width) * scale * 72 / dpi)
    else:
        fig, fontsize = ax.figure, 9.0
    ax.imshow(image)
    ax.set_axis_off()
    return fig, ax, fontsize


def show_boxes(
    image: np.ndarray,
    boxes: Tensor | np.ndarray,
    labels: Tensor | np.ndarray | None = None,
    class_names: Sequence[str] | None = None,
    scores: Tensor | np.ndarray | None = None,
    ax: Axes | None = None,
    title: str | None = None,
    max_side: int = 1024,
) -> Figure:
    """One ``(H, W, 3)`` uint8 image with its ``(N, 4)`` xyxy pixel boxes.

    Without ``ax``, the figure is the image itself: no margins, ``W x H`` pixels when rendered
    (scaled down so the longer side is at most ``max_side``), label size proportional to it.
    """
    fig, ax, fontsize = _image_figure(image, ax, max_side)
    draw_boxes(ax, boxes, labels, class_names, scores, fontsize=fontsize, linewidth=max(2.0, fontsize / 5))
    if title:
        ax.set_title(title, fontsize=9)
    return fig


def show_labels(
    image: np.ndarray,
    labels: Tensor | np.ndarray | Sequence[int],
    class_names: Sequence[str] | None = None,
    scores: Tensor | np.ndarray | Sequence[float] | None = None,
    ax: Axes | None = None,
    title: str | None = None,
    max_side: int = 1024,
) -> Figure:
    """One ``(H, W, 3)`` uint8 image with a classifier's ``(N,)`` labels (and scores) written in
    its top-left corner (:func:`draw_label_text`); sized as :func:`show_boxes`."""
    fig, ax, fontsize = _image_figure(image, ax, max_side)
    draw_label_text(ax, labels, class_names, scores, fontsize=fontsize)
    if title:
        ax.set_title(title, fontsize=9)
    return fig


def figure_to_array(fig: Figure, close: bool = True) -> np.ndarray:
    """Render ``fig`` to an ``(H, W, 3)`` uint8 RGB array (for loggers)."""
    fig.canvas.draw()
    array = np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
    if close:
        plt.close(fig)
    return array


def save_figure(fig: Figure, path: str | Path, dpi: float | None = None, palette: int | None = None) -> Path:
    """Write ``fig`` as an image file (format from the suffix) and close it; returns the path.

    ``palette``: reduce a PNG to this many colours (PIL's median cut, dithered), which makes a
    figure full of photos about 3x smaller: for pictures committed to the repository.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if palette is None:
        fig.savefig(path, dpi=dpi)
        plt.close(fig)
    else:
        if dpi is not None:
            fig.set_dpi(dpi)
        Image.fromarray(figure_to_array(fig)).quantize(palette).save(path, optimize=True)
    return path


def denormalize(images: Tensor, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """``(B, 3, S, S)`` normalised float images -> ``(B, S, S, 3)`` uint8 RGB."""
    m = torch.as_tensor(mean, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
    s = torch.as_tensor(std, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
    pixels = (images * s + m).clamp(0, 1) * 255  # (B, 3, S, S)
    return pixels.round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
