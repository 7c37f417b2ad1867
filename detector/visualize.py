"""Pictures of what the detector does, drawn the lesson's way: every box and label has a black
outline (``draw_outline``: a stroke under the line) so it reads on any background, and every box
has its own colour.

The five pictures of the lesson's method, each a pure function returning a matplotlib ``Figure``
(``figure_to_array`` turns one into an image array, ``save_figure`` into a PNG):

(a) :func:`ground_truth_grid`   images with their ground-truth boxes and class names;
(b) :func:`anchor_figure`       the anchor grid of a config: one panel per grid size, all ``k``
                                anchors of a few cells, the cell centres and the cell lines;
(c) :func:`match_grid`          each object and the anchors matched to it (``detector.matching``),
                                in the object's colour;
(d) :func:`raw_prediction_grid` the highest-scoring anchors' decoded boxes, before NMS;
(e) :func:`detection_grid`      detections after NMS (and optionally the ground truth, dashed).

Plus :func:`show_boxes` (one image, sized to its pixels: what ``predict.py`` writes),
:func:`show_labels` (the same for a classifier's answer: the lesson's class names written in the
top-left corner, ``draw_text(ax, (0, 0), ...)``) and :func:`per_class_ap_figure` (a bar per class). Boxes are always ``(N, 4)`` xyxy in the pixels of
the image they are drawn on; functions that start from ``[0, 1]`` boxes say so. The training
loop's dashboard pictures (``detector.callbacks.ValidationPictures``) and the command-line tools
all draw through this module.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")  # headless: figures are rendered to files and arrays, never to a screen

import matplotlib.patheffects as patheffects
import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Rectangle
from PIL import Image
from torch import Tensor

from detector.anchors import Anchors
from detector.box_coder import BoxCoder, make_box_coder
from detector.matching import match

__all__ = [
    "anchor_figure",
    "box_colour",
    "denormalize",
    "detection_grid",
    "draw_boxes",
    "draw_label_text",
    "figure_to_array",
    "ground_truth_grid",
    "image_grid",
    "match_grid",
    "per_class_ap_figure",
    "raw_prediction_grid",
    "save_figure",
    "show_boxes",
    "show_labels",
    "top_raw_predictions",
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


def ground_truth_grid(
    images: Sequence[np.ndarray],
    targets: Sequence[dict[str, Tensor | np.ndarray]],
    class_names: Sequence[str] | None = None,
    titles: Sequence[str] | None = None,
    ncols: int = 4,
    size: float = 3.5,
) -> Figure:
    """(a) Images with their ground truth, one colour per object.

    Args:
        images: ``(H, W, 3)`` uint8 arrays (sizes may differ).
        targets: per image ``boxes (n, 4)`` xyxy in that image's pixels and ``labels (n,)``; an
            optional ``difficult (n,)`` bool draws those objects dashed (VOC's "difficult").
        titles: one line above each image (e.g. its file name).
    """
    fig, axes = image_grid(len(images), ncols, size)
    for i, ax in enumerate(axes):
        ax.imshow(images[i])
        target = targets[i]
        boxes, labels = _numpy(target["boxes"]).reshape(-1, 4), _numpy(target["labels"]).reshape(-1)
        difficult = _numpy(target.get("difficult", np.zeros(len(boxes), bool))).reshape(-1).astype(bool)
        colours = [box_colour(j) for j in range(len(boxes))]
        for flag, style in ((False, "-"), (True, "--")):
            pick = np.flatnonzero(difficult == flag)
            draw_boxes(ax, boxes[pick], labels[pick], class_names, linestyle=style, colours=[colours[j] for j in pick])
        if titles is not None:
            ax.set_title(titles[i], fontsize=9)
    fig.tight_layout()
    return fig


def _anchor_rows(
    anchors: Anchors, grid_index: int, cells: Sequence[tuple[float, float]]
) -> tuple[list[int], list[tuple[int, int]]]:
    """Rows of ``anchors`` for the cells of grid ``grid_index`` that contain the ``(y, x)`` points
    ``cells`` (in ``[0, 1]``; duplicates dropped), and those ``(row, col)`` cells."""
    g, k = anchors.grids[grid_index], anchors.k
    first = k * sum(s * s for s in anchors.grids[:grid_index])  # the grid's first anchor row
    picked: list[tuple[int, int]] = []
    for y, x in cells:
        cell = (min(int(y * g), g - 1), min(int(x * g), g - 1))
        if cell not in picked:
            picked.append(cell)
    rows = [first + (r * g + c) * k + a for r, c in picked for a in range(k)]
    return rows, picked


def anchor_figure(
    anchors: Anchors,
    image_size: int = 224,
    cells: Sequence[tuple[float, float]] = ((0.0, 0.0), (0.5, 0.5)),
    image: np.ndarray | None = None,
    size: float = 4.0,
) -> Figure:
    """(b) The anchor set of a config: one panel per grid, in ``anchors.grids`` order.

    Each panel shows the grid's cell lines and every cell centre (dots), and all ``k`` anchors of
    the cells that contain the ``(y, x)`` points ``cells`` (fractions of the image; the default is
    the top-left cell and the cell at the centre, which coincide on a 1x1 grid). Anchor shape ``a``
    has the same colour in every cell and panel (legend: its width x height in cells). The view
    extends past the image (drawn as a black square) so anchors larger than their cell show whole.

    Args:
        anchors: the ``A`` anchors, ``cxcywh`` in ``[0, 1]``.
        image_size: S, the network's square input side; axes are in its pixels.
        image: optional ``(S, S, 3)`` uint8 background (e.g. a network input, denormalised).

    Returns:
        A figure whose panel ``j`` holds ``len(picked cells) * k`` rectangle patches.
    """
    S, k = image_size, anchors.k
    xyxy = _numpy(anchors.xyxy) * S  # (A, 4) pixels
    wh = _numpy(anchors.cxcywh[:, 2:])  # (A, 2) in image units
    fig, axes = plt.subplots(1, len(anchors.grids), figsize=(size * len(anchors.grids), size + 0.6), squeeze=False)
    for j, (ax, g) in enumerate(zip(axes.flat, anchors.grids)):
        rows, picked = _anchor_rows(anchors, j, cells)
        if image is not None:
            ax.imshow(image, extent=(0, S, S, 0))
        ticks = np.arange(g + 1) * S / g
        ax.vlines(ticks, 0, S, colors="0.6", lw=0.8)
        ax.hlines(ticks, 0, S, colors="0.6", lw=0.8)
        ax.plot([0, S, S, 0, 0], [0, 0, S, S, 0], color="0.3", lw=1, ls=":", zorder=1)  # the image's edge
        centres = (np.arange(g) + 0.5) * S / g
        cx, cy = np.meshgrid(centres, centres)
        ax.scatter(cx.ravel(), cy.ravel(), s=12, c="white", edgecolors="black", linewidths=0.8, zorder=3)
        draw_boxes(ax, xyxy[rows], colours=[box_colour(a) for _ in picked for a in range(k)], linewidth=1.5, outline=1.0)
        lo, hi = min(0.0, xyxy[rows].min()), max(float(S), xyxy[rows].max())
        pad = 0.03 * (hi - lo)
        ax.set_xlim(lo - pad, hi + pad)
        ax.set_ylim(hi + pad, lo - pad)  # y down, as in an image
        ax.set_aspect("equal")
        ax.set_xticks([])
        ax.set_yticks([])
        where = ", ".join(f"({r}, {c})" for r, c in picked)
        ax.set_title(f"{g}x{g} grid: {g * g * k} anchors\nthe {k} of cell (row, col) {where}", fontsize=9)
    first_cell = wh[:k] * anchors.grids[0]  # (k, 2) shapes in cell units, the same on every grid
    handles = [Line2D([], [], color=box_colour(a), lw=2) for a in range(k)]
    names = [f"{w:.3g} x {h:.3g}" for w, h in first_cell]
    fig.legend(handles, names, loc="lower center", ncol=min(k, 5), fontsize=8, frameon=False,
               title="anchor width x height, in grid cells", title_fontsize=8)
    fig.suptitle(f"{len(anchors)} anchors at {S} px (dotted: the image's edge)", fontsize=10)
    fig.tight_layout(rect=(0, 0.12 if k > 5 else 0.07, 1, 0.95))
    return fig


def _as_tensor_boxes(boxes: Tensor | np.ndarray) -> Tensor:
    return torch.tensor(_numpy(boxes), dtype=torch.float32).reshape(-1, 4)  # a copy: records' arrays are read-only


def match_grid(
    images: Sequence[np.ndarray],
    targets: Sequence[dict[str, Tensor | np.ndarray]],
    anchors: Anchors,
    class_names: Sequence[str] | None = None,
    iou_threshold: float = 0.4,
    titles: Sequence[str] | None = None,
    ncols: int = 4,
    size: float = 3.5,
) -> Figure:
    """(c) Each object (solid, named) and its positive anchors (dashed), in the object's colour.

    Matching is :func:`detector.matching.match`, the training loss's own, so an object whose best
    IoU with any anchor is low still gets its one forced anchor, and anchors over the threshold
    are drawn for every object they match.

    Args:
        images: ``(H, W, 3)`` uint8 arrays; anchors are stretched to each image (the network sees
            it squashed to a square, so an anchor covers the same fraction of it).
        targets: per image ``boxes (n, 4)`` xyxy in that image's pixels and ``labels (n,)``.

    Returns:
        A figure whose panel ``i`` holds ``n_i + P_i`` rectangles: the objects first, then the
        ``P_i`` positive anchors; its title gives both counts.
    """
    fig, axes = image_grid(len(images), ncols, size)
    for i, ax in enumerate(axes):
        height, width = images[i].shape[:2]
        scale = torch.tensor([width, height, width, height], dtype=torch.float32)  # (4,)
        boxes = _as_tensor_boxes(targets[i]["boxes"])  # (n, 4) pixels
        labels = torch.tensor(_numpy(targets[i]["labels"]), dtype=torch.int64).reshape(-1)  # (n,)
        m = match(anchors.to("cpu"), (boxes / scale)[None], labels[None], iou_threshold)
        positive = m.positive[0].nonzero().squeeze(1)  # (P,) anchor rows
        owner = m.matched_idx[0, positive].tolist()  # (P,) object of each
        ax.imshow(images[i])
        draw_boxes(ax, boxes, labels, class_names, colours=[box_colour(j) for j in range(len(boxes))], linewidth=2.5)
        anchor_px = _numpy(anchors.xyxy)[positive.numpy()] * scale.numpy()  # (P, 4)
        draw_boxes(ax, anchor_px, linestyle="--", colours=[box_colour(j) for j in owner], linewidth=1.5, outline=0.8)
        head = f"{titles[i]}: " if titles is not None else ""
        ax.set_title(f"{head}objects: {len(boxes)}, positive anchors: {len(owner)}", fontsize=9)
    fig.tight_layout()
    return fig


def top_raw_predictions(
    cls_logits: Tensor, box_deltas: Tensor, anchors: Anchors, coder: str | BoxCoder = "tanh", top: int = 20
) -> list[dict[str, Tensor]]:
    """The ``top`` anchors with the highest class score in each image, decoded, before any NMS.

    Args:
        cls_logits: ``(B, A, C)`` raw class activations.
        box_deltas: ``(B, A, 4)`` raw box activations for ``coder``.

    Returns:
        One dict per image: ``boxes (T, 4)`` xyxy in ``[0, 1]`` (not clipped), ``scores (T,)`` the
        sigmoid of each anchor's best class, ``labels (T,)`` that class, ``anchors (T,)`` the anchor
        rows; ``T = min(top, A)``, highest score first.
    """
    scores, labels = cls_logits.detach().float().sigmoid().max(dim=2)  # (B, A) each
    best, rows = scores.topk(min(top, scores.shape[1]), dim=1)  # (B, T) each
    boxes = make_box_coder(coder).decode(box_deltas.detach().float(), anchors.to(box_deltas.device))  # (B, A, 4)
    return [
        {"boxes": boxes[b, rows[b]], "scores": best[b], "labels": labels[b, rows[b]], "anchors": rows[b]}
        for b in range(scores.shape[0])
    ]


def _to_image_pixels(boxes: Tensor, image: np.ndarray) -> Tensor:
    """``(N, 4)`` xyxy in ``[0, 1]`` -> pixels of ``image`` ``(H, W, 3)``."""
    height, width = image.shape[:2]
    return boxes.detach().cpu().float() * torch.tensor([width, height, width, height], dtype=torch.float32)


def raw_prediction_grid(
    images: Sequence[np.ndarray],
    cls_logits: Tensor,
    box_deltas: Tensor,
    anchors: Anchors,
    coder: str | BoxCoder = "tanh",
    class_names: Sequence[str] | None = None,
    top: int = 10,
    ncols: int = 4,
    size: float = 3.5,
    titles: Sequence[str] | None = None,
) -> Figure:
    """(d) The ``top`` highest-scoring anchors' decoded boxes per image, before NMS (the lesson
    looked at these to see duplicates that NMS must remove).

    Args:
        images: ``B`` ``(H, W, 3)`` uint8 arrays, the inputs of the activations (boxes in ``[0, 1]``
            are stretched to each image's size).
        cls_logits, box_deltas: ``(B, A, C)`` and ``(B, A, 4)``, see :func:`top_raw_predictions`.

    Returns:
        A figure whose panel ``i`` holds ``min(top, A)`` rectangles.
    """
    raw = top_raw_predictions(cls_logits, box_deltas, anchors, coder, top)
    preds = [{**r, "boxes": _to_image_pixels(r["boxes"], image)} for r, image in zip(raw, images)]
    return detection_grid(images, preds, class_names=class_names, ncols=ncols, size=size, titles=titles)


def detection_grid(
    images: Sequence[np.ndarray],
    predictions: Sequence[dict[str, Tensor]],
    targets: Sequence[dict[str, Tensor]] | None = None,
    class_names: Sequence[str] | None = None,
    ncols: int = 4,
    size: float = 3.5,
    titles: Sequence[str] | None = None,
) -> Figure:
    """(e) A grid of images with predicted boxes (solid, with scores) and ground truth (dashed).

    Args:
        images: ``(H, W, 3)`` uint8 arrays.
        predictions: per image ``boxes (N, 4)`` xyxy in that image's pixels, ``labels (N,)`` and,
            optionally, ``scores (N,)`` (e.g. :func:`detector.postprocess.to_pixels`' output).
            A stepping-stone task's prediction may lack ``labels`` (the box regressor: boxes
            only) or ``boxes`` (the classifiers: its labels are written in the top-left corner).
        targets: per image ``boxes (M, 4)`` xyxy pixels and ``labels (M,)``, or ``None``.

    Returns:
        A figure whose panel ``i`` holds ``M_i + N_i`` rectangles (targets first; ``N_i = 0``
        for a prediction without boxes).
    """
    fig, axes = image_grid(len(images), ncols, size)
    for i, ax in enumerate(axes):
        ax.imshow(images[i])
        if targets is not None:
            draw_boxes(ax, targets[i]["boxes"], targets[i]["labels"], class_names, linestyle="--")
        pred = predictions[i]
        if "boxes" in pred:
            draw_boxes(ax, pred["boxes"], pred.get("labels"), class_names, pred.get("scores"), colour_offset=7)
        else:
            draw_label_text(ax, pred["labels"], class_names, pred.get("scores"))
        if titles is not None:
            ax.set_title(titles[i], fontsize=9)
    fig.tight_layout()
    return fig


def per_class_ap_figure(
    class_names: Sequence[str],
    ap: Sequence[float] | Tensor | np.ndarray,
    title: str | None = None,
    xlabel: str = "AP@0.5",
) -> Figure:
    """A horizontal bar per class, best first, with the mean as a dashed line.

    Args:
        ap: ``(C,)`` AP per class in ``[0, 1]``; NaN or ``None`` (a class with no objects in the
            split: ``eval.py``'s ``metrics.json`` writes ``null``) is drawn as an empty bar marked
            ``n/a`` and left out of the mean.

    Returns:
        A figure with one axes holding ``C`` bar rectangles.
    """
    values = _numpy(ap).astype(float).reshape(-1)
    if len(values) != len(class_names):
        raise ValueError(f"{len(class_names)} class names but {len(values)} AP values")
    order = sorted(range(len(values)), key=lambda c: -np.nan_to_num(values[c], nan=-1.0))
    fig, ax = plt.subplots(figsize=(6, 0.35 * len(values) + 1.2))
    shown = np.nan_to_num(values[order], nan=0.0)
    bars = ax.barh(range(len(order)), shown, color=box_colour(0), edgecolor="black", lw=0.5)
    for bar, c in zip(bars, order):
        text = "n/a" if math.isnan(values[c]) else f"{values[c]:.3f}"
        ax.text(bar.get_width() + 0.01, bar.get_y() + bar.get_height() / 2, text, va="center", fontsize=8)
    ax.set_yticks(range(len(order)), [class_names[c] for c in order], fontsize=9)
    ax.invert_yaxis()  # best at the top
    ax.set_xlim(0, 1.1)
    ax.set_xlabel(xlabel)
    if not np.isnan(values).all():
        mean = float(np.nanmean(values))
        ax.axvline(mean, color="black", ls="--", lw=1)
        ax.text(mean, -0.7, f" mean {mean:.3f}", fontsize=8, va="bottom")
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
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
