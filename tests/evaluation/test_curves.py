"""detector.evaluation.curves against voc_evaluate and hand-counted cases, and the results figures
(detector.evaluation.figures) as PNGs."""

from __future__ import annotations

import csv
import math

import pytest
import torch
from matplotlib.patches import Rectangle
from PIL import Image

from detector.evaluation.curves import confusion_matrix, f1_curves, pr_curves
from detector.evaluation.figures import (
    confusion_matrix_figure,
    f1_curve_figure,
    per_class_ap_figure,
    pr_curve_figure,
    training_curves_figure,
)
from detector.evaluation.voc_ap import match_detections, voc_evaluate
from detector.pictures import save_figure
from test_metrics import det, gt, random_split

# ------------------------------------------------------------------------------------- PR curves


@pytest.mark.parametrize("seed", range(6))
def test_pr_curve_areas_are_voc_evaluates_all_point_ap(seed):
    preds, targets = random_split(seed, num_images=15, num_classes=4)  # ~20 % difficult, class 3 without objects
    assert any(t["difficult"].any() for t in targets)
    voc = voc_evaluate(preds, targets, 4)
    curves = pr_curves(preds, targets, 4)
    matches = match_detections(preds, targets, 4)
    for c, curve in enumerate(curves.classes):
        assert curve.num_positives == voc["num_positives"][c]
        counted = (matches.labels == c) & ~matches.ignored
        assert len(curve.recall) == len(curve.precision) == len(curve.envelope) == len(curve.scores) == counted.sum()
        assert (curve.scores.diff() <= 0).all() and (curve.envelope.diff() <= 0).all()
        assert (curve.envelope >= curve.precision).all()
        if curve.num_positives == 0:
            assert math.isnan(curve.ap) and math.isnan(voc["voc_ap"][c])
            continue
        assert (curve.recall.diff() >= 0).all()
        # The area under the step envelope, summed here by hand, not through all_point_ap.
        area = sum(
            (r - r_before) * p
            for r_before, r, p in zip([0.0, *curve.recall.tolist()], curve.recall.tolist(), curve.envelope.tolist())
        )
        assert area == pytest.approx(voc["voc_ap"][c].item(), abs=1e-9, rel=0)
        assert curve.ap == pytest.approx(voc["voc_ap"][c].item(), abs=1e-9, rel=0)
    assert torch.allclose(curves.ap.nan_to_num(-1), voc["voc_ap"].nan_to_num(-1), atol=1e-9, rtol=0)
    # All classes pooled: every counted detection, against every positive.
    pooled = curves.all
    assert len(pooled.recall) == int((~matches.ignored).sum())
    assert pooled.num_positives == int(voc["num_positives"].sum())
    assert pooled.recall[-1].item() == pytest.approx(matches.tp.sum().item() / pooled.num_positives)


def test_with_one_class_the_pooled_curve_is_the_class_curve():
    preds, targets = random_split(3, num_images=10, num_classes=2)
    keep = [(p["labels"] == 0, t["labels"] == 0) for p, t in zip(preds, targets)]
    preds = [{k: v[d] for k, v in p.items()} for p, (d, _) in zip(preds, keep)]
    targets = [{k: v[g] for k, v in t.items()} for t, (_, g) in zip(targets, keep)]
    curves = pr_curves(preds, targets, 1)
    (one,) = curves.classes
    for field in ("recall", "precision", "envelope", "scores"):
        assert torch.equal(getattr(curves.all, field), getattr(one, field))
    assert curves.all.ap == voc_evaluate(preds, targets, 1)["voc_ap"][0].item()


# ------------------------------------------------------------------------------------- F1 curves


def f1_case():
    """Class 0: two objects found at 0.875 and 0.375, a false positive at 0.625 and one at 0.125, a
    detection on a difficult object at 0.5 (ignored). Class 1: one object found at 0.5, exactly a
    threshold. Class 2: no objects, one false positive. Scores are exact in float32."""
    preds = [
        det([[0, 0, 10, 10], [50, 50, 60, 60], [20, 20, 30, 30], [70, 70, 80, 80], [90, 90, 99, 99]],
            [0.875, 0.625, 0.375, 0.125, 0.5], [0, 0, 0, 0, 0]),
        det([[0, 0, 10, 10], [40, 40, 50, 50]], [0.5, 0.5], [1, 2]),
    ]
    targets = [
        gt([[0, 0, 10, 10], [20, 20, 30, 30], [90, 90, 99, 99]], [0, 0, 0], [False, False, True]),
        gt([[0, 0, 10, 10]], [1]),
    ]
    return preds, targets


