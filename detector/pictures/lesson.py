"""The five pictures of the lesson's method, each a pure function returning a matplotlib ``Figure``:

(a) :func:`ground_truth_grid`   images with their ground-truth boxes and class names;
(b) :func:`anchor_figure`       the anchor grid of a config: one panel per grid size, all ``k``
                                anchors of a few cells, the cell centres and the cell lines;
(c) :func:`match_grid`          each object and the anchors matched to it (``detector.core.matching``),
                                in the object's colour;
(d) :func:`raw_prediction_grid` the highest-scoring anchors' decoded boxes, before NMS;
(e) :func:`detection_grid`      detections after NMS (and optionally the ground truth, dashed).

Boxes are ``(N, 4)`` xyxy in the pixels of the image they are drawn on; functions that start from
``[0, 1]`` boxes say so.
"""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from torch import Tensor

from detector.core.anchors import Anchors
from detector.core.box_coder import BoxCoder, make_box_coder
from detector.core.matching import Matching, match
from detector.defaults import ATSS_TOPK, IMAGE_SIZE, MATCH_IOU
from detector.pictures.draw import _numpy, box_colour, draw_boxes, draw_label_text, image_grid

__all__ = [
    "anchor_figure",
    "detection_grid",
    "ground_truth_grid",
    "match_grid",
    "raw_prediction_grid",
    "top_raw_predictions",
]


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
    image_size: int = IMAGE_SIZE,
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
    iou_threshold: float = MATCH_IOU,
    titles: Sequence[str] | None = None,
    ncols: int = 4,
    size: float = 3.5,
    matching: Matching = "fixed",
    atss_topk: int = ATSS_TOPK,
) -> Figure:
    """(c) Each object (solid, named) and its positive anchors (dashed), in the object's colour.

    Matching is :func:`detector.core.matching.match`, the training loss's own (``matching``,
    ``atss_topk``), so an object whose best IoU with any anchor is low still gets its one forced
    anchor, and anchors over the threshold (``"fixed"``) or over the object's own threshold with
    their centre inside it (``"atss"``) are drawn for every object they match.

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
        m = match(anchors.to("cpu"), (boxes / scale)[None], labels[None], iou_threshold, matching, atss_topk)
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
            optionally, ``scores (N,)`` (e.g. :func:`detector.core.postprocess.to_pixels`' output).
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
