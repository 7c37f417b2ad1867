"""cleanlab's ranking of label issues (detector.research.label_issues) and the k folds the audit
trains (detector.research.folds), without training: predictions made up to be right."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from detector.errors import ConfigError
from detector.research.audit_picture import worst_images
from detector.research.folds import assign_folds, write_folds
from detector.research.label_issues import (
    ImageBoxes,
    Issue,
    model_thresholds,
    rank_issues,
    read_issues,
    true_positive_scores,
    worst_of_kind,
    write_issues,
)

CLASSES = ["cat", "dog"]


def _labels(i: int, boxes, labels) -> ImageBoxes:
    boxes = np.array(boxes, dtype=np.float32).reshape(-1, 4)
    return ImageBoxes(i, f"{i:03d}.jpg", boxes, np.array(labels, dtype=np.int64), ann_ids=np.arange(len(boxes)) + 100 * i)


def _predictions(i: int, boxes, labels, scores) -> ImageBoxes:
    boxes = np.array(boxes, dtype=np.float32).reshape(-1, 4)
    return ImageBoxes(i, f"{i:03d}.jpg", boxes, np.array(labels, dtype=np.int64), scores=np.array(scores, dtype=np.float64))


def _dataset(n: int = 24, seed: int = 0):
    """``n`` images of two objects each, predicted right (a little jitter, confident), plus a
    few low-score false positives, as a held-out detector would."""
    rng = np.random.default_rng(seed)
    labels, predictions = [], []
    for i in range(n):
        boxes = np.array([[10, 10, 60, 60], [100, 80, 150, 160]], dtype=np.float32) + rng.integers(0, 20, size=(1, 4))
        classes = [i % 2, (i + 1) % 2]
        labels.append(_labels(i, boxes, classes))
        noise = np.array([[200, 200, 230, 230]], dtype=np.float32)
        predictions.append(_predictions(i, np.concatenate([boxes + rng.normal(0, 1, (2, 4)), noise]), [*classes, 0],
                                        [0.98, 0.97, 0.05]))
    return labels, predictions


def test_the_planted_errors_rank_first_each_as_its_kind():
    labels, predictions = _dataset()
    # a swapped class: image 3's first box says dog, the model sees a cat there
    labels[3].labels[0] = 1 - labels[3].labels[0]
    swapped = int(labels[3].ann_ids[0])
    # a misplaced box: image 7's second box moved 30 px off its object
    labels[7].boxes[1] += np.array([30, 30, 30, 30], dtype=np.float32)
    misplaced = int(labels[7].ann_ids[1])
    # an overlooked object: image 11's second object is not labelled at all
    labels[11] = _labels(11, labels[11].boxes[:1], labels[11].labels[:1])
    rows = rank_issues(labels, predictions, CLASSES)

    assert [r.score for r in rows] == sorted(r.score for r in rows)
    top = {(r.issue, r.annotation_id, r.image_id) for r in rows[:3]}
    assert top == {("swap", swapped, 3), ("badloc", misplaced, 7), ("overlooked", None, 11)}
    swap = next(r for r in rows if r.annotation_id == swapped)
    assert swap.cls == CLASSES[labels[3].labels[0]] and swap.predicted == CLASSES[1 - labels[3].labels[0]]
    assert swap.image_flagged and swap.score < 0.1
    # every labelled box is one row; the clean ones score far better than the planted ones
    boxes = [r for r in rows if r.annotation_id is not None]
    assert sorted(r.annotation_id for r in boxes) == sorted(int(a) for lab in labels for a in lab.ann_ids)
    clean = [r.score for r in boxes if r.annotation_id not in (swapped, misplaced)]
    assert min(clean) > 0.5
    assert sum(r.image_flagged for r in rows if r.image_id not in (3, 7, 11)) == 0


def test_images_without_labels_or_predictions_are_scored_too():
    labels, predictions = _dataset(6)
    labels.append(_labels(6, np.zeros((0, 4)), []))
    predictions.append(_predictions(6, np.zeros((0, 4)), [], []))
    labels.append(_labels(7, [[10, 10, 50, 50]], [0]))
    predictions.append(_predictions(7, np.zeros((0, 4)), [], []))  # the model sees nothing where a cat is labelled
    rows = rank_issues(labels, predictions, CLASSES)
    assert not [r for r in rows if r.image_id == 6]
    lonely = [r for r in rows if r.image_id == 7]
    assert len(lonely) == 1 and lonely[0].predicted is None


def test_the_csv_has_one_ranked_row_per_issue(tmp_path: Path):
    labels, predictions = _dataset(8)
    labels[2].labels[1] = 1 - labels[2].labels[1]
    rows = rank_issues(labels, predictions, CLASSES)
    read = read_issues(write_issues(rows, tmp_path / "label_issues.csv"))
    assert list(read[0]) == ["rank", "image_id", "file", "annotation_id", "x1", "y1", "x2", "y2", "class", "issue", "score",
                             "swap", "badloc", "predicted", "predicted_score", "iou", "image_score", "image_flagged"]
    assert [int(r["rank"]) for r in read] == list(range(1, len(rows) + 1))
    assert read[0]["annotation_id"] == str(int(labels[2].ann_ids[1])) and read[0]["file"] == "002.jpg"
    assert [float(r["score"]) for r in read] == sorted(float(r["score"]) for r in read)


def test_folds_hold_out_every_image_once_in_near_equal_parts():
    names = [f"img_{i}.jpg" for i in range(23)]
    folds = assign_folds(names, 5, seed=0)
    assert sorted(np.bincount(folds).tolist()) == [4, 4, 5, 5, 5]
    assert assign_folds(names, 5, seed=0) == folds  # the same on every call and machine
    assert assign_folds(names, 5, seed=1) != folds
    with pytest.raises(ConfigError, match="at least 2 folds"):
        assign_folds(names, 1)
    with pytest.raises(ConfigError, match="only 3 images"):
        assign_folds(names[:3], 5)


def test_written_folds_keep_the_categories_and_split_the_annotations(tmp_path: Path):
    coco = {
        "images": [{"id": i, "file_name": f"{i}.jpg", "width": 10, "height": 10} for i in range(1, 8)],
        "annotations": [{"id": 10 + i, "image_id": i, "bbox": [1, 1, 3, 3], "category_id": 2} for i in range(1, 8)],
        "categories": [{"id": 2, "name": "dog"}, {"id": 1, "name": "cat"}],
        "info": {"note": "kept"},
    }
    path = tmp_path / "train.json"
    path.write_text(json.dumps(coco))
    folds = write_folds(path, [1, 2, 3, 4, 5, 6], 3, tmp_path / "folds")  # image 7: skipped by training, in no fold
    held = []
    for fold in folds:
        train, out = json.loads(fold.train.read_text()), json.loads(fold.heldout.read_text())
        assert train["categories"] == coco["categories"] and out["info"] == {"note": "kept"}
        ids_train, ids_out = {im["id"] for im in train["images"]}, {im["id"] for im in out["images"]}
        assert not ids_train & ids_out and ids_train | ids_out == {1, 2, 3, 4, 5, 6}
        assert {a["image_id"] for a in out["annotations"]} == ids_out
        assert (fold.train_images, fold.heldout_images) == (len(ids_train), len(ids_out))
        held += sorted(ids_out)
    assert sorted(held) == [1, 2, 3, 4, 5, 6]


def test_thresholds_on_the_models_scale_find_what_cleanlabs_miss_on_a_low_scoring_model():
    """A focal-loss SSD scores its correct detections around 0.3-0.5, never 0.95: at cleanlab's
    thresholds a swapped class is invisible; at the model's own (quantiles of its true
    positives' scores) it ranks first."""
    labels, predictions = _dataset()
    rng = np.random.default_rng(1)
    for p in predictions:
        p.scores = np.where(p.scores > 0.5, rng.uniform(0.3, 0.5, len(p.scores)), p.scores)
    labels[5].labels[1] = 1 - labels[5].labels[1]
    swapped = int(labels[5].ann_ids[1])
    predictions[5].scores[1] = 0.45  # the model sees the true class there as surely as most of its right boxes
    hits = true_positive_scores(labels, predictions)
    assert len(hits) == 2 * len(labels) - 1 and hits.min() >= 0.3  # every right box once; the swapped one is no hit
    low, high = model_thresholds(labels, predictions)
    assert 0.3 <= low < high < 0.4
    blind = rank_issues(labels, predictions, CLASSES)  # cleanlab's 0.95 and 0.5
    assert next(r for r in blind if r.annotation_id == swapped).swap == 1.0
    seeing = rank_issues(labels, predictions, CLASSES, high_score=high, low_score=low)
    assert seeing[0].annotation_id == swapped and seeing[0].issue == "swap"
    assert model_thresholds(labels[:1], [_predictions(0, np.zeros((0, 4)), [], [])]) == (0.5, 0.95)  # no hit: cleanlab's


