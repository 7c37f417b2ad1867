"""Coordinate-aware augmentation: boxes move with the pixels, stay inside, never all vanish."""

from __future__ import annotations

import random

import albumentations as A
import numpy as np
import pytest
import torch

from detector.data.transforms import PRESETS, DetectionTransform, build_pipeline
from detector.defaults import IMAGENET_MEAN, IMAGENET_STD

S = 64  # output side


def picture(width: int = 120, height: int = 80, box: tuple[int, int, int, int] = (30, 20, 70, 50)) -> np.ndarray:
    """Grey picture with one pure-red filled rectangle at xyxy ``box``."""
    image = np.full((height, width, 3), 100, np.uint8)
    x1, y1, x2, y2 = box
    image[y1:y2, x1:x2] = (255, 0, 0)
    return image


def to_pixels(image: torch.Tensor) -> np.ndarray:
    """Undo the normalisation: ``(3, S, S)`` float -> ``(S, S, 3)`` float in 0..255."""
    mean, std = torch.tensor(IMAGENET_MEAN)[:, None, None], torch.tensor(IMAGENET_STD)[:, None, None]
    return ((image * std + mean) * 255).permute(1, 2, 0).numpy()  # (S, S, 3)


def red_pixels(image: torch.Tensor) -> np.ndarray:
    """``(k, 2)`` (x, y) centres of the pixels that are more red than grey."""
    rgb = to_pixels(image)
    ys, xs = np.nonzero(rgb[..., 0] - rgb[..., 1] > 77)  # halfway between grey (0) and red (155)
    return np.stack([xs + 0.5, ys + 0.5], axis=1)


def applied(preset: str, image: np.ndarray, boxes: np.ndarray, seed: int) -> tuple[dict, list[str]]:
    """Run a preset's pipeline as DetectionTransform does, and report which transforms fired."""
    pipeline = build_pipeline(preset, S)
    pipeline.save_applied_params = True
    pipeline.set_random_state(np.random.default_rng(seed), random.Random(seed))
    out = pipeline(image=image, bboxes=boxes, box_index=np.arange(len(boxes)))
    return out, [name for name, _ in out["applied_transforms"]]


def test_resize_scales_boxes():
    boxes = np.array([[30, 20, 70, 50], [0, 0, 120, 80]], np.float32)
    out = DetectionTransform("none", S)(picture(), boxes)
    assert out.image.shape == (3, S, S) and out.image.dtype == torch.float32
    torch.testing.assert_close(out.boxes, torch.tensor(boxes) / torch.tensor([120.0, 80.0, 120.0, 80.0]))
    assert out.keep.tolist() == [0, 1]
    # the red rectangle is where its box says, in the squashed image
    xy = red_pixels(out.image) / S  # (k, 2)
    torch.testing.assert_close(
        torch.tensor([xy[:, 0].min(), xy[:, 1].min(), xy[:, 0].max(), xy[:, 1].max()], dtype=torch.float32),
        out.boxes[0], atol=1.0 / S, rtol=0,
    )


