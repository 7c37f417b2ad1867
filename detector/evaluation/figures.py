"""The pictures of a results folder, as users of ultralytics look for them: precision-recall
curves, F1 against the score threshold, the detection confusion matrix, and the training curves
of a run's CSV log (ultralytics' ``results.png``). Each is a pure function returning a figure;
the numbers come from :mod:`detector.evaluation.curves` and the log, never from here.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from torch import Tensor

from detector.defaults import CONFUSION_IOU, PICTURE_SCORE
from detector.pictures.draw import _numpy, box_colour

if TYPE_CHECKING:
    from detector.evaluation.curves import F1Curves, PRCurves

__all__ = ["confusion_matrix_figure", "f1_curve_figure", "per_class_ap_figure", "pr_curve_figure", "training_curves_figure"]

_LEGEND_CLASSES = 25  # more classes than this: grey per-class lines without legend entries


def _class_style(c: int, legend: bool) -> dict[str, Any]:
    """A class's faint line: its :func:`box_colour` where the legend names it, else grey."""
    return {"color": box_colour(c), "alpha": 0.75} if legend else {"color": "grey", "alpha": 0.35}


def _class_legend(ax: Axes, entries: int) -> None:
    """The legend outside the axes on the right, in two columns beyond 20 entries."""
    ax.legend(
        loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=8, frameon=False,
        ncols=1 if entries <= 20 else 2, borderaxespad=0.0,
    )


def pr_curve_figure(
    curves: PRCurves, class_names: Sequence[str], ap: Sequence[float] | Tensor | np.ndarray | None = None
) -> Figure:
    """Precision against recall: each class's monotone envelope (faint, in its :func:`box_colour`,
    labelled with its AP; grey and unlabelled beyond 25 classes) and the all-classes curve (bold),
    whose areas are the APs.

    Args:
        curves: :func:`detector.evaluation.curves.pr_curves` of the split.
        class_names: ``C`` names.
        ap: ``(C,)`` AP per class for the labels and the title's mean (default: the curves' own
            areas, equal to ``voc_evaluate``'s ``voc_ap``); NaN (no objects) is written ``n/a``.

    Returns:
        A figure with one axes: a line per class with objects and one for all classes.
    """
    values = (curves.ap.numpy() if ap is None else _numpy(ap)).astype(float).reshape(-1)
    if not len(values) == len(curves.classes) == len(class_names):
        raise ValueError(f"{len(class_names)} class names, {len(curves.classes)} curves, {len(values)} AP values")
    legend = len(class_names) <= _LEGEND_CLASSES
    fig, ax = plt.subplots(figsize=(10 if legend else 8, 6))
    for c, (curve, name) in enumerate(zip(curves.classes, class_names)):
        text = "n/a" if math.isnan(values[c]) else f"{values[c]:.3f}"
        label = f"{name} {text}" if legend else None
        if curve.num_positives == 0 or len(curve.recall) == 0:
            ax.plot([], [], lw=1.2, label=label, **_class_style(c, legend))  # a legend entry, nothing to draw
            continue
        _plot_envelope(ax, curve.recall, curve.envelope, lw=1.2, label=label, **_class_style(c, legend))
    if not legend:
        ax.plot([], [], color="grey", lw=1.2, label=f"each of {len(class_names)} classes")
    if curves.all.num_positives and len(curves.all.recall):
        _plot_envelope(
            ax, curves.all.recall, curves.all.envelope, color="black", lw=3,
            label=f"all classes pooled {curves.all.ap:.3f}",
        )
    mean = float(np.nanmean(values)) if not np.isnan(values).all() else math.nan
    ax.set(xlim=(0, 1), ylim=(0, 1.02), xlabel="recall", ylabel="precision (monotone envelope)")
    ax.set_title(f"Precision-recall at IoU > {curves.iou_threshold:g}: mAP@{curves.iou_threshold:g} = {mean:.3f}")
    ax.grid(alpha=0.3)
    _class_legend(ax, len(class_names) + 1 if legend else 2)
    fig.tight_layout()
    return fig


def _plot_envelope(ax: Axes, recall: Tensor, envelope: Tensor, **kwargs: Any) -> None:
    """The envelope as the step function whose area is the AP: ``envelope[i]`` on
    ``(recall[i - 1], recall[i]]`` from recall 0, then down to 0 at the last recall."""
    x = np.concatenate([[0.0], recall.numpy(), recall.numpy()[-1:]])
    y = np.concatenate([envelope.numpy()[:1], envelope.numpy(), [0.0]])
    ax.plot(x, y, drawstyle="steps-pre", **kwargs)


