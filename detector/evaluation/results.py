"""A results folder, the pictures a person looks at after a run (ultralytics' run folder, in spirit):

    PR_curve.png                     precision-recall per class and for all classes at IoU 0.5
                                     (the area under each is the AP printed beside it)
    F1_curve.png                     F1 against the score threshold, the best threshold marked
    confusion_matrix.png             detections against ground truth, classes plus background, counts
    confusion_matrix_normalized.png  the same, each true class's column summing to 1
    per_class_ap.png                 a bar per class
    predictions.png                  the first images, predictions against ground truth (when given)
    results.png                      the training curves from the CSV log (after a fit)
    metrics.json                     the numbers (:func:`detector.evaluation.evaluator.summarize`)

``detector eval`` writes one into ``runs/NAME/vN/results/SPLIT``, and a fit after its last
validation into ``runs/NAME/vN/results/val``. Everything is computed from one split's detections
and ground truth (the same per-image dicts :class:`detector.evaluation.metrics.DetectionMetrics` holds).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from torch import Tensor

from detector.defaults import CONFUSION_IOU, PICTURE_SCORE

__all__ = ["predictions_figure", "result_figures", "write_results"]



FIGURES = ("PR_curve", "F1_curve", "confusion_matrix", "confusion_matrix_normalized", "per_class_ap")


def result_figures(
    detections: list[dict[str, Tensor]], ground_truths: list[dict[str, Tensor]], class_names: Sequence[str],
    names: Sequence[str] = FIGURES,
) -> dict[str, Any]:
    """``{file stem: Figure}`` of the curves, the confusion matrices and the per-class AP; only those
    in ``names`` are computed and drawn (each validation logs two of them)."""
    from detector.evaluation.curves import confusion_matrix, f1_curves, pr_curves
    from detector.evaluation.figures import confusion_matrix_figure, f1_curve_figure, per_class_ap_figure, pr_curve_figure

    C = len(class_names)
    pr = pr_curves(detections, ground_truths, C) if {"PR_curve", "per_class_ap"} & set(names) else None
    confusion = {"confusion_matrix", "confusion_matrix_normalized"} & set(names)
    matrix = confusion_matrix(detections, ground_truths, C, PICTURE_SCORE, CONFUSION_IOU) if confusion else None
    draw = {
        "PR_curve": lambda: pr_curve_figure(pr, class_names),
        "F1_curve": lambda: f1_curve_figure(f1_curves(detections, ground_truths, C), class_names),
        "confusion_matrix": lambda: confusion_matrix_figure(matrix, class_names, False, PICTURE_SCORE, CONFUSION_IOU),
        "confusion_matrix_normalized": lambda: confusion_matrix_figure(matrix, class_names, True, PICTURE_SCORE, CONFUSION_IOU),
        "per_class_ap": lambda: per_class_ap_figure(class_names, pr.ap, title="AP@0.5 per class (VOC all-point)"),
    }
    return {name: draw[name]() for name in names}


def predictions_figure(
    images: Sequence[Any], detections: list[dict[str, Tensor]], ground_truths: list[dict[str, Tensor]],
    class_names: Sequence[str], score_threshold: float,
) -> Any:
    """A grid of ``(H, W, 3)`` uint8 ``images`` with their detections scoring at least
    ``score_threshold`` (solid) and their ground truth (dashed), boxes in those images' pixels."""
    from detector.pictures import detection_grid

    shown = [{k: v[d["scores"] >= score_threshold] for k, v in d.items()} for d in detections[: len(images)]]
    fig = detection_grid(list(images), shown, ground_truths[: len(images)], class_names)
    fig.suptitle(f"detections scoring at least {score_threshold:g} (solid) and ground truth (dashed)", fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    return fig


def write_results(
    out: str | Path,
    detections: list[dict[str, Tensor]],
    ground_truths: list[dict[str, Tensor]],
    class_names: Sequence[str],
    summary: dict[str, Any] | None = None,
    log: str | Path | None = None,
    predictions: Any = None,
) -> list[Path]:
    """Write the results folder ``out`` (module docstring); ``log``: a CSV log for ``results.png``;
    ``predictions``: a ready Figure for ``predictions.png``. Returns the files written."""
    from detector.evaluation.figures import training_curves_figure
    from detector.pictures import save_figure

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    figures = result_figures(detections, ground_truths, class_names)
    if predictions is not None:
        figures["predictions"] = predictions
    if log is not None and Path(log).is_file():
        figures["results"] = training_curves_figure(log)
    written = [save_figure(fig, out / f"{name}.png", dpi=100) for name, fig in figures.items()]
    if summary is not None:
        (out / "metrics.json").write_text(json.dumps(summary, indent=2) + "\n")
        written.append(out / "metrics.json")
    return written
