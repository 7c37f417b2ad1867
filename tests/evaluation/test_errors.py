"""The error analysis (detector.evaluation.errors): TIDE's breakdown equals tidecv's on a fixed
detection file, the per-image TP/FP/FN equal faster-coco-eval's, each error kind where it belongs,
background-only images all false positives, difficult objects neither; and the results folder's
files (errors_per_image.csv, errors.png, worst_images.png, metrics.json's errors)."""

from __future__ import annotations

import copy
import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import tide_reference
from detector.evaluation.errors import ERROR_KINDS, analyse_errors
from detector.evaluation.metrics import DetectionMetrics
from detector.evaluation.results import SplitImages, write_results

FIXTURE = Path(__file__).with_name("tide_fixture.json")  # 48 images, 97 objects (14 crowd), 242 detections


def fixture(crowd: bool = True) -> tuple[dict, list[dict]]:
    """The COCO ground truth and results of the fixed file; ``crowd=False``: every object ordinary."""
    data = json.loads(FIXTURE.read_text())
    if not crowd:
        for a in data["ground_truth"]["annotations"]:
            a["iscrowd"] = 0
    return data["ground_truth"], data["detections"]


def per_image(gt: dict, results: list[dict]) -> tuple[list[dict], list[dict]]:
    """COCO JSON -> the per-image dicts the analysis takes (xyxy, labels by category order, crowd = difficult)."""
    label = {c["id"]: i for i, c in enumerate(gt["categories"])}

    def xyxy(items: list[dict]) -> torch.Tensor:
        b = torch.tensor([x["bbox"] for x in items], dtype=torch.float64).reshape(-1, 4)
        return torch.cat([b[:, :2], b[:, :2] + b[:, 2:]], dim=1)

    dets, gts = [], []
    for image in gt["images"]:
        objects = [a for a in gt["annotations"] if a["image_id"] == image["id"]]
        found = [d for d in results if d["image_id"] == image["id"]]
        gts.append({"boxes": xyxy(objects), "labels": torch.tensor([label[a["category_id"]] for a in objects], dtype=torch.int64),
                    "difficult": torch.tensor([bool(a["iscrowd"]) for a in objects], dtype=torch.bool)})
        dets.append({"boxes": xyxy(found), "scores": torch.tensor([d["score"] for d in found], dtype=torch.float64),
                     "labels": torch.tensor([label[d["category_id"]] for d in found], dtype=torch.int64)})
    return dets, gts


def float32(dets: list[dict], gts: list[dict]) -> tuple[list[dict], list[dict]]:
    """Boxes and scores as float32, as the metrics hold them."""
    return ([{**d, "boxes": d["boxes"].float(), "scores": d["scores"].float()} for d in dets],
            [{**g, "boxes": g["boxes"].float()} for g in gts])


def tidecv(gt: dict, results: list[dict]) -> tuple[float, dict[str, float], dict[str, float]]:
    """tidecv's AP, main and special dAPs on the file (its percentages)."""
    tide = tide_reference.TIDE()
    tide.evaluate(tide_reference.COCO(copy.deepcopy(gt)), tide_reference.COCOResult(copy.deepcopy(results)), mode=tide.BOX)
    return tide.runs["dets"].ap, tide.get_main_errors()["dets"], tide.get_special_errors()["dets"]


@pytest.mark.parametrize("crowd", [True, False])
def test_breakdown_equals_tidecv_on_the_fixed_detection_file(crowd: bool):
    gt, results = fixture(crowd)
    ap, main, special = tidecv(gt, results)
    found = analyse_errors(*per_image(gt, results), num_classes=3)
    assert all(v > 0.05 for v in main.values())  # every kind present: a kind at 0 on both sides proves nothing
    assert found.ap == pytest.approx(ap / 100, abs=1e-9)
    tide_names = {"cls": "Cls", "loc": "Loc", "both": "Both", "dupe": "Dupe", "bkg": "Bkg", "missed": "Miss"}
    for kind in ERROR_KINDS:
        assert found.dap[kind] == pytest.approx(main[tide_names[kind]] / 100, abs=1e-9), kind
    assert found.dap_false_positives == pytest.approx(special["FalsePos"] / 100, abs=1e-9)
    assert found.dap_false_negatives == pytest.approx(special["FalseNeg"] / 100, abs=1e-9)


