"""``detector data report CONFIG``: a PNG per look at the training data (classes, box shapes, objects
per image, examples, anchor coverage) and report.txt, on the tiny COCO dataset of coco_files."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from coco_files import tiny_coco, write_json
from helpers import detector

PICTURES = ["anchor_coverage.png", "box_shapes.png", "classes.png", "examples.png", "objects_per_image.png"]


def config(root: Path, anchors: str) -> Path:
    write_json(root / "train.json", tiny_coco(root))
    path = root / f"config_{anchors.split(':')[0].strip('{')}.yaml"
    path.write_text(
        f"""
model:
  class_path: detector.training.DetectorModule
  init_args: {{backbone: resnet18, weights: none, image_size: 64, anchors: {anchors}}}
data: {{image_dir: {root}/images, train_json: {root}/train.json, batch_size: 2, num_workers: 0}}
"""
    )
    return path


@pytest.mark.parametrize("anchors", ["{grids: [2, 1]}", "auto"])
def test_data_report_writes_each_picture(tmp_path, capsys, anchors):
    path = config(tmp_path, anchors)
    out = tmp_path / "out"
    args = ["data", "report", str(path)] + (["--out", str(out)] if anchors != "auto" else [])
    code, err = detector(*args)
    assert code == 0, err[-2000:]
    if anchors == "auto":
        out = tmp_path / "report"  # the default: beside the train JSON
    assert sorted(p.name for p in out.iterdir()) == sorted([*PICTURES, "report.txt"])
    assert capsys.readouterr().out.count("wrote ") == 6
    for name in PICTURES:
        with Image.open(out / name) as image:
            image.verify()
            assert image.format == "PNG" and image.size[0] >= 600 and image.size[1] >= 250, name
        assert (out / name).stat().st_size > 10_000, name
    text = (out / "report.txt").read_text()
    assert text.startswith("train.json (3 images, 3 boxes)") and "| dog | 1 | 1 |" in text and "| cat | 2 | 2 |" in text
    assert ("anchors: auto -> " in text) == (anchors == "auto")
    assert "45 anchors at 64 px" in text or anchors == "auto"