def test_f1_at_hand_counted_thresholds():
    curves = f1_curves(*f1_case(), num_classes=3, steps=10)
    assert curves.thresholds[5].item() == 0.5
    # t = 0.5: class 0 keeps TP 0.875, FP 0.625 (the ignored 0.5 is no FP): TP 1, FP 1, FN 1 -> 2 / 4;
    # class 1 keeps its 0.5 (score >= t).
    assert curves.precision[0, 5].item() == 0.5 and curves.recall[0, 5].item() == 0.5
    assert curves.f1[:2, 5].tolist() == [0.5, 1.0] and math.isnan(curves.f1[2, 5])  # no objects: NaN
    assert curves.mean_f1[5].item() == 0.75  # class 2 left out
    # t = 0.2: class 0 TP 2, FP 1 -> 4 / 5; t = 0.1: TP 2, FP 2 -> 4 / 6; t = 0.9: nothing kept.
    assert curves.f1[0, 2].item() == pytest.approx(0.8) and curves.f1[0, 1].item() == pytest.approx(2 / 3)
    assert curves.f1[:2, 9].tolist() == [0.0, 0.0] and math.isnan(curves.precision[0, 9])
    assert curves.best_f1 == pytest.approx(0.9) and curves.best_threshold == 0.2  # 0.2 and 0.3 tie: the lower


def test_f1_curves_default_grid_and_a_split_without_objects():
    preds, targets = f1_case()
    curves = f1_curves(preds, targets, 3)
    assert len(curves.thresholds) == 1001 and curves.thresholds[-1].item() == 1.0
    assert curves.f1.shape == (3, 1001) and curves.mean_f1.shape == (1001,)
    empty = [{k: v[:0] for k, v in t.items()} for t in targets]
    nothing = f1_curves(preds, empty, 3, steps=10)
    assert math.isnan(nothing.best_f1) and math.isnan(nothing.best_threshold) and nothing.f1.isnan().all()


# ------------------------------------------------------------------------------ confusion matrix


def test_confusion_matrix_hand_counted():
    # Classes 0 cat, 1 dog, 2 bird; index 3 background. Rows predicted, columns true.
    preds = [
        det(
            [
                [0, 0, 10, 10],  # cat on the cat: correct
                [0, 0, 10, 9.5],  # a second cat on it, lower IoU: unmatched, invented
                [20, 20, 30, 30],  # cat on the dog: a confusion
                [40, 40, 50, 50],  # bird on the bird, below the score threshold: dropped, the bird is missed
                [60, 60, 70, 70],  # dog on nothing: invented
                [100, 100, 110, 110],  # dog on nothing at exactly the threshold: dropped
                [80, 80, 90, 90],  # dog on a difficult cat: not counted
            ],
            [0.9, 0.85, 0.8, 0.2, 0.7, 0.25, 0.6],
            [0, 0, 0, 2, 1, 1, 1],
        ),
        det([[0, 0, 10, 10]], [0.5], [2]),  # bird, image without objects: invented
        det([], [], []),  # no detections: its dog is missed
    ]
    targets = [
        gt([[0, 0, 10, 10], [20, 20, 30, 30], [40, 40, 50, 50], [80, 80, 90, 90], [120, 120, 130, 130]],
           [0, 1, 2, 0, 2], [False, False, False, True, True]),  # a difficult bird nobody found: not counted
        gt([], []),
        gt([[5, 5, 25, 25]], [1]),
    ]
    expected = torch.tensor([
        [1, 1, 0, 1],
        [0, 0, 0, 1],
        [0, 0, 0, 1],
        [0, 1, 1, 0],
    ])
    matrix = confusion_matrix(preds, targets, 3)
    assert matrix.dtype == torch.int64
    assert torch.equal(matrix, expected)
    # Without the difficult flags the difficult cat is a dog/cat confusion and the lone bird a miss.
    plain = [{k: v for k, v in t.items() if k != "difficult"} for t in targets]
    assert torch.equal(confusion_matrix(preds, plain, 3) - matrix, torch.tensor([
        [0, 0, 0, 0],
        [1, 0, 0, 0],
        [0, 0, 0, 0],
        [0, 0, 1, 0],
    ]))


