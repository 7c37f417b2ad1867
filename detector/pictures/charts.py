"""The learning-rate range test's curve."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
from matplotlib.figure import Figure

__all__ = ["lr_finder_figure"]


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
