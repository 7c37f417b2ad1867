"""Tighter boxes (issue 36) in ``detector inspect``: ``compare-boxes`` (two checkpoints' detections
side by side on one validation image) and ``matches`` with ATSS."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch
from PIL import Image

from detector.cli.inspect import main
from detector.data.shapes import CLASS_NAMES
from detector.pictures import box_comparison_figure
from detector.training.tasks.detection import AnchorConfig, DetectorModule, HeadConfig, LossConfig
from helpers import detector, small_debug_config


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """configs/debug.yaml with its (generated) data in a temporary folder, fewer and smaller images."""
    return small_debug_config(tmp_path_factory.mktemp("compare"), n_val=3)


def _tiny_checkpoint(path: Path, image_size: int, loss: LossConfig, seed: int) -> Path:
    torch.manual_seed(seed)
    model = DetectorModule(
        num_classes=7, class_names=CLASS_NAMES, backbone="resnet18", weights="none", image_size=image_size,
        anchors=AnchorConfig(grids=[2, 1]), head=HeadConfig(channels=32, bias=0.0), loss=loss,
    )
    trainer = L.Trainer(logger=False, enable_checkpointing=False, accelerator="cpu", devices=1, enable_progress_bar=False)
    trainer.strategy.connect(model)
    trainer.save_checkpoint(path, weights_only=True)
    return path


def test_inspect_compare_boxes_on_tiny_checkpoints(config, tmp_path):
    """Two untrained checkpoints (another size and loss each): one picture, two panels, the same
    ground truth; bad calls fail in one line."""
    old = _tiny_checkpoint(tmp_path / "old.ckpt", 64, LossConfig(), seed=0)
    new = _tiny_checkpoint(tmp_path / "new.ckpt", 96, LossConfig(box="giou", quality="qfl", matching="atss"), seed=1)
    out = tmp_path / "out"
    assert main(["compare-boxes", "--config", str(config), "--out", str(out), "--baseline", str(old),
                 "--checkpoint", str(new), "--index", "2", "--score", "0.3"]) == 0
    assert [p.name for p in out.iterdir()] == ["compare_boxes.png"]
    width, height = Image.open(out / "compare_boxes.png").size
    assert width >= 2 * height > 400  # two square panels side by side
    code, err = detector("inspect", "compare-boxes", "--config", str(config), "--out", str(out), "--checkpoint", str(new))
    assert code == 2 and err == "detector inspect: compare-boxes needs --baseline and --checkpoint (see detector inspect --help)\n"
    code, err = detector("inspect", "compare-boxes", "--config", str(config), "--out", str(out), "--baseline", str(old),
                         "--checkpoint", str(new), "--index", "3")
    assert code == 2 and "--index 3 is not one of its 3 images (0 to 2)" in err


def test_inspect_compare_boxes_draws_what_each_model_detects(config, tmp_path, monkeypatch):
    """The panels hold each checkpoint's own detections: the same checkpoint twice, the same boxes."""
    import detector.inspection.views as views

    drawn = {}

    def capture(image, target, predictions, names, class_names=None, size=6.0):
        drawn.update(image=image, target=target, predictions=predictions, names=names)
        return box_comparison_figure(image, target, predictions, names, class_names, size)

    monkeypatch.setattr(views, "box_comparison_figure", capture)
    ckpt = _tiny_checkpoint(tmp_path / "same.ckpt", 64, LossConfig(), seed=0)
    cfg = views.load_config(config)
    views.inspect_compare_boxes(cfg, tmp_path, ckpt, ckpt, index=1, score=0.0)
    left, right = drawn["predictions"]
    assert len(left["boxes"]) > len(drawn["target"]["boxes"])  # everything above 0
    torch.testing.assert_close(left["boxes"], right["boxes"])
    views.inspect_compare_boxes(cfg, tmp_path, ckpt, ckpt, index=1)  # no --score: as many as objects, the best
    best, _ = drawn["predictions"]
    assert len(best["boxes"]) == len(drawn["target"]["boxes"]) > 0
    torch.testing.assert_close(best["scores"], left["scores"][: len(best["scores"])])
    left = best
    height, width = drawn["image"].shape[:2]
    assert float(left["boxes"][:, 2].max()) > 1.5  # in the original image's pixels, not [0, 1]
    assert drawn["target"]["boxes"].shape[1] == 4 and (drawn["target"]["boxes"][:, 2] <= width).all()
    assert drawn["names"][0].startswith("left: ") and drawn["names"][1].startswith("right: ")


def test_inspect_matches_with_atss(config, tmp_path):
    out = tmp_path / "out"
    assert main(["matches", "--config", str(config), "--out", str(out), "--images", "2", "--matching", "atss"]) == 0
    text = (out / "matches.txt").read_text()
    assert "ATSS, 9 candidates per grid" in text and "IoU threshold" not in text
    assert Image.open(out / "matches.png").size[0] > 300
    assert main(["matches", "--config", str(config), "--out", str(out), "--images", "2"]) == 0
    assert "IoU threshold 0.4" in (out / "matches.txt").read_text()  # the config's own: fixed
