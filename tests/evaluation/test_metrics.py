"""detector.evaluation.metrics against hand-worked cases, a plain port of voc_eval.py, and pycocotools itself."""

from __future__ import annotations

import contextlib
import io
import math

import numpy as np
import pytest
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from detector.evaluation.metrics import DetectionMetrics, per_class
from detector.evaluation.voc_ap import all_point_ap, check_images, eleven_point_ap, match_detections, voc_evaluate

# ---------------------------------------------------------------------------------------- helpers


def det(boxes, scores, labels) -> dict[str, torch.Tensor]:
    return {
        "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        "scores": torch.tensor(scores, dtype=torch.float32),
        "labels": torch.tensor(labels, dtype=torch.int64),
    }


def gt(boxes, labels, difficult=None) -> dict[str, torch.Tensor]:
    n = len(labels)
    return {
        "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        "labels": torch.tensor(labels, dtype=torch.int64),
        "difficult": torch.tensor(difficult if difficult is not None else [False] * n, dtype=torch.bool),
    }


def metrics_of(preds, targets, num_classes: int) -> dict:
    """The metric's result, its per-class values read as every caller reads them (``per_class``)."""
    m = DetectionMetrics(num_classes)
    m.update(preds, targets)
    r = m.compute()
    return {**r, "per_class": per_class(r)}