def f1_curve_figure(curves: F1Curves, class_names: Sequence[str]) -> Figure:
    """F1 against the score threshold: each class faint in its :func:`box_colour` (grey and
    unlabelled beyond 25 classes), the mean over classes bold, its best threshold marked and stated
    in the legend.

    Args:
        curves: :func:`detector.evaluation.curves.f1_curves` of the split.
        class_names: ``C`` names.

    Returns:
        A figure with one axes: a line per class with objects, the mean, the best threshold.
    """
    f1 = curves.f1.numpy()  # (C, T)
    if len(f1) != len(class_names):
        raise ValueError(f"{len(class_names)} class names but {len(f1)} F1 curves")
    thresholds = curves.thresholds.numpy()  # (T,)
    legend = len(class_names) <= _LEGEND_CLASSES
    fig, ax = plt.subplots(figsize=(10 if legend else 8, 6))
    for c, name in enumerate(class_names):
        label = (name if not np.isnan(f1[c]).all() else f"{name} n/a") if legend else None
        ax.plot(thresholds, f1[c], lw=1.2, label=label, **_class_style(c, legend))
    if not legend:
        ax.plot([], [], color="grey", lw=1.2, label=f"each of {len(class_names)} classes")
    if not math.isnan(curves.best_f1):
        ax.plot(thresholds, curves.mean_f1.numpy(), color="black", lw=3, label="mean over classes")
        ax.axvline(curves.best_threshold, color="black", ls="--", lw=1)
        ax.plot(
            [curves.best_threshold], [curves.best_f1], "o", color="red", ms=8,
            label=f"best: F1 {curves.best_f1:.3f} at score {curves.best_threshold:.3f}",
        )
    ax.set(xlim=(0, 1), ylim=(0, 1.02), xlabel="score threshold (detections with score >= it)", ylabel="F1")
    ax.set_title(f"F1 against the score threshold, IoU > {curves.iou_threshold:g}")
    ax.grid(alpha=0.3)
    _class_legend(ax, len(class_names) + 2 if legend else 3)
    fig.tight_layout()
    return fig


def confusion_matrix_figure(
    matrix: Tensor | np.ndarray,
    class_names: Sequence[str],
    normalise: bool = True,
    score_threshold: float = PICTURE_SCORE,
    iou_threshold: float = CONFUSION_IOU,
) -> Figure:
    """The detection confusion matrix as a heat map with its values written in the cells.

    Args:
        matrix: ``(C + 1, C + 1)`` counts from :func:`detector.evaluation.curves.confusion_matrix`: rows the
            predicted class, columns the true class, the last of each "background".
        class_names: ``C`` names.
        normalise: divide each column by its sum (the fractions of a true class, or of the
            invented detections in the background column); otherwise counts.
        score_threshold, iou_threshold: the matrix's, for the title.

    Returns:
        A figure with the matrix's axes and a colour bar; cells below 0.005 (or 0) stay blank.
    """
    counts = _numpy(matrix).astype(float)
    n = len(class_names) + 1
    if counts.shape != (n, n):
        raise ValueError(f"{n - 1} class names need a ({n}, {n}) matrix, got {counts.shape}")
    if normalise:
        totals = counts.sum(0, keepdims=True)  # (1, C + 1) per true class
        values = np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)
    else:
        values = counts
    side = min(14.0, max(6.0, 0.42 * n + 2.5))  # inches; beyond ~27 classes the cells shrink instead
    tick_size = min(8.0, 0.75 * (side - 2.5) * 72 / n)  # points: a label per cell without overlap
    fig, ax = plt.subplots(figsize=(side + 1.2, side))
    image = ax.imshow(values, cmap="Blues", vmin=0, vmax=1 if normalise else max(values.max(), 1))
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.03, label="fraction of the true class" if normalise else "count")
    if n <= 31:  # writing in cells smaller than the digits helps nobody
        fontsize = 8 if n <= 21 else 6
        limit = 0.5 * (1 if normalise else max(values.max(), 1))
        for (i, j), v in np.ndenumerate(values):
            if v >= 0.005:
                text = f"{v:.2f}" if normalise else f"{int(v)}"
                colour = "white" if v > limit else "black"  # readable on dark cells
                ax.text(j, i, text, ha="center", va="center", fontsize=fontsize, color=colour)
    names = [*class_names, "background"]
    ax.set_xticks(range(n), names, rotation=90, fontsize=tick_size)
    ax.set_yticks(range(n), names, fontsize=tick_size)
    ax.axhline(n - 1.5, color="grey", lw=1)
    ax.axvline(n - 1.5, color="grey", lw=1)
    ax.set(xlabel="true class", ylabel="predicted class")
    kind = "normalised by true class" if normalise else "counts"
    ax.set_title(f"Confusion matrix ({kind})\nscore > {score_threshold:g}, IoU > {iou_threshold:g}", fontsize=11)
    fig.tight_layout()
    return fig


