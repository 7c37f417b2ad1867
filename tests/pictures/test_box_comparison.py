"""Tighter boxes (issue 36): the side-by-side picture of two models' boxes over one image's ground
truth (:mod:`detector.pictures.box_comparison`)."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.patches import Rectangle

from detector.pictures import best_iou_per_object, box_comparison_figure


def _rectangles(ax) -> list[Rectangle]:
    return [p for p in ax.patches if isinstance(p, Rectangle)]


def test_best_iou_per_object_counts_only_detections_of_the_objects_class():
    target = {"boxes": torch.tensor([[10.0, 10, 50, 50], [60, 60, 90, 90]]), "labels": torch.tensor([0, 1])}
    prediction = {
        "boxes": torch.tensor([[10.0, 10, 50, 52], [60, 60, 90, 90], [5, 5, 60, 60]]),
        "labels": torch.tensor([0, 0, 0]),  # the exact box on object 1 has the wrong class
    }
    best = best_iou_per_object(prediction, target)
    torch.testing.assert_close(best, torch.tensor([1600 / 1680, 0.0]))
    empty = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)}
    assert best_iou_per_object(empty, target).tolist() == [0.0, 0.0]


def test_box_comparison_figure_draws_both_models_over_the_same_truth():
    image = np.zeros((100, 120, 3), np.uint8)
    target = {"boxes": np.array([[10.0, 10, 50, 50]]), "labels": np.array([0])}
    loose = {"boxes": torch.tensor([[5.0, 5, 60, 60], [70, 70, 90, 90]]), "labels": torch.tensor([0, 0]),
             "scores": torch.tensor([0.9, 0.3])}
    tight = {"boxes": torch.tensor([[10.0, 10, 50, 52]]), "labels": torch.tensor([0]), "scores": torch.tensor([0.8])}
    fig = box_comparison_figure(image, target, [loose, tight], ["old", "new"], ["thing"])
    left, right = fig.axes
    assert len(_rectangles(left)) == 1 + 2 and len(_rectangles(right)) == 1 + 1  # the truth, then the detections
    for ax in (left, right):
        truth = _rectangles(ax)[0]
        assert (truth.get_x(), truth.get_y(), truth.get_width(), truth.get_height()) == (10, 10, 40, 40)
        assert truth.get_linestyle() == "--"
    assert left.get_title().startswith("old\n") and f"{1600 / 3025:.3f}" in left.get_title()
    assert right.get_title().startswith("new\n") and f"{1600 / 1680:.3f}" in right.get_title()
    assert "IoU 0.53" in [t.get_text() for t in left.texts] and "IoU 0.95" in [t.get_text() for t in right.texts]
    plt.close(fig)
