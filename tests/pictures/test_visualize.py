"""Pictures: every function draws exactly the boxes it is given, in the right places and colours,
on synthetic inputs and on the real VOC sample photos."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from matplotlib.colors import to_rgba
from matplotlib.patches import Rectangle

from detector.core.anchors import make_anchors
from detector.core.box_coder import make_box_coder
from detector.core.matching import match
from detector.data.image import load_image
from detector.data.records import load_records
from detector.pictures import (
    anchor_figure,
    box_colour,
    denormalize,
    detection_grid,
    draw_boxes,
    figure_to_array,
    ground_truth_grid,
    match_grid,
    raw_prediction_grid,
    show_boxes,
    top_raw_predictions,
)

LESSON = dict(grids=[4, 2, 1], zooms=[0.75, 1.0, 1.3], ratios=[(1.0, 1.0), (1.0, 0.5), (0.5, 1.0)])


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def rectangles(ax) -> list[Rectangle]:
    return [p for p in ax.patches if isinstance(p, Rectangle)]


def image_axes(fig) -> list:
    """The panels that show an image (spare grid cells are blank)."""
    return [ax for ax in fig.axes if ax.images]


def random_boxes(rng: np.random.Generator, n: int, width: int, height: int) -> np.ndarray:
    xy = rng.uniform(0, [width * 0.6, height * 0.6], size=(n, 2))
    wh = rng.uniform(4, [width * 0.4, height * 0.4], size=(n, 2))
    return np.concatenate([xy, xy + wh], axis=1).astype(np.float32)  # (n, 4) xyxy


@pytest.fixture
def synthetic() -> tuple[list[np.ndarray], list[dict]]:
    rng = np.random.default_rng(0)
    sizes = [(60, 80), (100, 50), (64, 64)]  # (h, w)
    counts = [3, 0, 5]
    images = [rng.integers(0, 255, size=(h, w, 3), dtype=np.uint8) for h, w in sizes]
    targets = [
        {"boxes": random_boxes(rng, n, w, h), "labels": rng.integers(0, 3, size=n)} for (h, w), n in zip(sizes, counts)
    ]
    return images, targets


@pytest.fixture
def voc(voc_sample):
    split = load_records(voc_sample / "pascal_sample2007.json", voc_sample / "JPEGImages")
    images = [load_image(r.path) for r in split.records]
    targets = [{"boxes": r.boxes, "labels": r.labels, "difficult": r.difficult} for r in split.records]
    return images, targets, split


def test_draw_boxes_outlined_distinct_colours_and_labels():
    fig, ax = plt.subplots()
    boxes = torch.tensor([[1.0, 2.0, 11.0, 22.0], [5, 5, 9, 9], [0, 0, 3, 3], [2, 2, 30, 30]])
    patches = draw_boxes(ax, boxes, torch.tensor([0, 1, 2, 7]), ["cat", "dog", "emu"], scores=torch.tensor([0.9, 0.5, 0.25, 0.1]))
    assert rectangles(ax) == patches and len(patches) == 4
    assert patches[0].get_xy() == (1.0, 2.0) and patches[0].get_width() == 10.0 and patches[0].get_height() == 20.0
    assert len({p.get_edgecolor() for p in patches}) == 4  # a colour per box
    assert all(p.get_path_effects() for p in patches)  # the black outline
    texts = [t.get_text() for t in ax.texts]
    assert texts == ["cat 0.90", "dog 0.50", "emu 0.25", "7 0.10"]  # unknown class: its number
    assert all(t.get_path_effects() for t in ax.texts)


def test_box_colours_differ_for_the_first_twenty():
    assert len({box_colour(i) for i in range(20)}) == 20
    assert box_colour(20) == box_colour(0)


def test_ground_truth_grid_synthetic(synthetic):
    images, targets = synthetic
    targets[2]["difficult"] = np.array([False, True, False, True, False])
    fig = ground_truth_grid(images, targets, ["a", "b", "c"], titles=["x", "y", "z"], ncols=2)
    panels = image_axes(fig)
    assert [len(rectangles(ax)) for ax in panels] == [3, 0, 5]
    dashed = [r for r in rectangles(panels[2]) if r.get_linestyle() == "--"]
    assert len(dashed) == 2
    # Each drawn rectangle is one of the given xyxy boxes: its corner and its size.
    for ax, target in zip(panels, targets):
        drawn = sorted((r.get_x(), r.get_y(), r.get_width(), r.get_height()) for r in rectangles(ax))
        x1, y1, x2, y2 = np.asarray(target["boxes"], np.float64).reshape(-1, 4).T
        assert np.allclose(drawn, sorted(zip(x1, y1, x2 - x1, y2 - y1))), (drawn, target["boxes"])


def test_ground_truth_grid_on_voc_photos(voc):
    images, targets, split = voc
    fig = ground_truth_grid(images, targets, split.class_names, ncols=5)
    panels = image_axes(fig)
    assert len(panels) == 13
    assert [len(rectangles(ax)) for ax in panels] == [len(r.boxes) for r in split.records]
    names = {t.get_text() for ax in panels for t in ax.texts}
    assert {"person", "dog", "cat", "horse", "car"} <= names


def test_anchor_figure_lesson_config_panels_and_positions():
    anchors = make_anchors(**LESSON)
    fig = anchor_figure(anchors, image_size=224)
    panels = [ax for ax in fig.axes if ax.patches]
    # Default cells: the top-left one and the one at the centre (the same cell on the 1x1 grid).
    assert [len(rectangles(ax)) for ax in panels] == [18, 18, 9]
    # The 4x4 panel's anchors are centred on cells (0, 0) and (2, 2): centres 28 and 140 px.
    centres = {(round(r.get_x() + r.get_width() / 2, 3), round(r.get_y() + r.get_height() / 2, 3)) for r in rectangles(panels[0])}
    assert centres == {(28.0, 28.0), (140.0, 140.0)}
    # The nine shapes of a cell: the largest is 1.3 cells = 1.3 * 56 px on the 4x4 grid.
    assert max(r.get_width() for r in rectangles(panels[0])) == pytest.approx(1.3 * 56)
    # The anchor shape sets the colour, the same in both cells.
    colours = [r.get_edgecolor() for r in rectangles(panels[0])]
    assert colours[:9] == colours[9:] and len(set(colours[:9])) == 9


def test_anchor_figure_custom_cells_single_grid_and_background():
    anchors = make_anchors([4], [1.0], [(1.0, 1.0)])  # the lesson's first model: 16 anchors, k = 1
    corners = ((0.0, 0.0), (0.0, 0.99), (0.99, 0.0), (0.99, 0.99), (0.1, 0.1))  # the last repeats (0, 0)
    fig = anchor_figure(anchors, image_size=64, cells=corners, image=np.zeros((64, 64, 3), np.uint8))
    (panel,) = [ax for ax in fig.axes if ax.patches]
    assert len(rectangles(panel)) == 4 and len(panel.images) == 1
    assert {(r.get_x(), r.get_y()) for r in rectangles(panel)} == {(0, 0), (48, 0), (0, 48), (48, 48)}


def test_match_grid_draws_objects_and_their_positive_anchors_in_their_colour(synthetic):
    anchors = make_anchors(**LESSON)
    images, targets = synthetic
    # Image 2 (64 x 64): make object 0 exactly the 1x1 grid's 1 x 1 anchor (the whole image).
    targets[2]["boxes"][0] = [0, 0, 64, 64]
    fig = match_grid(images, targets, anchors, ["a", "b", "c"], iou_threshold=0.4)
    for ax, image, target in zip(image_axes(fig), images, targets):
        h, w = image.shape[:2]
        boxes = torch.as_tensor(target["boxes"]).reshape(-1, 4) / torch.tensor([w, h, w, h])
        m = match(anchors, boxes[None], torch.as_tensor(target["labels"])[None], 0.4)
        n, p = len(boxes), int(m.positive.sum())
        rects = rectangles(ax)
        assert len(rects) == n + p
        owners = m.matched_idx[0][m.positive[0]].tolist()
        assert [r.get_edgecolor() for r in rects[n:]] == [to_rgba(box_colour(j)) for j in owners]
        assert all(r.get_linestyle() == "--" for r in rects[n:])
    whole = [r for r in rectangles(image_axes(fig)[2])[5:] if (r.get_width(), r.get_height()) == (64, 64)]
    assert len(whole) == 1  # the anchor equal to the object is one of its positives


def test_match_grid_on_voc_photos(voc):
    images, targets, split = voc
    anchors = make_anchors(**LESSON)
    fig = match_grid(images[:4], targets[:4], anchors, split.class_names)
    for ax, record in zip(image_axes(fig), split.records[:4]):
        assert len(rectangles(ax)) > len(record.boxes)  # every object has at least its forced anchor
        assert f"objects: {len(record.boxes)}," in ax.get_title()


def test_top_raw_predictions_picks_the_best_anchors_and_decodes_them():
    anchors = make_anchors(**LESSON)
    A, C = len(anchors), 4
    logits = torch.full((2, A, C), -5.0)
    logits[0, 17, 2], logits[0, 100, 0], logits[1, 3, 1] = 4.0, 3.0, 2.0
    deltas = torch.zeros(2, A, 4)
    deltas[0, 17] = torch.tensor([0.5, -0.5, 0.2, 0.1])
    raw = top_raw_predictions(logits, deltas, anchors, "tanh", top=3)
    assert raw[0]["anchors"][:2].tolist() == [17, 100] and raw[0]["labels"][:2].tolist() == [2, 0]
    assert raw[1]["anchors"][0] == 3 and raw[1]["labels"][0] == 1
    assert raw[0]["scores"][0] == pytest.approx(torch.sigmoid(torch.tensor(4.0)).item())
    decoded = make_box_coder("tanh").decode(deltas, anchors)  # (2, A, 4)
    assert torch.allclose(raw[0]["boxes"][0], decoded[0, 17])
    assert torch.allclose(raw[0]["boxes"][1], anchors.xyxy[100])  # zero deltas: the anchor itself
    assert all(len(r["boxes"]) == 3 for r in raw)


def test_raw_prediction_grid_draws_top_boxes_per_image(synthetic):
    images, _ = synthetic
    anchors = make_anchors(**LESSON)
    logits, deltas = torch.randn(3, len(anchors), 3), torch.randn(3, len(anchors), 4)
    fig = raw_prediction_grid(images, logits, deltas, anchors, "tanh", ["a", "b", "c"], top=7)
    assert [len(rectangles(ax)) for ax in image_axes(fig)] == [7, 7, 7]
    # Boxes in [0, 1] are stretched to each image: compare image 1 (100 x 50 px, h x w).
    top = top_raw_predictions(logits, deltas, anchors, "tanh", top=7)[1]["boxes"][0]
    first = rectangles(image_axes(fig)[1])[0]
    assert (first.get_x(), first.get_y()) == pytest.approx((top[0].item() * 50, top[1].item() * 100), rel=1e-5)


def test_raw_prediction_grid_on_voc_photos(voc):
    images, _, split = voc
    anchors = make_anchors(**LESSON)
    logits, deltas = torch.randn(2, len(anchors), 20), torch.randn(2, len(anchors), 4)
    fig = raw_prediction_grid(images[:2], logits, deltas, anchors, "ssd", split.class_names, top=5)
    assert [len(rectangles(ax)) for ax in image_axes(fig)] == [5, 5]


def test_detection_grid_targets_dashed_then_predictions(synthetic):
    images, targets = synthetic
    preds = [
        {"boxes": t["boxes"][:2], "labels": t["labels"][:2], "scores": np.linspace(0.9, 0.5, len(t["boxes"][:2]))}
        for t in targets
    ]
    fig = detection_grid(images, preds, targets, ["a", "b", "c"], titles=["p", "q", "r"])
    panels = image_axes(fig)
    assert [len(rectangles(ax)) for ax in panels] == [3 + 2, 0, 5 + 2]
    assert [r.get_linestyle() for r in rectangles(panels[0])] == ["--"] * 3 + ["-"] * 2
    assert [ax.get_title() for ax in panels] == ["p", "q", "r"]


def test_detection_grid_on_voc_photos(voc):
    images, targets, split = voc
    preds = [{"boxes": t["boxes"], "labels": t["labels"], "scores": np.ones(len(t["boxes"]))} for t in targets]
    fig = detection_grid(images, preds, None, split.class_names)
    assert [len(rectangles(ax)) for ax in image_axes(fig)] == [len(t["boxes"]) for t in targets]


def test_show_boxes_is_the_image_at_its_own_size(synthetic):
    images, targets = synthetic
    fig = show_boxes(images[0], targets[0]["boxes"], targets[0]["labels"], ["a", "b", "c"], scores=[0.9, 0.8, 0.7])
    assert len(rectangles(fig.axes[0])) == 3
    assert figure_to_array(fig).shape == (60, 80, 3)
    big = np.zeros((1000, 3000, 3), np.uint8)
    assert figure_to_array(show_boxes(big, np.zeros((0, 4)), max_side=600)).shape == (200, 600, 3)


def test_show_boxes_on_a_voc_photo(voc):
    images, targets, split = voc
    fig = show_boxes(images[1], targets[1]["boxes"], targets[1]["labels"], split.class_names)
    assert len(rectangles(fig.axes[0])) == len(targets[1]["boxes"])
    assert figure_to_array(fig).shape == images[1].shape


def test_denormalize_inverts_normalisation():
    pixels = torch.randint(0, 256, (2, 8, 8, 3), dtype=torch.uint8)
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    x = (pixels.permute(0, 3, 1, 2).float() / 255 - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    assert np.array_equal(denormalize(x, mean, std), pixels.numpy())