def test_confusion_matrix_uses_ultralytics_two_passes_not_a_full_greedy_assignment():
    # A overlaps object 1 fully; B overlaps object 1 (0.82) more than object 2 (0.67). A takes object 1,
    # so B, whose best object was 1, stays unmatched and object 2 is missed, as in ultralytics; a greedy
    # assignment would pair B with object 2.
    preds = [det([[0, 0, 10, 10], [1, 0, 11, 10]], [0.9, 0.8], [0, 0])]
    targets = [gt([[0, 0, 10, 10], [3, 0, 13, 10]], [0, 0])]
    assert confusion_matrix(preds, targets, 1).tolist() == [[1, 1], [1, 0]]
    assert confusion_matrix(preds, targets, 1, score_threshold=0.85).tolist() == [[1, 0], [1, 0]]


def test_confusion_matrix_rejects_bad_input():
    with pytest.raises(ValueError, match="labels must be integers in 0..1"):
        confusion_matrix([det([[0, 0, 1, 1]], [0.5], [2])], [gt([], [])], 2)


# --------------------------------------------------------------------------------------- figures


def assert_png(path, min_width=500, min_bytes=10_000):
    with Image.open(path) as image:
        assert image.format == "PNG"
        assert image.width > min_width and image.height > 300
        image.verify()
    assert path.stat().st_size > min_bytes


@pytest.fixture(scope="module")
def split():
    return random_split(7, num_images=20, num_classes=4)


def test_pr_curve_figure(split, tmp_path):
    curves = pr_curves(*split, 4)
    names = ["cat", "dog", "emu", "yak"]
    fig = pr_curve_figure(curves, names)
    (ax,) = fig.axes
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend[:3] == [f"{n} {curves.ap[c]:.3f}" for c, n in enumerate(names[:3])]
    assert legend[3] == "yak n/a" and legend[4].startswith("all classes pooled")
    assert f"mAP@0.5 = {curves.ap.nanmean():.3f}" in ax.get_title()
    assert ax.get_xlabel() == "recall" and ax.get_ylabel().startswith("precision")
    assert_png(save_figure(fig, tmp_path / "pr.png"))
    with pytest.raises(ValueError, match="3 class names"):
        pr_curve_figure(curves, names[:3])


def test_f1_curve_figure(split, tmp_path):
    curves = f1_curves(*split, 4)
    fig = f1_curve_figure(curves, ["cat", "dog", "emu", "yak"])
    (ax,) = fig.axes
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert f"best: F1 {curves.best_f1:.3f} at score {curves.best_threshold:.3f}" in legend
    assert ax.get_xlabel().startswith("score threshold") and ax.get_ylabel() == "F1" and ax.get_title()
    assert_png(save_figure(fig, tmp_path / "f1.png"))


@pytest.mark.parametrize("normalise", [True, False])
def test_confusion_matrix_figure(split, tmp_path, normalise):
    matrix = confusion_matrix(*split, 4)
    fig = confusion_matrix_figure(matrix, ["cat", "dog", "emu", "yak"], normalise, 0.25, 0.45)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["cat", "dog", "emu", "yak", "background"]
    assert "score > 0.25, IoU > 0.45" in ax.get_title()
    assert ("normalised" in ax.get_title()) == normalise
    cells = [t.get_text() for t in ax.texts]
    if normalise:
        column = matrix[:, 0].double() / matrix[:, 0].sum()
        assert f"{column[0]:.2f}" in cells
    else:
        assert sorted(int(t) for t in cells) == sorted(v for v in matrix.flatten().tolist() if v)
    assert_png(save_figure(fig, tmp_path / "cm.png"))
    with pytest.raises(ValueError, match=r"need a \(5, 5\) matrix"):
        confusion_matrix_figure(matrix[:4, :4], ["cat", "dog", "emu", "yak"])


