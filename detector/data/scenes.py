"""The scenes of the synthetic "shapes" dataset (:mod:`detector.data.shapes`): what is drawn where,
and the pixels.

Each image shows 1-8 filled shapes (``CLASS_NAMES``) in varied colours, sizes (5 % to 90 % of the
image's shorter side), aspect ratios (1:2 to 2:1) and small rotations, partly occluding each other,
on a textured, noisy background (gradient, soft blobs, stripes, thin wavy lines, pixel noise). The
background clutter is made of smooth fields and long open curves, so it never looks like a class.

A scene is made in two steps with two independent random streams, both derived from
``(seed, split, index)`` so the output is the same whatever the number of workers:

1. ``sample_scene``: the layout (image size, shapes, boxes). Objects are placed back to front,
   largest first; a placement is retried when it would leave any earlier object less than
   ``MIN_VISIBLE`` visible, so no label points at a hidden object. A box is the shape's full extent.
2. ``render_scene``: the pixels. Each shape's colour is chosen to stand out from what lies
   around it (``MIN_CONTRAST``), and edges are anti-aliased (OpenCV ``LINE_AA``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

__all__ = ["CLASS_NAMES", "Scene", "render_scene", "sample_scene"]

CLASS_NAMES: list[str] = ["circle", "square", "triangle", "diamond", "hexagon", "star", "cross"]

SIZE_JITTER = 0.125  # image sides uniform in image_size * (1 +- 0.125): 224-288 px for 256
MAX_OBJECTS = 8
SIDE_RANGE = (0.05, 0.90)  # box side sqrt(w * h) as a fraction of the image's shorter side
SIDE_TILT = 2.0  # log-side ~ Beta(2, 1): log-uniform tilted to fewer tiny ones, ~6 % below 10 %
ASPECT_RANGE = (0.5, 2.0)  # box w / h
MAX_ROTATION_DEG = 10.0  # a square's corners stay 0-15 % along its box sides, a diamond's 41-50 %
MIN_VISIBLE = 0.6  # of each labelled shape's pixels (at 0.5 a cross could look like two squares)
PLACEMENT_TRIES = 12
MIN_CONTRAST = 80.0  # RGB distance between a shape and (the darkest 10 % of) its surroundings
MIN_CONTRAST_SMALL = 110.0  # ... for shapes whose side is under SMALL_SIDE of the image
SMALL_SIDE = 0.12
COLOUR_TRIES = 24
SHIFT = 4  # fractional bits for OpenCV polygon vertices (1/16 px precision)


def _unit_outline(points: np.ndarray) -> np.ndarray:
    """``(K, 2)`` outline -> the same outline centred and stretched to fill ``[-0.5, 0.5]^2``."""
    lo, hi = points.min(0), points.max(0)  # (2,)
    return (points - (lo + hi) / 2) / (hi - lo)  # (K, 2)


def _regular(k: int, radii: list[float], start_deg: float) -> np.ndarray:
    """``(k * len(radii), 2)`` vertices of a star/regular polygon, radii cycling per vertex."""
    n = k * len(radii)
    angles = np.deg2rad(start_deg) + 2 * np.pi * np.arange(n) / n  # (n,)
    r = np.resize(np.asarray(radii, dtype=np.float64), n)  # (n,)
    return np.stack([r * np.cos(angles), r * np.sin(angles)], axis=1)  # (n, 2)


_ARM = 1 / 3  # the cross's arm width, as a fraction of its extent
_OUTLINES: dict[str, np.ndarray] = {
    name: _unit_outline(np.asarray(points, dtype=np.float64))
    for name, points in {
        "circle": _regular(64, [1.0], 0.0),
        "square": [(0, 0), (1, 0), (1, 1), (0, 1)],
        "triangle": [(0.5, 0), (1, 1), (0, 1)],
        "diamond": [(0.5, 0), (1, 0.5), (0.5, 1), (0, 0.5)],
        "hexagon": _regular(6, [1.0], 0.0),
        "star": _regular(5, [1.0, 0.4], -90.0),  # 5 points, inner radius 0.4 of the outer
        "cross": [(_ARM, 0), (1 - _ARM, 0), (1 - _ARM, _ARM), (1, _ARM), (1, 1 - _ARM),
                  (1 - _ARM, 1 - _ARM), (1 - _ARM, 1), (_ARM, 1), (_ARM, 1 - _ARM),
                  (0, 1 - _ARM), (0, _ARM), (_ARM, _ARM)],
    }.items()
}
assert list(_OUTLINES) == CLASS_NAMES


@dataclass(frozen=True)
class Scene:
    """One image's layout, before any pixel is drawn.

    Attributes:
        width, height: image size in pixels.
        labels: ``(n,)`` int64 in ``0..C-1``, index into ``CLASS_NAMES``; back to front.
        boxes: ``(n, 4)`` float64 xyxy pixels, each the full extent of its shape.
        outlines: ``n`` arrays ``(K, 2)`` float64 of (x, y) pixel vertices, same order.
        visible: ``(n,)`` float64, the fraction of each shape's pixels left visible (>= MIN_VISIBLE).
    """

    width: int
    height: int
    labels: np.ndarray
    boxes: np.ndarray
    outlines: list[np.ndarray]
    visible: np.ndarray


def _fill_mask(outline: np.ndarray, height: int, width: int, line_type: int) -> np.ndarray:
    """``(K, 2)`` pixel outline -> ``(height, width)`` uint8 coverage (255 inside).

    OpenCV puts integer coordinates at pixel centres, so continuous ``u`` becomes ``u - 0.5``.
    """
    mask = np.zeros((height, width), np.uint8)
    points = np.round((outline - 0.5) * (1 << SHIFT)).astype(np.int32)  # (K, 2)
    cv2.fillPoly(mask, [points], 255, line_type, SHIFT)
    return mask


def _place(rng: np.random.Generator, label: int, side: float, width: int, height: int) -> np.ndarray:
    """A random pose for one shape whose box has side ``sqrt(w * h) = side`` pixels.

    Returns ``(K, 2)`` float64 pixel vertices; the outline is rotated by up to
    ``MAX_ROTATION_DEG``, then stretched to fill its box exactly, which lies inside the image.
    """
    aspect = math.exp(rng.uniform(math.log(ASPECT_RANGE[0]), math.log(ASPECT_RANGE[1])))
    w, h = side * math.sqrt(aspect), side / math.sqrt(aspect)
    fit = min(1.0, (width - 2) / w, (height - 2) / h)  # a big, stretched box may not fit
    w, h = w * fit, h * fit
    theta = np.deg2rad(rng.uniform(-MAX_ROTATION_DEG, MAX_ROTATION_DEG))
    rotation = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    outline = _unit_outline(_OUTLINES[CLASS_NAMES[label]] @ rotation.T)  # (K, 2)
    cx = 1 + w / 2 + rng.uniform() * max(0.0, width - 2 - w)
    cy = 1 + h / 2 + rng.uniform() * max(0.0, height - 2 - h)
    return outline * np.array([w, h]) + np.array([cx, cy])  # (K, 2)


def sample_scene(rng: np.random.Generator, image_size: int = 256) -> Scene:
    """Sample one scene's layout: image size, 1-``MAX_OBJECTS`` shapes, their boxes.

    Sizes: ``side = lo * (hi / lo) ** t`` with ``t ~ Beta(SIDE_TILT, 1)`` and ``lo, hi`` the
    ``SIDE_RANGE`` fractions of the shorter image side: a log-uniform spread over 4 octaves, tilted
    to fewer tiny objects. Shapes are placed
    largest first (painter's order); a placement that would leave an earlier shape less than
    ``MIN_VISIBLE`` visible is retried ``PLACEMENT_TRIES`` times, then that shape is dropped.
    """
    width, height = (int(v) for v in rng.integers(
        round(image_size * (1 - SIZE_JITTER)), round(image_size * (1 + SIZE_JITTER)) + 1, size=2))
    n_wanted = int(rng.integers(1, MAX_OBJECTS + 1))
    lo, hi = (math.log(f * min(width, height)) for f in SIDE_RANGE)
    sides = np.sort(np.exp(lo + (hi - lo) * rng.beta(SIDE_TILT, 1.0, size=n_wanted)))[::-1]
    labels = rng.integers(0, len(CLASS_NAMES), size=n_wanted)

    owner = np.full((height, width), -1, np.int64)  # index of the top-most shape at each pixel
    areas: list[int] = []
    kept: list[tuple[int, np.ndarray]] = []
    for label, side in zip(labels.tolist(), sides.tolist()):
        for _ in range(PLACEMENT_TRIES):
            outline = _place(rng, label, side, width, height)
            mask = _fill_mask(outline, height, width, cv2.LINE_8) > 0
            if not mask.any():
                continue
            candidate = np.where(mask, len(kept), owner)  # (H, W)
            visible = np.bincount(candidate.ravel() + 1, minlength=len(kept) + 2)[1:len(kept) + 1]
            if np.all(visible >= MIN_VISIBLE * np.asarray(areas, dtype=np.float64)):
                owner = candidate
                areas.append(int(mask.sum()))
                kept.append((label, outline))
                break
    visible = np.bincount(owner.ravel() + 1, minlength=len(kept) + 1)[1:] / np.asarray(areas)
    outlines = [outline for _, outline in kept]
    boxes = np.array([np.concatenate([o.min(0), o.max(0)]) for o in outlines]).reshape(-1, 4)
    return Scene(width, height, np.array([label for label, _ in kept], dtype=np.int64),
                 boxes, outlines, visible)


def _ramp(height: int, width: int, angle: float) -> np.ndarray:
    """``(height, width)`` float32: each pixel's offset from the centre along direction ``angle``."""
    x = np.arange(width, dtype=np.float32) - (width - 1) / 2  # (W,)
    y = np.arange(height, dtype=np.float32) - (height - 1) / 2  # (H,)
    return x[None, :] * np.float32(np.cos(angle)) + y[:, None] * np.float32(np.sin(angle))  # (H, W)


def _background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """``(height, width, 3)`` float32 RGB texture: gradient + soft blobs + stripes + wavy lines."""
    ramp = _ramp(height, width, rng.uniform(0, 2 * np.pi))
    ramp = (ramp - ramp.min()) / (ramp.max() - ramp.min())  # (H, W) in [0, 1]
    start, end = rng.uniform(0, 255, size=(2, 3)).astype(np.float32)  # (3,) each
    image = start + ramp[..., None] * (end - start)  # (H, W, 3)

    cells = rng.integers(2, 7, size=2)  # a coarse grid of random colours, smoothly upsampled
    blobs = rng.normal(0, 1, size=(*cells, 3)).astype(np.float32)
    image += rng.uniform(10, 45) * cv2.resize(blobs, (width, height), interpolation=cv2.INTER_CUBIC)

    if rng.random() < 0.5:
        angle, period = rng.uniform(0, np.pi), rng.uniform(6, 40)
        stripes = np.sin(_ramp(height, width, angle) * np.float32(2 * np.pi / period))  # (H, W)
        image += stripes[..., None] * rng.uniform(-25, 25, size=3).astype(np.float32)  # (H, W, 3)

    for _ in range(int(rng.integers(0, 5))):  # long open curves: never a closed shape
        ts = np.linspace(0, 1, 48)
        vertical = rng.random() < 0.5
        along = ts * (height if vertical else width)
        across = rng.uniform(0, width if vertical else height) + rng.uniform(5, 30) * np.sin(
            2 * np.pi * rng.uniform(0.5, 3) * ts + rng.uniform(0, 2 * np.pi))
        points = np.stack([across, along] if vertical else [along, across], axis=1)
        colour = tuple(float(c) for c in rng.uniform(0, 255, size=3))
        cv2.polylines(image, [np.round(points * (1 << SHIFT)).astype(np.int32)], False, colour,
                      int(rng.integers(1, 3)), cv2.LINE_AA, SHIFT)
    return image


def _pick_colour(rng: np.random.Generator, around: np.ndarray, min_contrast: float) -> np.ndarray:
    """An RGB colour (3,) far from ``around`` ``(P, 3)``: the first of ``COLOUR_TRIES`` random
    colours whose distance to the closest 10 % of those pixels is at least ``min_contrast``, else
    the best of them."""
    candidates = rng.uniform(0, 255, size=(COLOUR_TRIES, 3)).astype(np.float32)
    squared = ((candidates[:, None, :] - around[None, :, :]) ** 2).sum(2)  # (T, P)
    k = len(around) // 10
    near = np.sqrt(np.partition(squared, k, axis=1)[:, k])  # (T,) the 10 % quantile
    good = np.flatnonzero(near >= min_contrast)
    return candidates[good[0] if good.size else int(near.argmax())]


def render_scene(scene: Scene, rng: np.random.Generator) -> np.ndarray:
    """Draw a scene: ``(height, width, 3)`` uint8 RGB.

    Shapes are drawn back to front with anti-aliased edges, each in a colour that contrasts with
    the pixels in and around its box, with a gentle linear shading; then pixel noise.
    """
    height, width = scene.height, scene.width
    image = _background(rng, height, width)
    short = min(height, width)
    for outline, box in zip(scene.outlines, scene.boxes):
        x1, y1 = (max(0, int(v) - 3) for v in box[:2])
        x2, y2 = int(min(width, box[2] + 4)), int(min(height, box[3] + 4))
        around = image[y1:y2, x1:x2].reshape(-1, 3)
        around = around[:: max(1, len(around) // 400)]  # enough pixels for a quantile
        side = math.sqrt((box[2] - box[0]) * (box[3] - box[1])) / short
        colour = _pick_colour(rng, around, MIN_CONTRAST_SMALL if side < SMALL_SIDE else MIN_CONTRAST)
        alpha = _fill_mask(outline, height, width, cv2.LINE_AA)[y1:y2, x1:x2, None] / np.float32(255)
        shade = _ramp(y2 - y1, x2 - x1, rng.uniform(0, 2 * np.pi)) / max(x2 - x1, y2 - y1)
        fill = colour + rng.uniform(0, 40) * shade[..., None]  # (h, w, 3); shade in about +-0.7
        image[y1:y2, x1:x2] = image[y1:y2, x1:x2] * (1 - alpha) + fill * alpha  # (h, w, 3)
    image += rng.uniform(2, 8) * rng.standard_normal(image.shape, dtype=np.float32)
    return np.clip(image + 0.5, 0, 255, out=image).astype(np.uint8)  # + 0.5: round, not truncate