def _row(image_id: int, issue: str, score: float, swap: float | None, badloc: float | None) -> Issue:
    labelled = issue != "overlooked"
    return Issue(image_id, f"{image_id:03d}.jpg", 10 * image_id if labelled else None, 0.0, 0.0, 5.0, 5.0, "cat", issue, score,
                 swap, badloc, None, None, None, 0.5, False)


def test_each_kind_is_read_by_its_own_score_not_by_the_rows_name():
    """A wrongly classed box that also looks misplaced has a row named badloc (its lower score):
    the swaps are still found by the swap column, the printout's and the picture's order."""
    rows = [  # sorted as rank_issues sorts them, by the lower score
        _row(1, "badloc", 0.05, swap=0.2, badloc=0.05),  # swapped and misplaced
        _row(2, "overlooked", 0.1, swap=None, badloc=None),
        _row(3, "swap", 0.3, swap=0.3, badloc=0.9),
        _row(4, "badloc", 0.5, swap=1.0, badloc=0.5),
        _row(5, "none", 1.0, swap=1.0, badloc=1.0),
    ]
    ranked = {kind: [(rank, issue.image_id, score) for rank, issue, score in worst_of_kind(rows, kind)]
              for kind in ("swap", "badloc", "overlooked")}
    assert ranked == {
        "swap": [(1, 1, 0.2), (3, 3, 0.3)],
        "badloc": [(1, 1, 0.05), (4, 4, 0.5), (3, 3, 0.9)],
        "overlooked": [(2, 2, 0.1)],
    }
    # the picture: the worst image of each kind in turn, an image shown once, then the next of each
    shown = [(rank, issue.image_id, kind, score) for rank, issue, kind, score in worst_images(rows, 4)]
    assert shown == [(1, 1, "swap", 0.2), (4, 4, "badloc", 0.5), (2, 2, "overlooked", 0.1), (3, 3, "swap", 0.3)]
    assert len(worst_images(rows, 10)) == 4  # image 5 has nothing below 1
    with pytest.raises(ValueError, match="expected one of swap, badloc, overlooked"):
        worst_of_kind(rows, "none")
