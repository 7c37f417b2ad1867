"""Every picture the package draws; the only place that imports matplotlib (so import this package
lazily, where a picture is wanted).

- :mod:`~detector.pictures.draw`: boxes and labels with outlines, one image at its own size, saving;
- :mod:`~detector.pictures.lesson`: the five pictures of the lesson's method (ground truth, anchors,
  matches, raw predictions, detections);
- :mod:`~detector.pictures.charts`: per-class AP bars, the learning-rate range test;
- :mod:`~detector.pictures.results`: a results folder's PR and F1 curves, confusion matrix and
  training curves.
"""

from detector.pictures.charts import lr_finder_figure, per_class_ap_figure
from detector.pictures.draw import (
    box_colour,
    denormalize,
    draw_boxes,
    draw_label_text,
    figure_to_array,
    image_grid,
    save_figure,
    show_boxes,
    show_labels,
)
from detector.pictures.lesson import (
    anchor_figure,
    detection_grid,
    ground_truth_grid,
    match_grid,
    raw_prediction_grid,
    top_raw_predictions,
)
from detector.pictures.results import (
    confusion_matrix_figure,
    f1_curve_figure,
    pr_curve_figure,
    training_curves_figure,
)

__all__ = [
    "anchor_figure",
    "box_colour",
    "confusion_matrix_figure",
    "denormalize",
    "detection_grid",
    "draw_boxes",
    "draw_label_text",
    "f1_curve_figure",
    "figure_to_array",
    "ground_truth_grid",
    "image_grid",
    "lr_finder_figure",
    "match_grid",
    "per_class_ap_figure",
    "pr_curve_figure",
    "raw_prediction_grid",
    "save_figure",
    "show_boxes",
    "show_labels",
    "top_raw_predictions",
    "training_curves_figure",
]
