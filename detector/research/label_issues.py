"""Boxes likely mislabelled, missing or misplaced, ranked by cleanlab's object-detection scores
(ObjectLab, Tkachenko et al. 2023) from held-out predictions.

cleanlab's inputs (``cleanlab.object_detection``): per image, the labels as ``{"bboxes": (L, 4)
xyxy, "labels": (L,), "image_name": str}`` and the predictions as a list over the classes of
``(M_k, 5)`` arrays ``[x1, y1, x2, y2, score]``. Its scores are in ``[0, 1]``, lower = more likely
wrong, one per box and kind of issue:

- ``swap`` (per labelled box): a confident prediction of *another* class sits on it: the class is wrong;
- ``badloc`` (per labelled box): the predictions of its own class sit beside it: the box is misplaced;
- ``overlooked`` (per confident predicted box): a confident prediction that overlaps no labelled
  box at all: an object is missing from the labels.

Each labelled box becomes one row scored by the lower of its swap and badloc scores (its ``issue``
is that kind, ``none`` when both are 1), each overlooked prediction one row; the rows are sorted
worst first. Each image also gets cleanlab's image score (:func:`get_label_quality_scores`) and
flag (:func:`find_label_issues`).

cleanlab's two thresholds assume calibrated probabilities: a prediction above 0.95 is confident
(it can flag a swap or a missing box), one above 0.5 counts for a misplaced box. A focal-loss SSD
scores far lower (on BCCD no held-out detection of a 10-epoch fold model reached 0.92; half its
correct ones scored below 0.38), so at cleanlab's thresholds swaps and missing boxes are never
found. :func:`model_thresholds` scales them to the model instead: ``high`` is the score a quarter
of the held-out true positives stay below, ``low`` the one a twentieth stay below
(``--high-score`` / ``--low-score`` set them by hand; ``tools/label_noise.py`` measures what a
choice finds on planted errors).
"""

from __future__ import annotations

import csv
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import torch
from cleanlab.object_detection.filter import find_label_issues
from cleanlab.object_detection.rank import (
    compute_badloc_box_scores,
    compute_overlooked_box_scores,
    compute_swap_box_scores,
    get_label_quality_scores,
)
from torchvision.ops import box_iou

from detector.defaults import PICTURE_SCORE

__all__ = [
    "CLEANLAB_HIGH_SCORE", "CLEANLAB_LOW_SCORE", "KINDS", "ImageBoxes", "Issue", "model_thresholds", "rank_issues",
    "read_issues", "true_positive_scores", "worst_of_kind", "write_issues",
]

KINDS = ("swap", "badloc", "overlooked")  # cleanlab's kinds of issue, in the order the printout and the picture show them

CLEANLAB_HIGH_SCORE = 0.95  # cleanlab's HIGH_PROBABILITY_THRESHOLD: a prediction this confident can flag a swap or a missing box
CLEANLAB_LOW_SCORE = 0.5  # cleanlab's LOW_PROBABILITY_THRESHOLD: predictions above it can flag a misplaced box


@dataclass
class ImageBoxes:
    """One image's boxes in its pixels: labels (``ann_ids`` set) or predictions (``scores`` set).

    Attributes:
        boxes: ``(N, 4)`` float xyxy pixels.
        labels: ``(N,)`` int class indices.
        scores: ``(N,)`` float, predictions only.
        ann_ids: ``(N,)`` int annotation ids, labels only.
    """

    image_id: int
    file: str
    boxes: np.ndarray
    labels: np.ndarray
    scores: np.ndarray | None = None
    ann_ids: np.ndarray | None = None


@dataclass
class Issue:
    """One row of the audit's CSV: a labelled box (``annotation_id`` set) or a prediction that no
    label covers (``issue == "overlooked"``, ``annotation_id`` None, ``cls`` the predicted class).

    ``score`` is the row's cleanlab score (lower = more likely wrong); ``swap`` and ``badloc`` a
    labelled box's two scores; ``predicted`` / ``predicted_score`` / ``iou``: the held-out
    prediction above the picture threshold that overlaps the box most (empty when none does);
    ``image_score`` and ``image_flagged``: cleanlab's verdict on the whole image."""

    image_id: int
    file: str
    annotation_id: int | None
    x1: float
    y1: float
    x2: float
    y2: float
    cls: str
    issue: str
    score: float
    swap: float | None
    badloc: float | None
    predicted: str | None
    predicted_score: float | None
    iou: float | None
    image_score: float
    image_flagged: bool


