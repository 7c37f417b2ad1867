"""``detector data audit``: k folds trained as normal runs, held-out predictions, cleanlab's ranking
as a CSV and a picture, on the tiny shapes data with labels deliberately corrupted. Two epochs
make no useful model: the training test checks the plumbing; the ranking is checked by ranking
made-up held-out predictions that are right (``--rank-only``)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from detector.research.label_issues import read_issues
from helpers import detector, tiny_config

COLUMNS = ["rank", "image_id", "file", "annotation_id", "x1", "y1", "x2", "y2", "class", "issue", "score",
           "swap", "badloc", "predicted", "predicted_score", "iou", "image_score", "image_flagged"]


def _corrupt(train_json: Path, n: int, seed: int = 0) -> tuple[dict, set[int]]:
    """Relabel ``n`` boxes of ``train_json`` as another class; returns the clean COCO and the ids."""
    coco = json.loads(train_json.read_text())
    clean = json.loads(train_json.read_text())
    rng = np.random.default_rng(seed)
    classes = [c["id"] for c in coco["categories"]]
    chosen = rng.choice(len(coco["annotations"]), size=n, replace=False)
    for i in chosen:
        a = coco["annotations"][i]
        a["category_id"] = int(rng.choice([c for c in classes if c != a["category_id"]]))
    train_json.write_text(json.dumps(coco))
    return clean, {int(coco["annotations"][i]["id"]) for i in chosen}


@pytest.fixture
def corrupted(tmp_path: Path, make_shapes: Callable[..., Path]):
    """A copy of the tiny shapes data at 8 train images (two folds of 4) with 5 boxes relabelled,
    and its config (2 epochs)."""
    root = Path(shutil.copytree(make_shapes(n_train=8, n_val=4), tmp_path / "data"))
    clean, planted = _corrupt(root / "shapes_train.json", 5)
    return tiny_config(tmp_path, root, epochs=2), root, clean, planted


@pytest.mark.usefixtures("one_thread", "no_results_folder")
def test_audit_trains_the_folds_and_ranks_every_box(corrupted, capsys):
    config, root, clean, planted = corrupted
    code, err = detector("data", "audit", str(config), "--folds", "2", "--epochs", "2", "--show", "4")
    out = capsys.readouterr().out
    assert code == 0, err[-3000:]
    for k in (1, 2):  # one line as each fold starts, one with its time as it ends; each fold a normal run folder
        assert f"fold {k}/2: training on 4 images for 2 epochs, holding out 4" in out
        assert f"fold {k}/2 done in " in out
        run = config.parent / "runs" / "audit" / "tiny" / f"fold_{k}" / "v1"
        assert (run / "checkpoints" / "last.ckpt").is_file() and (run / "config.yaml").is_file()
        held = json.loads((root / "audit" / "folds" / f"fold_{k}_heldout.json").read_text())
        assert len(held["images"]) == 4
    audit = root / "audit"
    rows = read_issues(audit / "label_issues.csv")
    assert list(rows[0]) == COLUMNS
    boxes = [r for r in rows if r["annotation_id"]]
    assert sorted(int(r["annotation_id"]) for r in boxes) == sorted(a["id"] for a in clean["annotations"])
    assert [int(r["rank"]) for r in rows] == list(range(1, len(rows) + 1))
    assert [float(r["score"]) for r in rows] == sorted(float(r["score"]) for r in rows)
    saved = json.loads((audit / "heldout_predictions.json").read_text())
    assert sorted(saved["image_ids"]) == sorted(im["id"] for im in clean["images"])
    assert saved["detections"] and min(d["score"] for d in saved["detections"]) >= 0.01
    assert (audit / "label_issues.png").stat().st_size > 1000
    assert "cleanlab flags" in out and "wrote" in out


def test_rank_only_puts_the_relabelled_boxes_first_when_the_predictions_are_right(corrupted, capsys):
    """Held-out predictions that are the clean labels (confident), saved where an audit saves
    them: the planted swaps are the top of the ranking, each as a swap."""
    config, root, clean, planted = corrupted
    audit = root / "audit"
    audit.mkdir()
    detections = [
        {"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 0.97} for a in clean["annotations"]
    ]
    (audit / "heldout_predictions.json").write_text(json.dumps({"image_ids": [im["id"] for im in clean["images"]], "detections": detections}))
    code, err = detector("data", "audit", str(config), "--rank-only", "--show", "5")
    assert code == 0, err[-3000:]
    rows = read_issues(audit / "label_issues.csv")
    top = rows[: len(planted)]
    assert {int(r["annotation_id"]) for r in top} == planted
    assert {r["issue"] for r in top} == {"swap"} and all(r["image_flagged"] == "True" for r in top)
    assert all(float(r["score"]) > float(top[-1]["score"]) for r in rows[len(planted):])
    assert (audit / "label_issues.png").is_file()
    assert not (config.parent / "runs").exists()  # no training
    out = capsys.readouterr().out  # the printout's swaps: the five worst by their swap score, each a planted box
    swaps = out.split("swap (wrong class): the worst of ")[1].split("badloc (misplaced box)")[0].splitlines()[1:]
    assert len(swaps) == len(planted) and {int(line.split("annotation ")[1].split(",")[0]) for line in swaps} == planted


def test_rank_only_without_a_previous_audit_is_one_line(corrupted):
    config, *_ = corrupted
    code, err = detector("data", "audit", str(config), "--rank-only")
    assert code == 2 and "heldout_predictions.json: no saved held-out predictions" in err and err.count("\n") == 1
