"""A dataset before training (``detector data report``), as ultralytics' ``labels.jpg`` shows one:
objects per class, box sizes and shapes relative to the image, objects per image, and how well the
anchors cover the boxes. Each is a pure function of arrays returning a figure; the numbers come
from :mod:`detector.inspection.report`. Boxes are ``(N, 4)`` xyxy in ``[0, 1]``: pixels over the image's
width and height, as the squash resize leaves them.
"""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, MaxNLocator

from detector.pictures.draw import box_colour

__all__ = ["anchor_coverage_figure", "box_shape_figure", "class_count_figure", "objects_per_image_figure"]

_LEGEND_CLASSES = 12  # more classes than this: one histogram of all boxes, no per-class lines


def class_count_figure(objects: np.ndarray, images: np.ndarray, class_names: Sequence[str], title: str) -> Figure:
    """Horizontal bars per class: ``objects (C,)`` boxes and ``images (C,)`` images holding one."""
    C = len(class_names)
    fig, ax = plt.subplots(figsize=(8, max(2.8, 0.45 * C + 1.6)))
    y = np.arange(C)
    for offset, values, label, colour in ((-0.2, objects, "objects", box_colour(0)), (0.2, images, "images with one", box_colour(10))):
        bars = ax.barh(y + offset, values, height=0.4, color=colour, edgecolor="black", lw=0.5, label=label)
        for bar, v in zip(bars, values):
            ax.text(bar.get_width(), bar.get_y() + bar.get_height() / 2, f" {int(v)}", va="center", fontsize=8)
    ax.set_yticks(y, list(class_names), fontsize=9)
    ax.invert_yaxis()  # the JSON's first category at the top
    ax.set_xlim(0, max(1, objects.max(initial=0)) * 1.15)
    ax.set(xlabel="count", title=title)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    fig.tight_layout()
    return fig


def box_shape_figure(
    boxes: np.ndarray, labels: np.ndarray, class_names: Sequence[str], image_size: int,
    anchor_wh: np.ndarray | None = None, title: str = "",
) -> Figure:
    """Four panels: histograms of box width and height over the image's (pixels at ``image_size``
    on the top axis), of the aspect ratio after the squash (log scale), and a width-height scatter
    with the anchors' ``(K, 2)`` distinct widths and heights ``anchor_wh`` marked."""
    wh = boxes[:, 2:] - boxes[:, :2]  # (N, 2)
    aspect = np.log2(wh[:, 1] / wh[:, 0])  # (N,)
    fig, axes = plt.subplots(2, 2, figsize=(11, 8.5))
    upper = min(1.0, float(np.ceil(wh.max(initial=0.1) * 10)) / 10)  # the axis ends at the next tenth above the largest
    for ax, values, what in ((axes[0, 0], wh[:, 0], "width"), (axes[0, 1], wh[:, 1], "height")):
        _class_histograms(ax, values, labels, class_names, np.linspace(0, upper, 41))
        ax.set(xlabel=f"box {what} / image {what}", ylabel="boxes", title=f"box {what}", xlim=(0, upper))
        top = ax.secondary_xaxis("top", functions=(lambda x: x * image_size, lambda p: p / image_size))
        top.set_xlabel(f"pixels at the {image_size} px input", fontsize=8)
    span = max(2.0, float(np.ceil(np.abs(aspect).max(initial=0))))
    ax = axes[1, 0]
    _class_histograms(ax, aspect, labels, class_names, np.linspace(-span, span, 41))
    ax.axvline(0, color="black", lw=0.8, ls=":")
    ax.xaxis.set_major_formatter(FuncFormatter(_ratio_text))
    ax.set(xlabel="height / width after the squash (log scale; > 1: tall)", ylabel="boxes", title="aspect ratio")
    ax = axes[1, 1]
    for c, name in enumerate(class_names):
        pick = labels == c
        if pick.any():
            ax.scatter(wh[pick, 0], wh[pick, 1], s=6, alpha=0.5, color=box_colour(c), label=name if len(class_names) <= _LEGEND_CLASSES else None)
    if anchor_wh is not None and len(anchor_wh):
        ax.scatter(anchor_wh[:, 0], anchor_wh[:, 1], marker="+", s=60, color="black", lw=1.2, label="anchor shapes")
    ax.set(xscale="log", yscale="log", xlabel="box width / image width (log)", ylabel="box height / image height (log)",
           title="width against height, and the anchors' shapes")
    ax.legend(fontsize=8, loc="lower right", markerscale=2)
    for ax in axes.flat:
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return fig