def _cleanlab_inputs(labels: Sequence[ImageBoxes], predictions: Sequence[ImageBoxes], num_classes: int):
    """cleanlab's labels and predictions (module docstring), and each image's predictions in the
    order cleanlab flattens them (class by class): the order of its overlooked scores."""
    cl_labels, cl_predictions, order = [], [], []
    for lab, pred in zip(labels, predictions):
        cl_labels.append({"bboxes": lab.boxes.astype(np.float64).reshape(-1, 4), "labels": lab.labels.astype(np.int64),
                          "image_name": lab.file})
        per_class = []
        indices = []
        for k in range(num_classes):
            keep = np.flatnonzero(pred.labels == k)
            indices.append(keep)
            per_class.append(np.concatenate([pred.boxes[keep].reshape(-1, 4), pred.scores[keep].reshape(-1, 1)], axis=1).astype(np.float64))
        cl_predictions.append(per_class)
        order.append(np.concatenate(indices) if indices else np.zeros(0, dtype=np.int64))
    return cl_labels, cl_predictions, order


def _best_overlap(box: np.ndarray, pred: ImageBoxes, threshold: float) -> tuple[int | None, float | None, float | None]:
    """(class, score, IoU) of the prediction above ``threshold`` that overlaps ``box`` most."""
    confident = np.flatnonzero(pred.scores > threshold)
    if not len(confident):
        return None, None, None
    ious = box_iou(torch.tensor(box, dtype=torch.float32).view(1, 4), torch.tensor(pred.boxes[confident], dtype=torch.float32))[0]
    best = int(ious.argmax())
    if float(ious[best]) <= 0:
        return None, None, None
    j = confident[best]
    return int(pred.labels[j]), float(pred.scores[j]), float(ious[best])


def true_positive_scores(labels: Sequence[ImageBoxes], predictions: Sequence[ImageBoxes], iou: float = 0.5) -> np.ndarray:
    """The scores of the predictions that hit a labelled box of their class at IoU >= ``iou``,
    each box hit once, by the highest-scoring prediction first (VOC's matching)."""
    hits = []
    for lab, pred in zip(labels, predictions):
        if not len(pred.boxes) or not len(lab.boxes):
            continue
        overlap = box_iou(torch.tensor(pred.boxes, dtype=torch.float32), torch.tensor(lab.boxes, dtype=torch.float32)).numpy()
        overlap[pred.labels[:, None] != lab.labels[None, :]] = 0.0  # (M, L): only boxes of the prediction's class
        taken = np.zeros(len(lab.boxes), dtype=bool)
        for j in np.argsort(-pred.scores):
            free = np.where(taken, 0.0, overlap[j])
            best = int(free.argmax())
            if free[best] >= iou:
                taken[best] = True
                hits.append(pred.scores[j])
    return np.asarray(hits, dtype=np.float64)


def model_thresholds(labels: Sequence[ImageBoxes], predictions: Sequence[ImageBoxes]) -> tuple[float, float]:
    """``(low, high)``: cleanlab's two thresholds on this model's scale (module docstring): the
    5th and 25th percentiles of its true positives' scores; cleanlab's own when it has none."""
    hits = true_positive_scores(labels, predictions)
    if not len(hits):
        return CLEANLAB_LOW_SCORE, CLEANLAB_HIGH_SCORE
    low, high = np.nextafter(np.quantile(hits, [0.05, 0.25]), 0.0)  # cleanlab counts scores strictly above: ties count
    return float(low), float(high)