def test_normalisation_and_channel_order():
    image = np.empty((40, 50, 3), np.uint8)
    image[...] = (200, 100, 50)
    out = DetectionTransform("none", S)(image, np.zeros((0, 4), np.float32))
    expected = (torch.tensor([200.0, 100.0, 50.0]) / 255 - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
    torch.testing.assert_close(out.image.mean(dim=(1, 2)), expected)
    assert out.boxes.shape == (0, 4) and out.keep.shape == (0,)


def test_flip_maps_x1_to_width_minus_x2():
    """In the lesson preset, a flip alone sends [x1, y1, x2, y2] to [W - x2, y1, W - x1, y2]."""
    box = np.array([[30, 20, 70, 50]], np.float32)
    expected = torch.tensor([[120 - 70, 20, 120 - 30, 50]]) / torch.tensor([120.0, 80.0, 120.0, 80.0])
    seen = 0
    for seed in range(40):
        out, fired = applied("lesson", picture(), box, seed)
        if "HorizontalFlip" in fired and "Rotate" not in fired:
            seen += 1
            got = torch.as_tensor(np.asarray(out["bboxes"], np.float32)) / S
            torch.testing.assert_close(got, expected)
            xy = red_pixels(out["image"]).min(axis=0) / S
            np.testing.assert_allclose(xy, expected[0, :2].numpy(), atol=1.5 / S)
    assert seen > 3  # p = 0.5 for the flip and for no rotation: about 10 of 40


@pytest.mark.parametrize("preset", ["lesson", "strong"])
def test_rotated_box_contains_the_rotated_object(preset: str):
    box = np.array([[30, 20, 70, 50]], np.float32)
    rotated = 0
    for seed in range(30):
        out, fired = applied(preset, picture(), box, seed)
        if not {"Rotate", "Affine"} & set(fired):
            continue
        rotated += 1
        assert len(out["bboxes"]) == 1
        x1, y1, x2, y2 = np.asarray(out["bboxes"][0])
        xy = red_pixels(out["image"])  # (k, 2) pixel centres of the object after the transform
        assert len(xy) > 0
        tol = 1.0  # a pixel of interpolation blur at the edges
        assert (xy[:, 0] >= x1 - tol).all() and (xy[:, 0] <= x2 + tol).all(), (seed, fired)
        assert (xy[:, 1] >= y1 - tol).all() and (xy[:, 1] <= y2 + tol).all(), (seed, fired)
        # ...and is tight: the rotated corners of a rectangle span exactly the rotated rectangle, so
        # each edge lies within 2 px of the object's outermost pixel centres (a whole-image box fails).
        outermost = np.array([xy[:, 0].min(), xy[:, 1].min(), xy[:, 0].max(), xy[:, 1].max()])
        np.testing.assert_allclose([x1, y1, x2, y2], outermost, rtol=0, atol=2.0, err_msg=f"{seed} {fired}")
    assert rotated >= 5


@pytest.mark.parametrize("preset", PRESETS)
def test_boxes_stay_inside_the_image(preset: str):
    # boxes touching every border, a tiny one and a big one
    boxes = np.array([[0, 0, 30, 20], [90, 60, 120, 80], [0, 30, 120, 50], [55, 35, 58, 38], [2, 2, 118, 78]], np.float32)
    transform = DetectionTransform(preset, S)
    for seed in range(15):
        out = transform(picture(), boxes, seed)
        assert out.image.shape == (3, S, S)
        assert out.boxes.shape == (len(out.keep), 4) and len(out.keep) >= 1
        assert ((out.boxes >= 0) & (out.boxes <= 1)).all()
        assert (out.boxes[:, 2:] > out.boxes[:, :2]).all()
        assert len(set(out.keep.tolist())) == len(out.keep) and out.keep.max() < len(boxes)


@pytest.mark.parametrize("preset", PRESETS)
def test_same_seed_same_sample(preset: str):
    boxes = np.array([[30, 20, 70, 50]], np.float32)
    a, b = DetectionTransform(preset, S), DetectionTransform(preset, S)  # separate instances, as in two workers
    outs = [a(picture(), boxes, seed) for seed in range(6)]
    np.random.seed(1), random.seed(2), torch.manual_seed(3)  # global generators must play no part
    for seed, out in enumerate(outs):
        again = b(picture(), boxes, seed)
        assert torch.equal(out.image, again.image) and torch.equal(out.boxes, again.boxes)
    distinct = {out.image.numpy().tobytes() for out in outs}
    assert len(distinct) == 1 if preset == "none" else len(distinct) >= 3  # some seeds may all skip every step


def test_all_boxes_dropped_falls_back_to_plain_resize():
    """A pipeline that always loses the boxes is retried max_tries times, then the resize is used."""
    transform = DetectionTransform("lesson", S, max_tries=3)
    calls = []
    lossy = A.Compose(
        [A.Crop(x_min=80, y_min=0, x_max=120, y_max=80), *build_pipeline("none", S).transforms],
        bbox_params=A.BboxParams(format="pascal_voc", label_fields=["box_index"]),
    )
    transform.pipeline = lambda **data: calls.append(1) or lossy(**data)
    transform.pipeline.set_random_state = lambda *args: None
    boxes = np.array([[30, 20, 70, 50], [10, 10, 20, 20]], np.float32)
    out = transform(picture(), boxes, seed=0)
    plain = DetectionTransform("none", S)(picture(), boxes)
    assert len(calls) == 3
    assert out.keep.tolist() == [0, 1]
    assert torch.equal(out.boxes, plain.boxes) and torch.equal(out.image, plain.image)


def test_unknown_preset():
    with pytest.raises(ValueError, match="unknown augmentation preset 'fancy'"):
        build_pipeline("fancy", S)


@pytest.mark.parametrize("preset", PRESETS)
def test_negative_image_passes_every_preset(preset: str):
    transform = DetectionTransform(preset, S)
    for seed in range(8):
        out = transform(picture(), np.zeros((0, 4), np.float32), seed)
        assert out.image.shape == (3, S, S) and out.boxes.shape == (0, 4) and out.keep.shape == (0,)
