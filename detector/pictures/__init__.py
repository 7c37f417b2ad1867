"""The package's figures but the results folder's: drawing primitives, the lesson's five pictures,
the data report's charts, the learning-rate range test. Only figure modules import matplotlib
(here and :mod:`detector.evaluation.figures`), lazily, where a picture is wanted.

- :mod:`~detector.pictures.draw`: boxes and labels with outlines, image grids, saving;
- :mod:`~detector.pictures.lesson`: ground truth, anchors, matches, raw predictions, detections;
- :mod:`~detector.pictures.report`: the data report's charts (classes, box shapes, anchor coverage);
- :mod:`~detector.pictures.charts`: the learning-rate range test;
- :mod:`~detector.pictures.comparison`: ``detector compare``'s tables, seeds and intervals.
"""

import lazy_loader as _lazy

__getattr__, __dir__, __all__ = _lazy.attach(__name__, submod_attrs={
    "charts": ["lr_finder_figure"],
    "comparison": ["comparison_figure"],
    "draw": ["box_colour", "denormalize", "draw_boxes", "draw_label_text", "figure_to_array", "image_grid",
             "save_figure", "show_boxes", "show_labels"],
    "lesson": ["anchor_figure", "detection_grid", "ground_truth_grid", "match_grid", "raw_prediction_grid",
               "top_raw_predictions"],
})
