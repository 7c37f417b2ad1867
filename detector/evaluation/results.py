"""A results folder, the pictures a person looks at after a run (ultralytics' run folder, in spirit):

    PR_curve.png                     precision-recall per class and for all classes at IoU 0.5
                                     (the area under each is the AP printed beside it)
    F1_curve.png                     F1 against the score threshold, the best threshold marked
    confusion_matrix.png             detections against ground truth, classes plus background, counts
    confusion_matrix_normalized.png  the same, each true class's column summing to 1
    per_class_ap.png                 a bar per class
    predictions.png                  the first images, predictions against ground truth (when given)
    results.png                      the training curves from the CSV log (after a fit)
    errors.png                       the AP each kind of error costs (TIDE's dAP@0.5, :mod:`~detector.evaluation.errors`)
    errors_per_image.csv             per image: id, file name, TP, FP (and by kind), FN at IoU 0.5 and
                                     the picture threshold (score >= 0.25 by default), the most errors first
    worst_images.png                 the images with the most FP + FN, TP / FP / FN boxes in three
                                     colours (when the images' files are given)
    metrics.json                     the numbers (:func:`detector.evaluation.evaluator.summarize`),
                                     the error analysis under ``errors``

``detector eval`` writes one into ``runs/NAME/vN/results/SPLIT``, and a fit after its last
validation into ``runs/NAME/vN/results/val``. Everything is computed from one split's detections
and ground truth (the same per-image dicts :class:`detector.evaluation.metrics.DetectionMetrics` holds).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torch import Tensor

from detector.defaults import CONFUSION_IOU, PICTURE_SCORE
from detector.evaluation.errors import FP_KINDS, ErrorAnalysis, analyse_errors

if TYPE_CHECKING:
    from detector.data.records import Record

__all__ = ["SplitImages", "error_files", "predictions_figure", "result_figures", "write_results"]

WORST_IMAGES = 8
"""Images in ``worst_images.png`` (as many as ``predictions.png`` shows)."""


@dataclass(frozen=True)
class SplitImages:
    """The evaluated images, in the order of the detections: ``ids`` (the JSON's image ids),
    ``file_names`` (as the JSON names them) and ``paths`` (the files, to draw them)."""

    ids: list[int]
    file_names: list[str]
    paths: list[Path]

    @classmethod
    def of(cls, image_ids: Sequence[int], records: Sequence[Record], image_dir: str | Path) -> SplitImages:
        """The images ``image_ids`` of a split's ``records``, file names relative to ``image_dir``."""
        by_id = {r.image_id: r for r in records}
        paths = [by_id[i].path for i in image_ids]

        def name(path: Path) -> str:
            try:
                return path.relative_to(image_dir).as_posix()
            except ValueError:
                return str(path)

        return cls(list(image_ids), [name(p) for p in paths], paths)



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


def error_files(
    out: Path,
    analysis: ErrorAnalysis,
    detections: list[dict[str, Tensor]],
    ground_truths: list[dict[str, Tensor]],
    class_names: Sequence[str],
    images: SplitImages | None = None,
    score_threshold: float = PICTURE_SCORE,
) -> list[Path]:
    """``errors_per_image.csv``, ``errors.png`` and (with ``images``) ``worst_images.png`` in
    ``out``. The CSV's rows: the most FP + FN first, then the most FN, then the split's order;
    without ``images``, ``image_id`` is the image's position and ``file_name`` empty."""
    from detector.data.image import load_image
    from detector.evaluation.error_figures import errors_figure, worst_images_figure
    from detector.pictures import save_figure

    rows = analysis.image_counts(score_threshold)
    ids = images.ids if images is not None else list(range(len(rows)))
    names = images.file_names if images is not None else [""] * len(rows)
    order = sorted(range(len(rows)), key=lambda i: (-(rows[i]["fp"] + rows[i]["fn"]), -rows[i]["fn"], i))
    columns = ["image_id", "file_name", "errors", "tp", "fp", "fn", "objects", "detections", *FP_KINDS]
    with open(out / "errors_per_image.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(columns)
        for i in order:
            r = rows[i]
            writer.writerow([ids[i], names[i], r["fp"] + r["fn"], *(r[c] for c in columns[3:])])
    written = [out / "errors_per_image.csv"]
    written.append(save_figure(errors_figure(analysis), out / "errors.png", dpi=100))
    if images is not None:
        worst = [i for i in order[:WORST_IMAGES] if rows[i]["fp"] + rows[i]["fn"] > 0]
        fig = worst_images_figure(
            [load_image(images.paths[i]) for i in worst], [detections[i] for i in worst], [ground_truths[i] for i in worst],
            [analysis.images[i] for i in worst], class_names, score_threshold, analysis.iou,
            titles=[f"{Path(names[i]).name} (id {ids[i]})" for i in worst],
        )
        written.append(save_figure(fig, out / "worst_images.png", dpi=100))
    return written


def write_results(
    out: str | Path,
    detections: list[dict[str, Tensor]],
    ground_truths: list[dict[str, Tensor]],
    class_names: Sequence[str],
    summary: dict[str, Any] | None = None,
    log: str | Path | None = None,
    predictions: Any = None,
    images: SplitImages | None = None,
    errors: ErrorAnalysis | None = None,
    score_threshold: float = PICTURE_SCORE,
) -> list[Path]:
    """Write the results folder ``out`` (module docstring); ``log``: a CSV log for ``results.png``;
    ``predictions``: a ready Figure for ``predictions.png``; ``images``: the images' ids, names and
    files (the CSV names them, ``worst_images.png`` draws them); ``errors``: the split's
    :func:`~detector.evaluation.errors.analyse_errors` if already made; ``score_threshold``: the
    detections counted per image and drawn (the model's picture threshold). ``summary`` gets the
    analysis under ``errors`` (:meth:`ErrorAnalysis.as_dict`). Returns the files written."""
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
    if errors is None:
        errors = analyse_errors(detections, ground_truths, len(class_names))
    written += error_files(out, errors, detections, ground_truths, class_names, images, score_threshold)
    if summary is not None:
        summary["errors"] = errors.as_dict(score_threshold)
        (out / "metrics.json").write_text(json.dumps(summary, indent=2) + "\n")
        written.append(out / "metrics.json")
    return written
