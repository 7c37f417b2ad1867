"""The README's Python block runs as written, and the fields its comment names are the ones a
``Prediction`` has (a reader copies both)."""

from __future__ import annotations

import re
from dataclasses import fields
from pathlib import Path

import lightning as L
import numpy as np
import pytest
from PIL import Image

from detector.deploy.prediction import Prediction
from detector.training.tasks.detection import AnchorConfig, DetectorModule, HeadConfig

REPO = Path(__file__).resolve().parents[1]


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", (REPO / "README.md").read_text(), flags=re.S)


def test_the_readme_has_its_python_block():
    assert len(python_blocks()) == 1


def test_the_readme_python_block_runs_and_names_prediction_fields(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    (block,) = python_blocks()
    monkeypatch.chdir(tmp_path)
    model = DetectorModule(num_classes=2, class_names=["a", "b"], backbone="resnet18", weights="none", image_size=64,
                           anchors=AnchorConfig(grids=[2, 1]), head=HeadConfig(channels=16))
    checkpoint = Path(re.search(r'from_checkpoint\("([^"]+)"', block).group(1))
    checkpoint.parent.mkdir(parents=True)
    trainer = L.Trainer(logger=False, enable_checkpointing=False, accelerator="cpu", devices=1, enable_progress_bar=False)
    trainer.strategy.connect(model)
    trainer.save_checkpoint(checkpoint, weights_only=True)
    photos = Path(re.search(r'predict\("([^"]+)"\)', block).group(1))
    photos.mkdir()
    for i, size in enumerate([(120, 90), (64, 100)]):
        Image.fromarray(np.full((size[1], size[0], 3), 60 * i, np.uint8)).save(photos / f"p{i}.jpg")

    namespace: dict = {}
    exec(compile(block, "README.md", "exec"), namespace)  # noqa: S102 - the README's own example, run as written

    results = namespace["results"]
    assert len(results) == 2 and all(isinstance(r, Prediction) for r in results)
    assert Image.open(tmp_path / "first.png").size == (results[0].width, results[0].height)
    named = re.search(r"one Prediction per image: (.*)", block).group(1)
    names = [n.strip() for n in re.sub(r"\(.*?\)", "", named).split(",")]
    assert names and set(names) <= {f.name for f in fields(Prediction)}, names
