"""anchors: auto (detector.autoanchor.fit, detector.autoanchor.choice): the image size and the fewest anchors
that give 99 % of the training boxes an anchor at IoU above the matching threshold, judged by the
matcher's own IoU on make_anchors' anchors; resolved before a run is built and saved in its config;
``detector data anchors`` prints the choice."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from torchvision.ops import box_iou

from coco_files import two_class_json, write_jpeg, write_json
from detector.autoanchor.coverage import match_statistics
from detector.autoanchor.fit import best_anchor_iou, choose_anchors, choose_image_size, nearest_cell_iou
from detector.core.anchors import LESSON_RATIOS, LESSON_ZOOMS, AnchorConfig, make_anchors
from detector.core.boxes import paired_box_iou
from detector.data.records import load_records
from detector.inspection.views import load_config
from detector.model.head import grid_problem, head_grid_sizes
from helpers import detector, run_path, tiny_config

# Boxes the lesson's anchors miss, as (width, height) over the image's: tall and thin, wide and flat, small.
AWKWARD = {"tall": (0.15, 0.45), "wide": (0.45, 0.15), "small": (0.1, 0.1)}


def boxes_of(shapes: list[tuple[float, float]], n: int, seed: int = 0) -> torch.Tensor:
    """``n`` boxes of each ``(w, h)`` at random places inside the unit square: ``(n * len(shapes), 4)`` xyxy."""
    g = torch.Generator().manual_seed(seed)
    parts = []
    for w, h in shapes:
        x, y = torch.rand(n, generator=g) * (1 - w), torch.rand(n, generator=g) * (1 - h)
        parts.append(torch.stack([x, y, x + w, y + h], dim=1))
    return torch.cat(parts)


def covered(boxes: torch.Tensor, anchors: AnchorConfig, threshold: float = 0.4) -> float:
    return float((best_anchor_iou(boxes, anchors.make()) > threshold).float().mean())


def test_paired_box_iou_is_the_diagonal_of_box_iou():
    a, b = boxes_of([(0.3, 0.2), (0.1, 0.5)], 20, seed=1), boxes_of([(0.25, 0.25), (0.2, 0.4)], 20, seed=2)
    assert torch.allclose(paired_box_iou(a, b), box_iou(a, b).diagonal(), atol=1e-6)


@pytest.mark.parametrize("grid", [7, 4, 3, 1])
def test_the_nearest_cell_holds_each_shapes_best_anchor(grid):
    boxes = boxes_of([(0.05, 0.3), (0.4, 0.1), (0.2, 0.2), (0.9, 0.8)], 50, seed=grid)
    zooms, ratios = [0.6, 1.3], [(1.0, 1.0), (1.0, 0.5)]
    fast = nearest_cell_iou(boxes, grid, zooms, ratios)  # (N, 4)
    for j, (z, r) in enumerate((z, r) for z in zooms for r in ratios):
        assert torch.allclose(fast[:, j], best_anchor_iou(boxes, make_anchors([grid], [z], [r])), atol=1e-6)


def test_auto_covers_the_boxes_the_lesson_anchors_miss_with_fewer_anchors_than_a_rich_set():
    boxes = boxes_of(list(AWKWARD.values()), 100)
    assert covered(boxes, AnchorConfig()) < 0.6  # the lesson's 189 anchors
    choice = choose_anchors(boxes)
    assert choice.reached and choice.coverage >= 0.99
    assert choice.coverage == pytest.approx(covered(boxes, choice.anchors))
    assert grid_problem(choice.anchors.grids, choice.image_size) is None
    rich = AnchorConfig(list(head_grid_sizes(choice.image_size)), list(LESSON_ZOOMS), [*LESSON_RATIOS, (1.0, 0.33), (0.33, 1.0)])
    assert covered(boxes, rich) < 0.8 and choice.num_anchors < len(rich.make()) / 4  # every grid, k = 15
    assert choice.num_anchors == len(choice.anchors.make())
    assert f"{choice.num_anchors} anchors" in choice.summary() and "out of reach" not in choice.summary()


def test_the_image_size_keeps_the_small_boxes_16_pixels_wide():
    assert choose_image_size(boxes_of([(0.5, 0.4)], 50)) == 224  # the smallest size offered
    assert choose_image_size(boxes_of([(0.06, 0.3)], 50)) == 288  # 16 / 0.06 = 267 px
    assert choose_image_size(boxes_of([(0.001, 0.3)], 50)) == 640  # out of reach: the largest


def test_out_of_reach_says_so_and_takes_the_best_coverage_with_the_fewest_anchors():
    quarters = torch.tensor([[0, 0, 0.5, 0.5], [0.5, 0, 1, 0.5], [0, 0.5, 0.5, 1], [0.5, 0.5, 1, 1]]).repeat(12, 1)
    boxes = torch.cat([boxes_of([(0.02, 0.9)], 48), quarters])  # needles no square anchor fits, and the image's quarters
    choice = choose_anchors(boxes, zooms=[1.0], ratios=[(1.0, 1.0)], image_size=224)
    assert not choice.reached and "out of reach" in choice.summary()
    assert choice.coverage == pytest.approx(0.5)
    assert choice.anchors.grids == [2]  # the 2x2 grid's four anchors are the quarters


@pytest.fixture(scope="module")
def awkward(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A COCO-layout dataset under the names tiny_config expects: 12 train and 4 val 96 x 64 images,
    each with a tall, a wide or a small box (one class per shape)."""
    root = tmp_path_factory.mktemp("awkward")
    names = list(AWKWARD)
    for split, count in (("train", 12), ("val", 4)):
        images, annotations = [], []
        boxes = boxes_of([AWKWARD[names[i % 3]] for i in range(count)], 1, seed=len(split))
        for i in range(count):
            x1, y1, x2, y2 = (boxes[i] * torch.tensor([96, 64, 96, 64])).round().tolist()
            write_jpeg(root / "JPEGImages" / f"{split}{i}.jpg", 96, 64, [[x1, y1, x2, y2]], seed=i)
            images.append({"id": i, "file_name": f"{split}{i}.jpg", "width": 96, "height": 64})
            annotations.append({"id": i, "image_id": i, "bbox": [x1, y1, x2 - x1, y2 - y1], "category_id": i % 3 + 1})
        categories = [{"id": c + 1, "name": n} for c, n in enumerate(names)]
        write_json(root / f"shapes_{split}.json", {"images": images, "annotations": annotations, "categories": categories})
    return root