# (title, y label, x column, [(column, line label)]); lr columns are found by their prefix.
_PANELS = [
    ("loss", "loss", "epoch", [("train/loss_epoch", "train"), ("val/loss", "val")]),
    ("localisation loss", "loss", "epoch", [("train/loc_epoch", "train"), ("val/loc", "val")]),
    ("classification loss", "loss", "epoch", [("train/cls_epoch", "train"), ("val/cls", "val")]),
    ("mAP@0.5", "AP", "epoch", [("val/map_50", "COCO, 101 points"), ("val/voc_map_50", "VOC, all points")]),
    ("COCO mAP@[.5:.95]", "AP", "epoch", [("val/map", "val")]),
]


def _read_log(log: str | Path | Sequence[Mapping[str, Any]]) -> list[dict[str, float]]:
    """Rows of a Lightning CSV log as ``{column: float}``, without the empty cells."""
    if isinstance(log, (str, Path)):
        with open(log, newline="") as f:
            log = list(csv.DictReader(f))
    return [{k: float(v) for k, v in row.items() if v not in ("", None)} for row in log]


def _series(rows: list[dict[str, float]], x: str, y: str) -> tuple[np.ndarray, np.ndarray]:
    """``(x, y)`` of the rows holding both, sorted by ``x``; a repeated ``x`` keeps its last value."""
    points = {row[x]: row[y] for row in rows if x in row and y in row}
    xs = np.array(sorted(points))
    return xs, np.array([points[v] for v in xs])


def training_curves_figure(log: str | Path | Sequence[Mapping[str, Any]]) -> Figure:
    """A run's curves in small panels, ultralytics' ``results.png`` in spirit: the loss terms,
    mAP@0.5 and COCO mAP against the epoch, and each layer group's learning rate against the step.

    Args:
        log: a Lightning ``metrics.csv`` (path) or its rows (``{column: value}``, an empty string
            or ``None`` for no value): ``epoch``, ``step``, ``train/loss_epoch``, ``train/loc_epoch``,
            ``train/cls_epoch``, ``val/loss``, ``val/map_50``, ``val/voc_map_50``, ``val/map`` and
            ``LearningRateMonitor``'s ``lr-<Optimizer>/<group>``. Rows are sparse; a panel whose
            columns are all absent is left out, and so is a line.

    Returns:
        A figure of up to six panels, three to a row; mAP lines are labelled with their best value.

    Raises:
        ValueError: none of those columns holds a value.
    """
    rows = _read_log(log)
    columns = {k for row in rows for k in row}
    panels = []  # (title, y label, x column, [(x, y, label)], log scale)
    for title, ylabel, x, lines in _PANELS:
        drawn = [(*_series(rows, x, y), label) for y, label in lines if y in columns]
        drawn = [d for d in drawn if len(d[0])]
        if drawn:
            panels.append((title, ylabel, x, drawn, False))
    lr_columns = sorted(k for k in columns if k.startswith("lr-"))
    lrs = [(*_series(rows, "step", k), k.split("/", 1)[-1]) for k in lr_columns]
    lrs = [d for d in lrs if len(d[0])]
    if lrs:
        optimisers = sorted({k[3:].split("/", 1)[0] for k in lr_columns})
        panels.append((f"learning rate ({', '.join(optimisers)})", "learning rate", "step", lrs, True))
    if not panels:
        raise ValueError(f"no training curves to draw: the log has none of the known columns, only {sorted(columns)}")

    ncols = min(3, len(panels))
    nrows = math.ceil(len(panels) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.6 * ncols, 3.4 * nrows), squeeze=False)
    for ax, (title, ylabel, x, lines, log_scale) in zip(axes.flat, panels):
        for k, (xs, ys, label) in enumerate(lines):
            if ylabel == "AP":
                label = f"{label} (best {np.nanmax(ys):.3f})" if not np.isnan(ys).all() else f"{label} (n/a)"
            ax.plot(xs, ys, marker="o" if len(xs) < 30 else None, ms=3, lw=1.5, color=box_colour(k), label=label)
        ax.set(title=title, xlabel=x, ylabel=ylabel)
        if log_scale:
            ax.set_yscale("log")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    for ax in list(axes.flat)[len(panels):]:
        ax.set_axis_off()
    fig.suptitle("Training curves", fontsize=12)
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
