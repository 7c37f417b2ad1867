"""``detector compare``'s picture: per metric, its table, every seed's value per side, and each
side's difference from A with its bootstrap interval against the line of no difference."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
from matplotlib.figure import Figure

__all__ = ["comparison_figure"]

# (title, header, rows, per side the values per seed, per side after A (difference, low, high, shown), verdicts)
Table = tuple[str, Sequence[str], Sequence[Sequence[str]], Sequence[Sequence[float]], Sequence[tuple[float, float, float, int]], Sequence[str]]

_SHOWN = {1: "tab:green", -1: "tab:red", 0: "tab:grey"}


def comparison_figure(tables: Sequence[Table], title: str) -> Figure:
    """One row per metric: the table (a row per side), the seeds' values per side (dots; the mean
    as a bar), and the differences from A with their intervals (green: better, red: worse, grey: no
    difference shown), each row titled with its verdicts."""
    sides = len(tables[0][2])
    height = 1.0 + 0.35 * sides + 0.2 * (sides - 1)  # the table and a line of title per verdict
    fig = plt.figure(figsize=(15, len(tables) * (height + 0.9) + 0.6))
    grid = fig.add_gridspec(len(tables), 3, width_ratios=[3.3, 1.2, 1.4], hspace=0.9, wspace=0.3, left=0.02, right=0.98)
    for i, (name, header, rows, per_seed, intervals, verdicts) in enumerate(tables):
        ax = fig.add_subplot(grid[i, 0])
        ax.axis("off")
        cells = ax.table(cellText=[list(r) for r in rows], colLabels=list(header), loc="center", cellLoc="left")
        cells.auto_set_font_size(False)
        cells.set_fontsize(9.5)
        cells.auto_set_column_width(list(range(len(header))))
        cells.scale(1, 1.5)
        ax.set_title(f"{name}:  " + "\n".join(verdicts), loc="left", fontsize=10, fontweight="bold")

        ax = fig.add_subplot(grid[i, 1])
        labels = [r[0] for r in rows]
        for k, values in enumerate(per_seed):
            ax.plot(values, [k] * len(values), "o", color="tab:blue", alpha=0.6, ms=5)
            mean = sum(values) / len(values)
            ax.plot([mean, mean], [k - 0.3, k + 0.3], color="black", lw=2)
        ax.set(yticks=range(len(labels)), yticklabels=labels, ylim=(len(labels) - 0.5, -0.5), xlabel=f"{name} per seed")
        ax.grid(axis="x", alpha=0.3)

        ax = fig.add_subplot(grid[i, 2])
        for k, (difference, low, high, shown) in enumerate(intervals, 1):
            colour = _SHOWN[shown]
            ax.plot([low, high], [k, k], color=colour, lw=3)
            ax.plot([difference], [k], "o", color=colour, ms=7)
        ax.axvline(0, color="black", lw=1, ls="--")
        ax.set(yticks=range(1, len(labels)), yticklabels=[f"{x} - {labels[0]}" for x in labels[1:]],
               ylim=(len(labels) - 0.5, 0.5), xlabel="difference, 95 % interval")
        ax.grid(axis="x", alpha=0.3)
    fig.suptitle(title, fontsize=11, x=0.01, ha="left")
    return fig