def random_split(seed: int, num_images: int = 12, num_classes: int = 4):
    """Random pixel boxes (integer corners, so float32 and pycocotools agree to the bit): ground truth
    with ~20 % difficult, detections = jittered copies (some duplicated, some with a wrong class),
    plus clutter; random scores. Some images have no ground truth, some no detections."""
    g = torch.Generator().manual_seed(seed)
    preds, targets = [], []
    for i in range(num_images):
        m = 0 if i % 5 == 4 else int(torch.randint(1, 7, (1,), generator=g))
        xy = torch.randint(0, 300, (m, 2), generator=g)
        wh = torch.randint(16, 200, (m, 2), generator=g)
        boxes = torch.cat([xy, xy + wh], 1).float()
        labels = torch.randint(0, num_classes - 1, (m,), generator=g)  # the last class never has ground truth
        difficult = torch.rand(m, generator=g) < 0.2
        copies = torch.cat([torch.arange(m), torch.randint(0, max(m, 1), (m // 2,), generator=g)])[: 2 * m]
        d_boxes = boxes[copies] + torch.randint(-7, 8, (len(copies), 4), generator=g)  # stays a valid box
        d_labels = labels[copies].clone()
        flip = torch.rand(len(copies), generator=g) < 0.15
        d_labels[flip] = torch.randint(0, num_classes, (int(flip.sum()),), generator=g)
        k = int(torch.randint(0, 4, (1,), generator=g))
        c_xy = torch.randint(0, 300, (k, 2), generator=g)
        clutter = torch.cat([c_xy, c_xy + torch.randint(8, 150, (k, 2), generator=g)], 1).float()
        d_boxes = torch.cat([d_boxes, clutter])
        d_labels = torch.cat([d_labels, torch.randint(0, num_classes, (k,), generator=g)])
        if i % 7 == 6:
            d_boxes, d_labels = d_boxes[:0], d_labels[:0]
        scores = torch.rand(len(d_labels), generator=g)
        preds.append({"boxes": d_boxes.float(), "scores": scores, "labels": d_labels})
        targets.append({"boxes": boxes, "labels": labels, "difficult": difficult})
    return preds, targets


def voc_eval_port(preds, targets, cls: int, ovthresh: float = 0.5) -> tuple[float, float]:
    """The oracle: voc_eval.py's loop for one class, ported plainly (continuous IoU, no +1; the
    11 thresholds are k / 10 exactly, see eleven_point_ap). Returns (11-point AP, all-point AP)."""
    recs = []
    npos = 0
    for t in targets:
        keep = (t["labels"] == cls).numpy()
        bbox, difficult = t["boxes"].numpy()[keep].astype(float), t["difficult"].numpy()[keep]
        recs.append({"bbox": bbox, "difficult": difficult, "det": [False] * len(bbox)})
        npos += int((~t["difficult"].numpy()[keep]).sum())
    image_ids, confidence, BB = [], [], []
    for i, p in enumerate(preds):
        for b, s, label in zip(p["boxes"].numpy(), p["scores"].numpy(), p["labels"].numpy()):
            if label == cls:
                image_ids.append(i)
                confidence.append(s)
                BB.append(b.astype(float))
    order = np.argsort(-np.array(confidence), kind="stable")
    tp, fp = np.zeros(len(order)), np.zeros(len(order))
    for d, j in enumerate(order):
        R, bb = recs[image_ids[j]], BB[j]
        ovmax, BBGT = -np.inf, R["bbox"]
        if BBGT.size > 0:
            ixmin, iymin = np.maximum(BBGT[:, 0], bb[0]), np.maximum(BBGT[:, 1], bb[1])
            ixmax, iymax = np.minimum(BBGT[:, 2], bb[2]), np.minimum(BBGT[:, 3], bb[3])
            inters = np.maximum(ixmax - ixmin, 0.0) * np.maximum(iymax - iymin, 0.0)
            uni = (bb[2] - bb[0]) * (bb[3] - bb[1]) + (BBGT[:, 2] - BBGT[:, 0]) * (BBGT[:, 3] - BBGT[:, 1]) - inters
            overlaps = inters / uni
            ovmax, jmax = np.max(overlaps), np.argmax(overlaps)
        if ovmax > ovthresh:
            if not R["difficult"][jmax]:
                if not R["det"][jmax]:
                    tp[d] = 1.0
                    R["det"][jmax] = True
                else:
                    fp[d] = 1.0
        else:
            fp[d] = 1.0
    fp, tp = np.cumsum(fp), np.cumsum(tp)
    rec = tp / float(npos)
    prec = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
    ap07 = sum((np.max(prec[rec >= k / 10]) if np.sum(rec >= k / 10) else 0.0) / 11.0 for k in range(11))
    mrec, mpre = np.concatenate(([0.0], rec, [1.0])), np.concatenate(([0.0], prec, [0.0]))
    for i in range(mpre.size - 1, 0, -1):
        mpre[i - 1] = max(mpre[i - 1], mpre[i])
    i = np.where(mrec[1:] != mrec[:-1])[0]
    return ap07, float(np.sum((mrec[i + 1] - mrec[i]) * mpre[i + 1]))


def cocoeval_of(preds, targets, cat_ids=None) -> np.ndarray:
    """pycocotools directly: difficult -> iscrowd, boxes -> xywh, area = w * h; returns COCOeval.stats."""
    images, annotations, results = [], [], []
    for i, (p, t) in enumerate(zip(preds, targets)):
        images.append({"id": i})
        for b, label, crowd in zip(t["boxes"].tolist(), t["labels"].tolist(), t["difficult"].tolist()):
            w, h = b[2] - b[0], b[3] - b[1]
            annotations.append(
                {"id": len(annotations) + 1, "image_id": i, "category_id": label, "bbox": [b[0], b[1], w, h],
                 "area": w * h, "iscrowd": int(crowd)}
            )
        for b, s, label in zip(p["boxes"].tolist(), p["scores"].tolist(), p["labels"].tolist()):
            xywh = [b[0], b[1], b[2] - b[0], b[3] - b[1]]
            results.append({"image_id": i, "category_id": label, "bbox": xywh, "score": s})
    labels = sorted({a["category_id"] for a in annotations} | {r["category_id"] for r in results})
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = {"images": images, "annotations": annotations, "categories": [{"id": c} for c in labels]}
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes(results)
        ev = COCOeval(coco_gt, coco_dt, "bbox")
        if cat_ids is not None:
            ev.params.catIds = cat_ids
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev.stats


# ------------------------------------------------------------------------------ AP interpolation


def test_ap_interpolations_on_a_hand_worked_curve():
    recall = torch.tensor([0.5, 0.5, 1.0], dtype=torch.float64)
    precision = torch.tensor([1.0, 0.5, 2 / 3], dtype=torch.float64)
    # Envelope: 1, 2/3, 2/3. All-point: 0.5 * 1 + 0.5 * 2/3 = 5/6.
    assert all_point_ap(recall, precision).item() == pytest.approx(5 / 6)
    # 11-point: t = 0..0.5 (6 points) -> 1; t = 0.6..1.0 (5 points) -> 2/3. (6 + 10/3) / 11 = 28/33.
    assert eleven_point_ap(recall, precision).item() == pytest.approx(28 / 33)


def test_eleven_point_counts_a_recall_of_exactly_three_tenths():
    # 0.3 as tp / npos = 3 / 10 must reach the t = 0.3 point (np.arange's 0.30000000000000004 would not).
    recall = torch.tensor([3 / 10], dtype=torch.float64)
    precision = torch.tensor([1.0], dtype=torch.float64)
    assert eleven_point_ap(recall, precision).item() == pytest.approx(4 / 11)


def test_no_detections_give_zero_ap():
    empty = torch.zeros(0, dtype=torch.float64)
    assert all_point_ap(empty, empty).item() == 0.0
    assert eleven_point_ap(empty, empty).item() == 0.0


# ----------------------------------------------------------------------------- hand-worked cases


def test_perfect_detector_scores_one_everywhere():
    targets = [
        gt([[10, 10, 50, 60], [70, 20, 120, 90]], [0, 1]),
        gt([[5, 5, 100, 100], [30, 40, 60, 80], [0, 0, 20, 20]], [1, 2, 2], difficult=[False, False, True]),
        gt([[40, 40, 90, 95]], [0]),
    ]
    preds = [det(t["boxes"].tolist(), [0.9] * len(t["labels"]), t["labels"].tolist()) for t in targets]
    r = metrics_of(preds, targets, 3)
    for key in ("map", "map_50", "map_75", "voc07_map_50", "voc_map_50"):
        assert r[key].item() == pytest.approx(1.0), key
    for key in ("map", "map_50", "map_75", "voc07_map_50", "voc_map_50"):
        torch.testing.assert_close(r["per_class"][key], torch.ones(3), msg=key)
    assert r["per_class"]["num_positives"].tolist() == [2, 2, 1]  # the difficult class-2 object is not a positive


def test_known_precision_recall_table():
    # One class, 3 objects in 2 images; 5 detections, given out of score order across the images.
    g1, g2, g3 = [0, 0, 10, 10], [20, 20, 30, 30], [0, 0, 10, 10]
    targets = [gt([g1, g2], [0, 0]), gt([g3], [0])]
    preds = [
        det([g2, g1, g1], [0.5, 0.9, 0.8], [0, 0, 0]),  # d5 on g2, d1 on g1, d2 duplicate of g1
        det([[50, 50, 60, 60], g3], [0.6, 0.7], [0, 0]),  # d4 background, d3 on g3
    ]
    # rank  score  match          TP FP   precision  recall
    #  d1    0.9   g1             1  0    1/1        1/3
    #  d2    0.8   g1 again (dup) 1  1    1/2        1/3
    #  d3    0.7   g3             2  1    2/3        2/3
    #  d4    0.6   nothing        2  2    2/4        2/3
    #  d5    0.5   g2             3  2    3/5        3/3
    # Precision envelope (max at this recall or beyond): 1, 2/3, 2/3, 3/5, 3/5.
    # All-point: 1/3 * 1 + 1/3 * 2/3 + 1/3 * 3/5 = 34/45 = 0.75556.
    # 11-point: t in {0, .1, .2, .3} -> 1; t in {.4, .5, .6} -> 2/3; t in {.7, .8, .9, 1} -> 3/5;
    #           (4 + 2 + 2.4) / 11 = 8.4/11 = 0.76364.
    # COCO, 101 recall points: r in 0.00..0.33 (34) -> 1; r in 0.34..0.66 (33) -> 2/3; r in 0.67..1.00 (34) -> 3/5;
    #           (34 + 22 + 20.4) / 101 = 76.4/101 = 0.75644, at every IoU threshold (matches are exact).
    voc = voc_evaluate(preds, targets, num_classes=1)
    assert voc["voc_ap"].tolist() == pytest.approx([34 / 45])
    assert voc["voc07_ap"].tolist() == pytest.approx([8.4 / 11])
    r = metrics_of(preds, targets, 1)
    assert r["voc_map_50"].item() == pytest.approx(34 / 45, abs=1e-6)
    assert r["voc07_map_50"].item() == pytest.approx(8.4 / 11, abs=1e-6)
    for key in ("map", "map_50", "map_75"):
        assert r[key].item() == pytest.approx(76.4 / 101, abs=1e-6), key


def test_detection_on_a_difficult_object_is_neither_tp_nor_fp():
    targets = [gt([[0, 0, 10, 10], [20, 20, 30, 30]], [0, 0], difficult=[True, False])]
    # The highest-scored detection sits on the difficult object, twice; an FP there would give AP < 1.
    preds = [det([[0, 0, 10, 10], [0, 0, 10, 10], [20, 20, 30, 30]], [0.9, 0.8, 0.7], [0, 0, 0])]
    voc = voc_evaluate(preds, targets, 1)
    assert voc["voc_ap"].item() == pytest.approx(1.0)
    assert voc["voc07_ap"].item() == pytest.approx(1.0)
    assert voc["num_positives"].tolist() == [1]
    assert metrics_of(preds, targets, 1)["map_50"].item() == pytest.approx(1.0)  # iscrowd does the same in COCO


def test_a_missed_difficult_object_does_not_lower_recall():
    targets = [gt([[0, 0, 10, 10], [20, 20, 30, 30]], [0, 0], difficult=[True, False])]
    preds = [det([[20, 20, 30, 30]], [0.9], [0])]
    voc = voc_evaluate(preds, targets, 1)
    assert voc["voc_ap"].item() == pytest.approx(1.0)  # recall 1/1, not 1/2
    r = metrics_of(preds, targets, 1)
    assert r["map_50"].item() == pytest.approx(1.0)


def test_a_class_whose_objects_are_all_difficult_has_no_ap():
    targets = [gt([[0, 0, 10, 10], [20, 20, 30, 30]], [0, 1], difficult=[False, True])]
    preds = [det([[0, 0, 10, 10], [20, 20, 30, 30]], [0.9, 0.8], [0, 1])]
    voc = voc_evaluate(preds, targets, 2)
    assert voc["voc_ap"][0].item() == pytest.approx(1.0)
    assert math.isnan(voc["voc_ap"][1].item())
    assert voc["voc_map"] == pytest.approx(1.0)
    assert math.isnan(metrics_of(preds, targets, 2)["per_class"]["map_50"][1].item())


def test_duplicates_are_false_positives():
    targets = [gt([[0, 0, 10, 10], [20, 20, 30, 30]], [0, 0])]
    # TP (r 1/2, p 1), duplicate FP (r 1/2, p 1/2), TP (r 1, p 2/3): all-point 1/2 * 1 + 1/2 * 2/3 = 5/6.
    preds = [det([[0, 0, 10, 10], [0, 0, 10, 10.5], [20, 20, 30, 30]], [0.9, 0.8, 0.7], [0, 0, 0])]
    assert voc_evaluate(preds, targets, 1)["voc_ap"].item() == pytest.approx(5 / 6)


def test_iou_must_strictly_exceed_the_threshold():
    targets = [gt([[0, 0, 2, 1]], [0])]
    preds = [det([[0, 0, 1, 1]], [0.9], [0])]  # IoU = 1 / 2 exactly
    assert voc_evaluate(preds, targets, 1)["voc_ap"].item() == 0.0  # ovmax > ovthresh is false
    assert voc_evaluate(preds, targets, 1, iou_threshold=0.49)["voc_ap"].item() == pytest.approx(1.0)
    r = metrics_of(preds, targets, 1)
    assert r["voc_map_50"].item() == 0.0
    assert r["map_50"].item() == pytest.approx(1.0)  # COCO counts IoU >= 0.5: a documented difference


def test_a_detection_of_the_wrong_class_matches_nothing():
    targets = [gt([[0, 0, 10, 10]], [0])]
    preds = [det([[0, 0, 10, 10]], [0.9], [1])]
    voc = voc_evaluate(preds, targets, 2)
    assert voc["voc_ap"][0].item() == 0.0
    assert math.isnan(voc["voc_ap"][1].item())


def test_empty_predictions_score_zero():
    targets = [gt([[0, 0, 10, 10]], [0]), gt([[5, 5, 50, 50]], [1])]
    preds = [det([], [], []), det([], [], [])]
    r = metrics_of(preds, targets, 2)
    for key in ("map", "map_50", "map_75", "voc07_map_50", "voc_map_50"):
        assert r[key].item() == 0.0, key
    torch.testing.assert_close(r["per_class"]["voc_map_50"], torch.zeros(2))


def test_detections_on_an_image_without_ground_truth_are_false_positives():
    targets = [gt([[0, 0, 10, 10]], [0]), gt([], [])]
    preds = [det([[0, 0, 10, 10]], [0.5], [0]), det([[0, 0, 10, 10]], [0.9], [0])]
    # FP (p 0, r 0) then TP (p 1/2, r 1): every interpolation gives 1/2.
    r = metrics_of(preds, targets, 1)
    for key in ("map", "map_50", "map_75", "voc07_map_50", "voc_map_50"):
        assert r[key].item() == pytest.approx(0.5, abs=1e-6), key


def test_classes_without_ground_truth_are_nan_and_left_out_of_the_means():
    targets = [gt([[0, 0, 10, 10], [20, 20, 30, 30]], [0, 1])]
    # class 0 found (AP 1); class 1 missed (AP 0); class 2 only has a detection; class 3 nothing at all.
    preds = [det([[0, 0, 10, 10], [40, 40, 50, 50], [20, 20, 30, 30]], [0.9, 0.8, 0.7], [0, 1, 2])]
    r = metrics_of(preds, targets, 4)
    for key in ("map", "map_50", "voc07_map_50", "voc_map_50"):
        values = r["per_class"][key]
        assert values[:2].tolist() == pytest.approx([1.0, 0.0]), key
        assert values[2:].isnan().all(), key
        assert r[key].item() == pytest.approx(0.5), key
    assert r["per_class"]["num_positives"].tolist() == [1, 1, 0, 0]


def test_coco_iou_thresholds_are_pycocotools_own():
    # IoU exactly 0.55 (5,500 / 10,000): a match at 0.50 and 0.55, none at 0.60-0.95, so AP 2 / 10;
    # torchmetrics' float32 thresholds (0.550000011920929) would miss the 0.55 match.
    r = metrics_of([det([[0, 0, 100, 55]], [0.9], [0])], [gt([[0, 0, 100, 100]], [0])], 1)
    assert float(r["map"]) == pytest.approx(0.2)
    assert float(r["per_class"]["map"][0]) == pytest.approx(0.2)


def test_per_class_ap_counts_up_to_100_detections_per_image():
    boxes = [[20 * i, 0, 20 * i + 10, 10] for i in range(12)]  # 12 objects, found exactly
    r = metrics_of([det(boxes, [1 - i / 100 for i in range(12)], [0] * 12)], [gt(boxes, [0] * 12)], 1)
    for key in ("map", "map_50", "map_75"):
        assert float(r["per_class"][key][0]) == pytest.approx(1.0), key  # not 10 / 12: maxDets 100, not 10


def test_targets_without_difficult_count_every_object():
    preds = [det([[0, 0, 10, 10], [50, 50, 60, 60]], [0.9, 0.8], [0, 1])]
    targets = [gt([[0, 0, 10, 10], [20, 20, 30, 30]], [0, 1], difficult=[False, True])]
    plain = [{k: v for k, v in t.items() if k != "difficult"} for t in targets]
    want = metrics_of(preds, [gt([[0, 0, 10, 10], [20, 20, 30, 30]], [0, 1])], 2)
    got = metrics_of(preds, plain, 2)
    assert got["per_class"]["num_positives"].tolist() == [1, 1]
    for key in ("map", "map_50", "voc07_map_50", "voc_map_50"):
        torch.testing.assert_close(got[key], want[key])


def test_malformed_image_dicts_are_named_in_full():
    one = [gt([[0, 0, 10, 10]], [0])]
    cases = [
        ([det([[0, 0, 1, 1]], [0.5], [0])], [{"boxes": torch.zeros(1, 5), "labels": torch.tensor([0])}],
         r"image 0: ground truth boxes must be float \(1, 4\) for 1 labels, got torch.float32 \(1, 5\)"),
        ([{**det([[0, 0, 1, 1]], [0.5], [0]), "scores": torch.ones(2)}], one,
         r"image 0: detections scores must have shape \(1,\), got \(2,\)"),
        ([det([[0, 0, 1, 1]], [0.5], [0])], [{**one[0], "difficult": torch.zeros(2, dtype=torch.bool)}],
         r"image 0: ground truth difficult must have shape \(1,\), got \(2,\)"),
    ]
    for dets, gts, message in cases:
        with pytest.raises(ValueError, match=f"^{message}$"):
            check_images(dets, gts, 2)
    with pytest.raises(ValueError, match="^matching needs at least one image$"):
        match_detections([], [], 2)


def test_voc_ground_truth_without_difficult_has_none():
    preds = [det([[0, 0, 10, 10], [20, 20, 30, 30]], [0.9, 0.8], [0, 0])]
    targets = [gt([[0, 0, 10, 10], [20, 20, 30, 30]], [0, 0], difficult=[False, True])]
    plain = [{k: v for k, v in t.items() if k != "difficult"} for t in targets]
    r = voc_evaluate(preds, plain, 1)
    assert r["num_positives"].tolist() == [2] and r["voc_ap"].tolist() == [1.0]


def test_matching_keeps_tied_scores_in_input_order():
    # 20 detections with one score, each of its own class: a stable sort keeps them as given
    # (torch's CPU sort is not stable beyond ~16 values).
    boxes = [[20 * i, 0, 20 * i + 10, 10] for i in range(20)]
    m = match_detections([det(boxes, [0.5] * 20, list(range(20)))], [gt(boxes[:1], [0])], 20)
    assert m.labels.tolist() == list(range(20))


def test_a_class_without_ground_truth_before_others_does_not_stop_their_ap():
    r = voc_evaluate([det([[0, 0, 10, 10]], [0.9], [2])], [gt([[0, 0, 10, 10]], [2])], 3)
    assert math.isnan(r["voc_ap"][0]) and math.isnan(r["voc_ap"][1]) and r["voc_ap"][2] == 1.0


def test_bad_input_fails_loudly():
    with pytest.raises(ValueError, match="num_classes must be >= 1, got 0"):
        DetectionMetrics(0)
    targets = [gt([[0, 0, 10, 10]], [0])]
    with pytest.raises(ValueError, match="labels must be integers in 0..1"):
        voc_evaluate([det([[0, 0, 1, 1]], [0.5], [-1])], targets, 2)
    with pytest.raises(ValueError, match="1 detection dicts but 2"):
        voc_evaluate([det([], [], [])], targets * 2, 2)
    with pytest.raises(ValueError, match="lacks \\['scores'\\]"):
        voc_evaluate([{"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}], targets, 2)
    with pytest.raises(RuntimeError, match="DetectionMetrics has no images to evaluate: called before any update"), \
            pytest.warns(UserWarning, match="before the"):
        DetectionMetrics(2).compute()


# ------------------------------------------------------------------------------------ references


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_voc_evaluate_matches_a_plain_port_of_voc_eval_py(seed):
    preds, targets = random_split(seed)
    voc = voc_evaluate(preds, targets, num_classes=4)
    for c in range(3):  # class 3 never has ground truth
        ap07, ap = voc_eval_port(preds, targets, c)
        assert voc["voc07_ap"][c].item() == pytest.approx(ap07, abs=1e-12), c
        assert voc["voc_ap"][c].item() == pytest.approx(ap, abs=1e-12), c
    assert math.isnan(voc["voc_ap"][3].item())


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_coco_numbers_match_pycocotools(seed):
    preds, targets = random_split(seed)
    assert any(t["difficult"].any() for t in targets)  # iscrowd is exercised
    r = metrics_of(preds, targets, 4)
    stats = cocoeval_of(preds, targets)
    assert 0.05 < stats[0] < 0.95  # neither trivial nor perfect
    for i, key in enumerate(("map", "map_50", "map_75")):
        assert r[key].item() == pytest.approx(stats[i], abs=1e-6), key
    for c in range(3):
        per_class = cocoeval_of(preds, targets, cat_ids=[c])
        assert r["per_class"]["map"][c].item() == pytest.approx(per_class[0], abs=1e-6), c
        assert r["per_class"]["map_50"][c].item() == pytest.approx(per_class[1], abs=1e-6), c
        assert r["per_class"]["map_75"][c].item() == pytest.approx(per_class[2], abs=1e-6), c


# ------------------------------------------------------------------------------------------ DDP


def test_merged_halves_equal_the_whole_split():
    """Two processes' states, concatenated as a DDP sync does, give the numbers of one process."""
    preds, targets = random_split(1, num_images=14)
    whole = DetectionMetrics(4)
    for i in range(0, 14, 3):  # several update() calls, batches of 3
        whole.update(preds[i : i + 3], targets[i : i + 3])
    rank0, rank1 = DetectionMetrics(4), DetectionMetrics(4)
    rank0.update(preds[:5], targets[:5])
    rank0.update(preds[5:7], targets[5:7])
    rank1.update(preds[7:], targets[7:])
    rank0.merge_state(rank1)
    expected, merged = whole.compute(), rank0.compute()
    assert expected["voc_map_50"].item() > 0.1
    for key in expected.keys() - {"per_class"}:
        torch.testing.assert_close(merged[key], expected[key], equal_nan=True, msg=key)
    for key, value in expected["per_class"].items():
        torch.testing.assert_close(merged["per_class"][key], value, equal_nan=True, msg=key)


def test_a_ddp_sync_gathers_every_rank():
    """compute() syncs through a stand-in all_gather (2 ranks holding the same images): the states
    become gathered tensors, and the numbers are those of one process that saw every image twice."""
    preds, targets = random_split(2)
    def all_gather(tensor: torch.Tensor, group=None) -> list[torch.Tensor]:
        return [tensor, tensor.clone()]

    synced = DetectionMetrics(4, dist_sync_fn=all_gather, distributed_available_fn=lambda: True)
    twice = DetectionMetrics(4)
    synced.update(preds[:6], targets[:6])
    synced.update(preds[6:], targets[6:])
    twice.update(preds, targets)
    twice.update(preds, targets)
    with synced.sync_context(dist_sync_fn=all_gather):
        assert isinstance(synced.det_boxes, torch.Tensor)  # gathered and concatenated, no longer a list
        assert synced.det_counts.shape == (2 * len(preds),)  # one count per image of every rank
    got, expected = synced.compute(), twice.compute()
    for key in ("map", "map_50", "map_75", "voc07_map_50", "voc_map_50"):
        torch.testing.assert_close(got[key], expected[key], equal_nan=True, msg=key)


def test_one_class_keeps_per_class_tensors():
    """A one-class dataset (raccoon): per-class results read through ``per_class`` are (1,) tensors, not
    torchmetrics' squeezed scalars."""
    m = DetectionMetrics(num_classes=1)
    box = torch.tensor([[0.1, 0.1, 0.5, 0.5]])
    m.update([{"boxes": box, "scores": torch.tensor([0.9]), "labels": torch.tensor([0])}],
             [{"boxes": box, "labels": torch.tensor([0]), "difficult": torch.tensor([False])}])
    r = m.compute()
    kept = per_class(r)
    assert {k: tuple(v.shape) for k, v in kept.items()} == {k: (1,) for k in r["per_class"]}
    assert kept["map_50"][0].item() == 1.0 and r["map_50"].item() == 1.0