def auto_config(tmp_path: Path, root: Path) -> Path:
    config = tiny_config(tmp_path, root, epochs=2)
    text = config.read_text()
    assert "anchors: {grids: [2, 1]}" in text
    config.write_text(text.replace("anchors: {grids: [2, 1]}", "anchors: auto"))
    return config


def test_inspect_and_the_matcher_see_the_chosen_anchors(awkward, tmp_path):
    cfg = load_config(auto_config(tmp_path, awkward))
    assert cfg.image_size == cfg.data["image_size"] == 224 and cfg.anchors.grids != (2, 1)
    stats = match_statistics(load_records(awkward / "shapes_train.json", awkward / "JPEGImages"), cfg.anchors, cfg.iou_threshold)
    assert stats["forced_only"] == stats["unmatched"] == 0  # what detector inspect matches reports


def test_data_anchors_prints_the_choice_and_the_configs_coverage(awkward, tmp_path, capsys):
    fixed = tiny_config(tmp_path, awkward)  # the lesson's zooms and ratios on grids [2, 1]
    code, err = detector("data", "anchors", str(fixed))
    out = capsys.readouterr().out
    assert code == 0, err[-2000:]
    assert "config (" in out and "image_size 64, grids [2, 1], k = 9: 45 anchors" in out
    assert "auto: image_size 224, grids [" in out and "100.0 % of 12 training boxes" in out
    assert "covered per class (auto): tall 100.0 %, wide 100.0 %, small 100.0 %" in out
    assert "    anchors:\n      grids: [" in out


def test_train_saves_the_chosen_anchors_in_the_runs_config(awkward, tmp_path):
    config = auto_config(tmp_path, awkward)
    code, err = detector("train", "fit", "--config", str(config), "--trainer.limit_train_batches", "1", "--trainer.limit_val_batches", "1")
    assert code == 0, err[-3000:]
    saved = yaml.safe_load((run_path(tmp_path) / "config.yaml").read_text())
    init = saved["model"]["init_args"]
    anchors = AnchorConfig(init["anchors"]["grids"], init["anchors"]["zooms"], [tuple(r) for r in init["anchors"]["ratios"]])
    assert init["image_size"] == 224 and grid_problem(anchors.grids, 224) is None
    assert len(anchors.make()) == len(load_config(config).anchors)  # the same choice again: reproducible


def test_match_statistics_counts_forced_only_and_unmatched_objects(tmp_path):
    """On a 1x1 grid with one anchor (the whole image): an object equal to it is matched by IoU; a
    small object only by force; of two small objects sharing that anchor, the later one wins it
    and the earlier one is left with none."""
    anchors = make_anchors([1], [1.0], [(1.0, 1.0)])
    boxes = {1: [[0, 0, 100, 100]], 2: [[10, 10, 20, 20]], 3: [[10, 10, 20, 20], [60, 60, 80, 80]]}
    split = load_records(two_class_json(tmp_path, boxes), tmp_path)
    stats = match_statistics(split, anchors, iou_threshold=0.4)
    assert stats["objects"] == 4
    assert stats["forced_only"] == 2  # image 2's object, image 3's second object
    assert stats["unmatched"] == 1  # image 3's first object
    assert stats["positives_per_object"] == (pytest.approx(0.75), 0, 1)
    assert stats["per_class"] == {"first": (3, 1, 1), "second": (1, 1, 0)}