def test_tide_ap_is_coco_map_50_without_difficult_objects():
    """With every class present and no difficult object, TIDE's AP is pycocotools' mAP@0.5 (the
    flood of 110 detections on the first image is cut to 100 per image first: COCO cuts per class)."""
    gt, results = fixture(crowd=False)
    dets, gts = per_image(gt, results)
    dets = [{k: v[d["scores"].argsort(descending=True)[:100]] for k, v in d.items()} for d in dets]
    metric = DetectionMetrics(3)
    metric.update(*float32(dets, gts))
    assert analyse_errors(dets, gts, 3).ap == pytest.approx(float(metric.compute()["map_50"]), abs=1e-6)


def test_per_image_tp_fp_fn_equal_faster_coco_eval():
    from faster_coco_eval import COCO
    from faster_coco_eval.extra import Curves

    gt, results = fixture(crowd=False)  # faster-coco-eval's flags count a crowd match as a TP
    for threshold in (0.25, 0.6):
        coco_gt = COCO(copy.deepcopy(gt))
        theirs = Curves(coco_gt, coco_gt.loadRes(copy.deepcopy(results)), iouType="bbox", min_score=threshold, iou_tresh=0.5, useCats=True)
        tp: dict[int, int] = {}
        for d in theirs.cocoDt.anns.values():
            tp[d["image_id"]] = tp.get(d["image_id"], 0) + bool(d.get("tp"))
        fp = {k: len(v) for k, v in theirs.fp_image_ann_map.items()}
        fn = {k: len(v) for k, v in theirs.fn_image_ann_map.items()}
        rows = analyse_errors(*per_image(gt, results), 3).image_counts(threshold)
        ours = [(r["tp"], r["fp"], r["fn"]) for r in rows]
        assert ours == [(tp.get(i["id"], 0), fp.get(i["id"], 0), fn.get(i["id"], 0)) for i in gt["images"]], threshold
        assert sum(r["tp"] for r in rows) > 10 and sum(r["fp"] for r in rows) > 10 and sum(r["fn"] for r in rows) > 10


def det(boxes: list, scores: list, labels: list) -> dict[str, torch.Tensor]:
    return {"boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4), "scores": torch.tensor(scores),
            "labels": torch.tensor(labels, dtype=torch.int64)}