def test_per_class_ap_figure_bars_sorted_with_nan(tmp_path):
    names = ["cat", "dog", "emu", "yak"]
    fig = per_class_ap_figure(names, [0.5, float("nan"), 0.9, 0.1], title="AP")
    (ax,) = fig.axes
    bars = [p for p in ax.patches if isinstance(p, Rectangle)]
    assert len(bars) == 4
    assert [t.get_text() for t in ax.get_yticklabels()] == ["emu", "cat", "yak", "dog"]  # best first, n/a last
    assert sorted(b.get_width() for b in bars) == pytest.approx([0.0, 0.1, 0.5, 0.9])
    assert "n/a" in [t.get_text() for t in ax.texts]
    mean = [t.get_text() for t in ax.texts if "mean" in t.get_text()]
    assert mean == [f" mean {(0.5 + 0.9 + 0.1) / 3:.3f}"]
    path = save_figure(fig, tmp_path / "ap.png")
    assert path.stat().st_size > 1000
    small = save_figure(per_class_ap_figure(names, [0.5, None, 0.9, 0.1]), tmp_path / "ap_p.png", palette=16)
    assert Image.open(small).mode == "P" and Image.open(small).size == Image.open(path).size
    with pytest.raises(ValueError, match="4 class names but 3"):
        per_class_ap_figure(names, [0.1, 0.2, 0.3])



def sparse_log(epochs=4, steps=5):
    """Rows as Lightning's CSV logger writes them: lr rows without an epoch, step rows, val rows and
    epoch rows, each with its own columns only."""
    rows = []
    for e in range(epochs):
        for s in range(steps):
            step = e * steps + s
            rows.append({"step": step, "lr-AdamW/group0": 1e-4, "lr-AdamW/group1": 1e-3, "lr-AdamW/head": 1e-2})
            rows.append({"epoch": e, "step": step, "train/loss_step": 2.0 - 0.1 * step})
        rows.append({"epoch": e, "step": step, "val/loss": 2.0 - 0.2 * e, "val/map_50": 0.1 * e, "val/map": 0.05 * e})
        rows.append(
            {"epoch": e, "step": step, "train/loss_epoch": 2 - 0.3 * e, "train/loc_epoch": 1 - 0.1 * e,
             "train/cls_epoch": 1 - 0.2 * e}
        )
    columns = sorted({k for row in rows for k in row})
    return columns, [{k: row.get(k, "") for k in columns} for row in rows]


def test_training_curves_figure_from_a_sparse_csv(tmp_path):
    columns, rows = sparse_log()
    path = tmp_path / "metrics.csv"
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    fig = training_curves_figure(path)
    panels = [ax for ax in fig.axes if ax.axison]
    assert [ax.get_title() for ax in panels] == [
        "loss", "localisation loss", "classification loss", "mAP@0.5", "COCO mAP@[.5:.95]", "learning rate (AdamW)"
    ]
    loss = panels[0]
    assert [line.get_label() for line in loss.get_lines()] == ["train", "val"]
    assert loss.get_lines()[1].get_ydata().tolist() == pytest.approx([2.0, 1.8, 1.6, 1.4])
    lr = panels[-1]
    assert lr.get_xlabel() == "step" and lr.get_yscale() == "log"
    assert [line.get_label() for line in lr.get_lines()] == ["group0", "group1", "head"]
    assert len(lr.get_lines()[2].get_xdata()) == 20
    assert panels[3].get_lines()[0].get_label() == "COCO, 101 points (best 0.300)"
    assert all(ax.get_xlabel() and ax.get_ylabel() for ax in panels)
    assert_png(save_figure(fig, tmp_path / "results.png"))


def test_training_curves_figure_skips_absent_panels():
    rows = [{"epoch": e, "step": e, "train/loss_epoch": 1.0 / (e + 1), "val/loss": ""} for e in range(3)]
    fig = training_curves_figure(rows)
    assert [ax.get_title() for ax in fig.axes if ax.axison] == ["loss"]
    assert [line.get_label() for line in fig.axes[0].get_lines()] == ["train"]
    with pytest.raises(ValueError, match="no training curves"):
        training_curves_figure([{"epoch": 0, "step": 0, "val/acc": 0.5}])