def rank_issues(
    labels: Sequence[ImageBoxes],
    predictions: Sequence[ImageBoxes],
    class_names: Sequence[str],
    high_score: float = CLEANLAB_HIGH_SCORE,
    low_score: float = CLEANLAB_LOW_SCORE,
) -> list[Issue]:
    """Every labelled box and every overlooked prediction as an :class:`Issue`, worst first
    (module docstring). ``labels[i]`` and ``predictions[i]`` are the same image; the predictions
    should be held out (made by a model that did not train on the image) and kept down to a low
    score (0.01), so that cleanlab sees their whole distribution."""
    if len(labels) != len(predictions):
        raise ValueError(f"{len(labels)} labelled images but {len(predictions)} predicted")
    if not labels:
        return []
    cl_labels, cl_predictions, order = _cleanlab_inputs(labels, predictions, len(class_names))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # cleanlab warns when it prunes low scores; it prunes none here
        image_scores = get_label_quality_scores(cl_labels, cl_predictions, verbose=False)
        flagged = find_label_issues(cl_labels, cl_predictions)
        swap = compute_swap_box_scores(labels=cl_labels, predictions=cl_predictions, high_probability_threshold=high_score)
        badloc = compute_badloc_box_scores(labels=cl_labels, predictions=cl_predictions, low_probability_threshold=low_score)
        overlooked = compute_overlooked_box_scores(labels=cl_labels, predictions=cl_predictions, high_probability_threshold=high_score)
    rows: list[Issue] = []
    for i, (lab, pred) in enumerate(zip(labels, predictions)):
        common = dict(image_id=lab.image_id, file=lab.file, image_score=float(image_scores[i]), image_flagged=bool(flagged[i]))
        for j, box in enumerate(lab.boxes.reshape(-1, 4)):
            s, b = float(swap[i][j]), float(badloc[i][j])
            score, kind = min((s, "swap"), (b, "badloc"))
            seen, seen_score, iou = _best_overlap(box, pred, PICTURE_SCORE)
            rows.append(Issue(
                annotation_id=int(lab.ann_ids[j]) if lab.ann_ids is not None else None,
                x1=float(box[0]), y1=float(box[1]), x2=float(box[2]), y2=float(box[3]),
                cls=class_names[int(lab.labels[j])], issue=kind if score < 1.0 else "none", score=score, swap=s, badloc=b,
                predicted=class_names[seen] if seen is not None else None, predicted_score=seen_score, iou=iou, **common,
            ))
        for position, value in enumerate(overlooked[i]):
            if np.isnan(value):  # not confident enough, or overlapping a labelled box: not an overlooked object
                continue
            j = order[i][position]
            box = pred.boxes[j]
            rows.append(Issue(
                annotation_id=None, x1=float(box[0]), y1=float(box[1]), x2=float(box[2]), y2=float(box[3]),
                cls=class_names[int(pred.labels[j])], issue="overlooked", score=float(value), swap=None, badloc=None,
                predicted=class_names[int(pred.labels[j])], predicted_score=float(pred.scores[j]), iou=0.0, **common,
            ))
    rows.sort(key=lambda r: (r.score, r.image_score))
    return rows


def worst_of_kind(issues: Sequence[Issue], kind: str) -> list[tuple[int, Issue, float]]:
    """``(rank in issues, issue, its score of this kind)`` for every row with a score of ``kind``
    below 1, lowest first (ties in rank order). A box's row is named after its lower score, but a
    wrongly classed box often also looks misplaced against the predictions of the class it wrongly
    has: whoever looks for wrong classes reads the boxes by their swap score, not the rows named
    swap. ``overlooked``: the rows of unlabelled predictions, by their score."""
    if kind not in KINDS:
        raise ValueError(f"kind {kind!r}: expected one of {', '.join(KINDS)}")
    found = []
    for rank, issue in enumerate(issues, 1):
        if kind == "overlooked":
            score = issue.score if issue.issue == "overlooked" else None
        else:
            score = getattr(issue, kind)  # None on an overlooked row
        if score is not None and score < 1.0:
            found.append((rank, issue, float(score)))
    return sorted(found, key=lambda row: (row[2], row[0]))


_COLUMNS = [f.name for f in fields(Issue)]
_HEADER = ["rank", *("class" if c == "cls" else c for c in _COLUMNS)]


def _cell(value: object) -> object:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 1e4 else f"{value:.1f}"
    return value


def write_issues(issues: Sequence[Issue], path: Path) -> Path:
    """The issues as a CSV, worst first: ``rank`` then :class:`Issue`'s fields (``cls`` as ``class``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(_HEADER)
        for rank, issue in enumerate(issues, 1):
            writer.writerow([rank, *(_cell(v) for v in asdict(issue).values())])
    return path


def read_issues(path: Path) -> list[dict[str, str]]:
    """The rows of a CSV :func:`write_issues` wrote, as dicts of strings."""
    with Path(path).open(newline="") as f:
        return list(csv.DictReader(f))