def obj(boxes: list, labels: list, difficult: list | None = None) -> dict[str, torch.Tensor]:
    out = {"boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4), "labels": torch.tensor(labels, dtype=torch.int64)}
    if difficult is not None:
        out["difficult"] = torch.tensor(difficult)
    return out


def test_each_kind_of_false_positive_and_the_missed_object():
    """One image, a cat at (0, 0, 100, 100) and a dog far away: a detection of each kind."""
    gt = obj([[0, 0, 100, 100], [300, 300, 400, 400], [600, 600, 700, 700]], [0, 1, 1])
    d = det(
        [[0, 0, 100, 100],  # TP
         [2, 0, 100, 100],  # dupe: the cat is taken, IoU 0.98
         [50, 0, 150, 100],  # loc: IoU 1/3 with the cat
         [300, 300, 400, 400],  # cls: a cat where the dog is
         [350, 300, 450, 400],  # both: a cat half on the dog
         [900, 900, 950, 950]],  # bkg
        [0.9, 0.8, 0.7, 0.6, 0.5, 0.4], [0, 0, 0, 0, 0, 0])
    found = analyse_errors([d], [gt], 2)
    assert found.images[0].kind.tolist() == [0, 4, 2, 1, 3, 5]  # TP, dupe, loc, cls, both, bkg
    assert found.errors == {"cls": 1, "loc": 1, "both": 1, "dupe": 1, "bkg": 1, "missed": 1}  # the far dog
    assert found.images[0].matched.tolist() == [0, -1, -1]
    counts = found.image_counts(0.55)  # the four best kept
    assert counts[0] == {"tp": 1, "fp": 3, "fn": 2, "objects": 3, "detections": 4, "cls": 1, "loc": 1, "both": 0, "dupe": 1, "bkg": 0}


def test_a_background_only_image_makes_every_detection_a_background_error():
    gts = [obj([[0, 0, 50, 50]], [0]), obj([], [])]
    dets = [det([[0, 0, 50, 50]], [0.9], [0]), det([[0, 0, 50, 50], [10, 10, 30, 30]], [0.8, 0.3], [0, 1])]
    found = analyse_errors(dets, gts, 2)
    assert found.images[1].kind.tolist() == [5, 5]
    assert found.image_counts(0.25)[1] == {"tp": 0, "fp": 2, "fn": 0, "objects": 0, "detections": 2, "cls": 0, "loc": 0, "both": 0, "dupe": 0, "bkg": 2}
    assert found.dap["bkg"] > 0 and found.errors["bkg"] == 2
    assert analyse_errors(dets[:1], gts[:1], 2).ap == pytest.approx(1.0)  # what the background image cost


def test_difficult_objects_are_neither_found_nor_missed_and_detections_on_them_neither_true_nor_false():
    gts = [obj([[0, 0, 50, 50], [100, 100, 150, 150]], [0, 0], [False, True])]
    dets = [det([[0, 0, 50, 50], [105, 105, 145, 145], [110, 110, 160, 160]], [0.9, 0.8, 0.7], [0, 0, 1])]
    found = analyse_errors(dets, gts, 2)
    v = found.images[0]
    assert v.ignored.tolist() == [False, True, False]  # the dog-class one is not on a dog region: a FP
    assert found.image_counts(0.25)[0] == {"tp": 1, "fp": 1, "fn": 0, "objects": 1, "detections": 3, "cls": 0, "loc": 0, "both": 0, "dupe": 0, "bkg": 1}


def test_an_object_matched_below_the_threshold_is_missed_at_it():
    found = analyse_errors([det([[0, 0, 10, 10]], [0.2], [0])], [obj([[0, 0, 10, 10]], [0])], 1)
    assert found.image_counts(0.25)[0]["fn"] == 1 and found.image_counts(0.2)[0]["tp"] == 1
    assert found.ap == 1.0 and all(v == 0 for v in found.dap.values())
    assert found.summary_line() == "errors (dAP@0.5): cls 0.000, loc 0.000, both 0.000, dupe 0.000, bkg 0.000, missed 0.000"


def test_no_objects_and_no_detections_anywhere_gives_no_ap():
    found = analyse_errors([det([], [], [])], [obj([], [])], 1)
    assert math.isnan(found.ap) and found.as_dict(0.25)["ap"] is None


def test_the_results_folder_holds_the_error_analysis(tmp_path: Path):
    gt, results = fixture()
    dets, gts = per_image(gt, results)
    rng = np.random.default_rng(0)
    paths = []
    for image in gt["images"]:
        paths.append(tmp_path / "images" / image["file_name"])
        paths[-1].parent.mkdir(exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (image["height"], image["width"], 3), dtype=np.uint8)).save(paths[-1])
    images = SplitImages.of([i["id"] for i in gt["images"]], [_Record(i["id"], p) for i, p in zip(gt["images"], paths)], tmp_path / "images")
    summary: dict = {"map": 0.5}
    out = tmp_path / "results"
    written = write_results(out, *float32(dets, gts), ["cat", "dog", "bird"], summary, images=images)
    assert {"errors_per_image.csv", "errors.png", "worst_images.png", "metrics.json"} <= {p.name for p in written}
    errors = json.loads((out / "metrics.json").read_text())["errors"]
    ap, main, _ = tidecv(gt, results)
    assert errors["ap"] == pytest.approx(ap / 100, abs=1e-6) and errors["dap"]["bkg"] == pytest.approx(main["Bkg"] / 100, abs=1e-6)
    assert errors["summary"].startswith("errors (dAP@0.5): cls ")
    with open(out / "errors_per_image.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 48 and rows[0]["image_id"] == "100" and rows[0]["file_name"] == "img_00.jpg"  # the 110-box flood is worst
    worst = [int(r["errors"]) for r in rows]
    assert worst == sorted(worst, reverse=True) and all(int(r["errors"]) == int(r["fp"]) + int(r["fn"]) for r in rows)
    assert all(int(r["fp"]) == sum(int(r[k]) for k in ("cls", "loc", "both", "dupe", "bkg")) for r in rows)
    at = errors["at_score_threshold"]
    assert at["fp"] == sum(int(r["fp"]) for r in rows) and at["fn"] == sum(int(r["fn"]) for r in rows)
    background = {i["id"] for i in gt["images"]} - {a["image_id"] for a in gt["annotations"]}
    assert background and all(r["fp"] == r["bkg"] for r in rows if int(r["image_id"]) in background)
    for name in ("errors.png", "worst_images.png"):
        with Image.open(out / name) as picture:
            assert picture.size[0] > 900, name


class _Record:
    """What SplitImages reads of a record."""

    def __init__(self, image_id: int, path: Path):
        self.image_id, self.path = image_id, path
