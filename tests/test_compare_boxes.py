"""Tighter boxes (issue 36): the side-by-side picture of two checkpoints' boxes
(``detector inspect compare-boxes``) and ``detector inspect matches`` with ATSS."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
import yaml
from matplotlib.patches import Rectangle
from PIL import Image

from coco_files import write_jpeg, write_json
from detector.autoanchor.coverage import format_statistics, match_statistics
from detector.cli.inspect import main
from detector.core.anchors import make_anchors
from detector.data.records import load_records
from detector.data.shapes import CLASS_NAMES
from detector.pictures import best_iou_per_object, box_comparison_figure
from detector.training.tasks.detection import AnchorConfig, DetectorModule, HeadConfig, LossConfig
from helpers import detector

REPO = Path(__file__).resolve().parents[1]


def _rectangles(ax) -> list[Rectangle]:
    return [p for p in ax.patches if isinstance(p, Rectangle)]


def test_best_iou_per_object_counts_only_detections_of_the_objects_class():
    target = {"boxes": torch.tensor([[10.0, 10, 50, 50], [60, 60, 90, 90]]), "labels": torch.tensor([0, 1])}
    prediction = {
        "boxes": torch.tensor([[10.0, 10, 50, 52], [60, 60, 90, 90], [5, 5, 60, 60]]),
        "labels": torch.tensor([0, 0, 0]),  # the exact box on object 1 has the wrong class
    }
    best = best_iou_per_object(prediction, target)
    torch.testing.assert_close(best, torch.tensor([1600 / 1680, 0.0]))
    empty = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)}
    assert best_iou_per_object(empty, target).tolist() == [0.0, 0.0]


def test_box_comparison_figure_draws_both_models_over_the_same_truth():
    image = np.zeros((100, 120, 3), np.uint8)
    target = {"boxes": np.array([[10.0, 10, 50, 50]]), "labels": np.array([0])}
    loose = {"boxes": torch.tensor([[5.0, 5, 60, 60], [70, 70, 90, 90]]), "labels": torch.tensor([0, 0]),
             "scores": torch.tensor([0.9, 0.3])}
    tight = {"boxes": torch.tensor([[10.0, 10, 50, 52]]), "labels": torch.tensor([0]), "scores": torch.tensor([0.8])}
    fig = box_comparison_figure(image, target, [loose, tight], ["old", "new"], ["thing"])
    left, right = fig.axes
    assert len(_rectangles(left)) == 1 + 2 and len(_rectangles(right)) == 1 + 1  # the truth, then the detections
    for ax in (left, right):
        truth = _rectangles(ax)[0]
        assert (truth.get_x(), truth.get_y(), truth.get_width(), truth.get_height()) == (10, 10, 40, 40)
        assert truth.get_linestyle() == "--"
    assert left.get_title().startswith("old\n") and f"{1600 / 3025:.3f}" in left.get_title()
    assert right.get_title().startswith("new\n") and f"{1600 / 1680:.3f}" in right.get_title()
    assert "IoU 0.53" in [t.get_text() for t in left.texts] and "IoU 0.95" in [t.get_text() for t in right.texts]
    plt.close(fig)


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """configs/debug.yaml with its (generated) data in a temporary folder, fewer and smaller images."""
    root = tmp_path_factory.mktemp("compare")
    cfg = yaml.safe_load((REPO / "configs" / "debug.yaml").read_text())
    data = root / "shapes"
    cfg["data"].update(
        train_json=str(data / "shapes_train.json"),
        val_json=str(data / "shapes_val.json"),
        image_dir=str(data / "JPEGImages"),
        generate={"n_train": 6, "n_val": 3, "image_size": 64},
        batch_size=4,
    )
    path = root / "debug.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


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


def test_match_statistics_with_atss_counts_the_objects_it_forces(tmp_path):
    """A 2x2 grid of quarters and the whole image: an object equal to a quarter is ATSS's own; a small
    one near a corner, whose candidates' centres all miss it, only has the anchor forced to it; the
    left half has three anchors at IoU 0.5, but the image's centre lies on its edge."""
    anchors = make_anchors([2, 1], [1.0], [(1.0, 1.0)])
    boxes = {1: [[50, 50, 100, 100]], 2: [[5, 5, 20, 20], [50, 0, 100, 50]], 3: [[0, 0, 50, 100]]}
    data = {
        "images": [{"id": i, "file_name": f"{i}.jpg", "width": 100, "height": 100} for i in boxes],
        "annotations": [
            {"id": 10 * i + j, "image_id": i, "bbox": [x1, y1, x2 - x1, y2 - y1], "category_id": 1 + j}
            for i, bs in boxes.items() for j, (x1, y1, x2, y2) in enumerate(bs)
        ],
        "categories": [{"id": 1, "name": "first"}, {"id": 2, "name": "second"}],
    }
    for i in boxes:
        write_jpeg(tmp_path / f"{i}.jpg", 100, 100)
    split = load_records(write_json(tmp_path / "d.json", data), tmp_path)
    stats = match_statistics(split, anchors, iou_threshold=0.4, matching="atss", atss_topk=2)
    assert stats["objects"] == 4 and stats["unmatched"] == 0
    assert stats["forced_only"] == 1  # the small object
    assert stats["per_class"] == {"first": (3, 1, 0), "second": (1, 0, 0)}
    assert stats["positives_per_object"] == (pytest.approx(5 / 4), 1, 2)  # the left half: two quarters
    fixed = match_statistics(split, anchors, iou_threshold=0.4)
    assert fixed["forced_only"] == 1 and fixed["positives_per_object"] == (pytest.approx(6 / 4), 1, 3)
    text = format_statistics(stats, anchors, 0.4, split, matching="atss", atss_topk=2)
    assert "ATSS, 2 candidates per grid" in text and "no candidate passed their ATSS threshold): 1 (25.0 %)" in text
