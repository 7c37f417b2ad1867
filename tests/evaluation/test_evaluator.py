"""Evaluating a trained run's checkpoint (``detector eval``, ``detector.evaluation.evaluator``): the
post-processing can be overridden and is recorded in metrics.json, beside the results pictures;
images gone bad under ``on_bad_record: skip`` are left out and listed.

The checkpoint is conftest.py's ``uninterrupted`` run: 2 epochs on the tiny shapes data.
(Were test_reliability.py's.)
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from detector.evaluation.evaluator import evaluate, format_table
from detector.training.tasks.detection import DetectorModule
from helpers import datamodule, detector, run_path
from helpers import evaluate as eval_cli


def test_eval_py_leaves_out_and_lists_images_gone_bad_under_skip(shapes_copy: Path, uninterrupted: Path):
    model = DetectorModule.load_from_checkpoint(run_path(uninterrupted) / "checkpoints" / "last.ckpt", map_location="cpu")
    dm = datamodule(shapes_copy, train_json=None, batch_size=2, on_bad_record="skip")
    dm.setup("validate")
    gone = dm.splits["val"].records[2:4]  # the whole second batch
    for record in gone:
        record.path.unlink()
    metrics = evaluate(model, dm, "val", torch.device("cpu")).summary
    assert metrics["skipped_images"] == [r.image_id for r in gone] and metrics["images"] == 5
    assert "5 images" in format_table(metrics) and "2 skipped as unreadable" in format_table(metrics)


def test_eval_py_post_processing_can_be_overridden_and_is_recorded(uninterrupted: Path, tmp_path: Path):
    ckpt = str(run_path(uninterrupted) / "checkpoints" / "last.ckpt")
    common = ["--checkpoint", ckpt, "--batch-size", "4", "--workers", "0"]
    base = eval_cli(*common, "--out", str(tmp_path / "base"))
    strict = eval_cli(*common, "--out", str(tmp_path / "strict"), "--nms-iou", "0.1", "--score-threshold", "0.5")
    assert base["postprocess"]["iou_threshold"] == 0.4 and base["postprocess"]["score_threshold"] == 0.01
    written = {p.name for p in (tmp_path / "base").iterdir()}  # the results folder, beside the numbers
    assert {"PR_curve.png", "F1_curve.png", "confusion_matrix.png", "predictions.png", "detections.json"} <= written
    assert strict["postprocess"]["iou_threshold"] == 0.1 and strict["postprocess"]["score_threshold"] == 0.5
    counted = {name: json.loads((tmp_path / name / "detections.json").read_text()) for name in ("base", "strict")}
    assert len(counted["base"]) > len(counted["strict"]) and min(d["score"] for d in counted["base"]) >= 0.01
    assert all(d["score"] >= 0.5 for d in counted["strict"])
    code, err = detector("eval", *common, "--out", str(tmp_path / "bad"), "--nms-iou", "1.5")
    assert code == 2 and err.startswith("detector eval: --nms-iou must be in [0, 1]; got 1.5"), err

