"""Charts of a run's numbers: per-class AP bars and the learning-rate range test's curve."""

from __future__ import annotations

import math
from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure
from torch import Tensor

from detector.pictures.draw import _numpy, box_colour

__all__ = ["lr_finder_figure", "per_class_ap_figure"]


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


def lr_finder_figure(lrs: Sequence[float], losses: Sequence[float], suggestion: float) -> Figure:
    """The learning-rate range test: smoothed loss against the head's learning rate (log x axis),
    the suggestion marked."""
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(lrs, losses)
    ax.axvline(suggestion, color="red", ls="--", label=f"suggestion {suggestion:.2e}")
    ax.set(xscale="log", xlabel="head learning rate (body groups at lr * lr_mult)", ylabel="smoothed loss")
    ax.legend()
    fig.tight_layout()
    return fig