def objects_per_image_figure(counts: np.ndarray, title: str) -> Figure:
    """Bars: how many images hold 0, 1, 2, ... objects (``counts (I,)``: objects per image)."""
    fig, ax = plt.subplots(figsize=(7, 4))
    n = np.bincount(counts.astype(np.int64), minlength=1)
    bars = ax.bar(np.arange(len(n)), n, width=0.85, color=box_colour(0), edgecolor="black", lw=0.5)
    if len(n) <= 40:
        ax.bar_label(bars, [str(v) if v else "" for v in n], fontsize=7)
    mean = float(counts.mean()) if len(counts) else 0.0
    ax.axvline(mean, color="black", ls="--", lw=1, label=f"mean {mean:.1f}")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set(xlabel="objects in the image", ylabel="images", title=title)
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return fig


def anchor_coverage_figure(
    best_iou: np.ndarray, labels: np.ndarray, class_names: Sequence[str], iou_threshold: float, title: str
) -> Figure:
    """Left: histograms of each box's best IoU with any anchor (``best_iou (N,)``), the matching
    threshold marked; right: per class, the share of boxes no anchor covers (best IoU <= threshold:
    only the one anchor the matcher forces to them learns them)."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, max(4.5, 0.4 * len(class_names) + 2)), width_ratios=(3, 2))
    _class_histograms(left, best_iou, labels, class_names, np.linspace(0, 1, 41))
    left.axvline(iou_threshold, color="red", ls="--", lw=1.2, label=f"matching threshold {iou_threshold:g}")
    left.legend(fontsize=8, loc="upper left")
    left.set(xlabel="best IoU of the box with any anchor", ylabel="boxes", title="best anchor IoU per box", xlim=(0, 1))
    left.grid(alpha=0.3)
    missed = np.array([100 * float((best_iou[labels == c] <= iou_threshold).mean()) if (labels == c).any() else 0.0
                       for c in range(len(class_names))])
    totals = [int((labels == c).sum()) for c in range(len(class_names))]
    y = np.arange(len(class_names))
    bars = right.barh(y, missed, height=0.6, color=[box_colour(c) for c in y], edgecolor="black", lw=0.5)
    for bar, share, c in zip(bars, missed, y):
        right.text(bar.get_width(), bar.get_y() + bar.get_height() / 2,
                   f" {share:.1f} % of {totals[c]}", va="center", fontsize=8)
    right.axvline(1.0, color="black", ls=":", lw=1)
    right.set_yticks(y, list(class_names), fontsize=9)
    right.invert_yaxis()
    right.set_xlim(0, max(5.0, missed.max(initial=0) * 1.35))
    right.set(xlabel="% of the class's boxes (dotted: 1 %, anchors: auto's target)",
              title=f"boxes with no anchor at IoU > {iou_threshold:g}, per class")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def _class_histograms(ax: Axes, values: np.ndarray, labels: np.ndarray, class_names: Sequence[str], bins: np.ndarray) -> None:
    """All boxes as filled bars; with few classes, each class as a step line in its colour too."""
    ax.hist(values, bins=bins, color="lightgrey", edgecolor="grey", lw=0.5, label="all boxes")
    if 1 < len(class_names) <= _LEGEND_CLASSES:
        for c, name in enumerate(class_names):
            if (labels == c).any():
                ax.hist(values[labels == c], bins=bins, histtype="step", lw=1.5, color=box_colour(c), label=name)
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.legend(fontsize=8)


def _ratio_text(x: float, _: int) -> str:
    """A log2 tick as the ratio it stands for: -1 -> 1/2, 0 -> 1, 1.58 -> 3."""
    value = 2.0 ** x
    return f"{value:.3g}" if value >= 1 else f"1/{1 / value:.3g}"
