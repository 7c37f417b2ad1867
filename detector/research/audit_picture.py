"""The audit's picture: the images of the worst-ranked issues of each kind, each with its flagged box drawn
thick in red over the other labels (green, named) and the held-out predictions above the
picture threshold (dashed blue), so that a person can judge each flag at a glance."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from matplotlib.figure import Figure

from detector.defaults import PICTURE_SCORE
from detector.pictures.draw import draw_boxes, image_grid
from detector.research.label_issues import KINDS, ImageBoxes, Issue, worst_of_kind

__all__ = ["LABEL_COLOUR", "PREDICTION_COLOUR", "FLAG_COLOUR", "issue_grid", "worst_images"]

LABEL_COLOUR, PREDICTION_COLOUR, FLAG_COLOUR = "limegreen", "deepskyblue", "red"


def worst_images(issues: Sequence[Issue], n: int) -> list[tuple[int, Issue, str, float]]:
    """Up to ``n`` images, each as ``(rank in issues, issue, kind, its score of that kind)``: the
    worst image of each kind by its own score (:func:`worst_of_kind`: swap, badloc, overlooked)
    in turn, then the next worst of each, so that every kind found is shown."""
    queues = [[(rank, issue, kind, score) for rank, issue, score in worst_of_kind(issues, kind)] for kind in KINDS]
    queues = [q for q in queues if q]
    seen: dict[int, tuple[int, Issue, str, float]] = {}
    positions = [0] * len(queues)
    while len(seen) < n and any(p < len(q) for p, q in zip(positions, queues)):
        for i, queue in enumerate(queues):
            while positions[i] < len(queue) and queue[positions[i]][1].image_id in seen:
                positions[i] += 1
            if positions[i] < len(queue) and len(seen) < n:
                seen[queue[positions[i]][1].image_id] = queue[positions[i]]
    return list(seen.values())


def _caption(issue: Issue, kind: str, score: float) -> str:
    if kind == "overlooked":
        return f"overlooked {score:.2f}: unlabelled {issue.cls} ({issue.predicted_score:.2f})"
    seen = f"; model: {issue.predicted} {issue.predicted_score:.2f}" if issue.predicted else "; model: nothing"
    return f"{kind} {score:.2f}: {issue.cls}{seen}"


def issue_grid(
    issues: Sequence[Issue],
    labels: dict[int, ImageBoxes],
    predictions: dict[int, ImageBoxes],
    class_names: Sequence[str],
    load: Callable[[int], np.ndarray],
    n: int = 16,
    ncols: int = 4,
    size: float = 4.5,
) -> Figure:
    """A grid of the :func:`worst_images` (``n`` at most). ``labels`` and ``predictions``: each
    image's boxes by image id, in pixels; ``load(image_id)``: its ``(H, W, 3)`` uint8 pixels.

    Returns a figure whose panel ``i`` holds, in this order, the image's labelled boxes, its
    predictions above the picture threshold, and the flagged box (tests count them)."""
    worst = worst_images(issues, n)
    fig, axes = image_grid(max(len(worst), 1), ncols, size)
    if not worst:
        axes[0].text(0.5, 0.5, "no box looks mislabelled", ha="center", va="center", transform=axes[0].transAxes)
        return fig
    for ax, (rank, issue, kind, score) in zip(axes, worst):
        ax.imshow(load(issue.image_id))
        lab, pred = labels[issue.image_id], predictions[issue.image_id]
        draw_boxes(ax, lab.boxes, lab.labels, class_names, colours=[LABEL_COLOUR] * len(lab.boxes), linewidth=1.0, fontsize=6)
        shown = pred.scores > PICTURE_SCORE
        draw_boxes(ax, pred.boxes[shown], colours=[PREDICTION_COLOUR] * int(shown.sum()), linestyle="--", linewidth=1.0)
        flag = np.array([[issue.x1, issue.y1, issue.x2, issue.y2]])
        draw_boxes(ax, flag, colours=[FLAG_COLOUR], linewidth=3.0, linestyle="--" if kind == "overlooked" else "-")
        ax.set_title(f"#{rank} {issue.file}\n{_caption(issue, kind, score)}", fontsize=8)
    fig.suptitle(
        f"the worst images of each kind of issue: flagged box red (dashed: a missing label), labels green, "
        f"held-out predictions above {PICTURE_SCORE} dashed blue",
        fontsize=10,
    )
    fig.tight_layout()
    return fig
