"""detector inspect: the debug config's anchors, matches and augmented batches, on data
generated into a temporary folder."""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import pytest
import yaml
from PIL import Image

from detector.cli.inspect import main
from detector.data.shapes import CLASS_NAMES
from detector.defaults import IMAGENET_MEAN
from detector.inspection.views import load_config
from detector.training.tasks.detection import AnchorConfig, DetectorModule, HeadConfig
from helpers import detector, small_debug_config


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """configs/debug.yaml with its data written into a temporary folder, and fewer, smaller images."""
    return small_debug_config(tmp_path_factory.mktemp("inspect"), n_val=2)


def test_load_config_links_the_model_to_the_data(config):
    cfg = load_config(config)
    model = yaml.safe_load(config.read_text())["model"]["init_args"]
    assert cfg.image_size == model["image_size"] == cfg.data["image_size"]
    assert cfg.anchors.grids == tuple(model["anchors"]["grids"]) and cfg.anchors.k == 9
    assert len(cfg.anchors) == 9 * sum(g * g for g in model["anchors"]["grids"])
    assert tuple(cfg.data["mean"]) == IMAGENET_MEAN  # resnet18's statistics, as detector train links them
    assert cfg.iou_threshold == 0.4


def test_inspect_anchors_matches_and_batch(config, tmp_path):
    out = tmp_path / "out"
    assert main(["anchors", "--config", str(config), "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["anchors.png"]
    assert main(["matches", "--config", str(config), "--out", str(out), "--images", "3"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["anchors.png", "matches.png", "matches.txt"]
    assert main(["batch", "--config", str(config), "--out", str(out), "--images", "4", "--batches", "2"]) == 0
    assert {p.name for p in out.glob("batch_*")} == {"batch_0.png"}  # 6 train images in batches of 4, last one dropped
    for name in ("anchors.png", "matches.png", "batch_0.png"):
        width, height = Image.open(out / name).size
        assert width > 300 and height > 200
    # The data was generated where the config points, not into the repository.
    data = Path(yaml.safe_load(config.read_text())["data"]["train_json"])
    objects = len(json.loads(data.read_text())["annotations"])
    assert f"objects: {objects};" in (out / "matches.txt").read_text()


def test_inspect_predictions_uses_the_checkpoints_size(config, tmp_path):
    """A 64 px checkpoint on a config whose model says 96 px: the checkpoint decides, as in detector eval."""
    model = DetectorModule(
        num_classes=7, class_names=CLASS_NAMES, backbone="resnet18", weights="none", image_size=64,
        anchors=AnchorConfig(grids=[2, 1]), head=HeadConfig(channels=32),
    )
    trainer = L.Trainer(logger=False, enable_checkpointing=False, accelerator="cpu", devices=1, enable_progress_bar=False)
    trainer.strategy.connect(model)
    trainer.save_checkpoint(tmp_path / "tiny.ckpt", weights_only=True)
    out = tmp_path / "out"
    assert main(["predictions", "--config", str(config), "--out", str(out), "--checkpoint", str(tmp_path / "tiny.ckpt"),
                 "--images", "2", "--score", "0"]) == 0
    written = sorted(out.iterdir())
    assert [p.name for p in written] == ["detections.png", "raw_predictions.png"]
    assert all(Image.open(p).size[0] > 300 for p in written)
    code, err = detector("inspect", "predictions", "--config", str(config), "--out", str(out))
    assert code == 2 and err == "detector inspect: predictions needs --checkpoint (see detector inspect --help)\n"


def test_inspect_anchors_on_a_picture(config, tmp_path, voc_sample):
    photo = voc_sample / "JPEGImages" / "000022.jpg"
    assert main(["anchors", "--config", str(config), "--out", str(tmp_path), "--image", str(photo), "--palette", "64"]) == 0
    path = tmp_path / "anchors.png"
    assert path.stat().st_size > 10_000 and Image.open(path).mode == "P"
