"""Tiny COCO-format datasets written into a temporary folder, for the data-pipeline tests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image


def write_jpeg(path: Path, width: int, height: int, boxes: list[list[float]] = (), seed: int = 0) -> np.ndarray:
    """A noisy grey JPEG with a filled coloured rectangle per xyxy box; returns the RGB pixels written."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(90, 140, size=(height, width, 3), dtype=np.uint8)
    for k, (x1, y1, x2, y2) in enumerate(boxes):
        colour = [(230, 40, 40), (40, 200, 40), (40, 40, 230)][k % 3]
        pixels[int(max(y1, 0)):int(min(y2, height)), int(max(x1, 0)):int(min(x2, width))] = colour
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, quality=95)
    return pixels


def tiny_coco(root: Path) -> dict[str, Any]:
    """Three 64 x 48 images in ``root/images``: two objects (one difficult), one box overflowing the
    image by 4 px (clipped on load), and a negative. Category ids are unordered and non-contiguous,
    so labels (the position in ``categories``) differ from ids. Returns the JSON dict (not written)."""
    data = {
        "images": [
            {"id": 10, "file_name": "a.jpg", "width": 64, "height": 48},
            {"id": 11, "file_name": "b.jpg", "width": 64, "height": 48},
            {"id": 12, "file_name": "c.jpg", "width": 64, "height": 48},
        ],
        "annotations": [
            {"id": 1, "image_id": 10, "bbox": [4, 6, 20, 10], "category_id": 7, "ignore": 0, "iscrowd": 0},
            {"id": 2, "image_id": 10, "bbox": [30, 20, 24, 20], "category_id": 3, "ignore": 1, "iscrowd": 0},
            {"id": 3, "image_id": 11, "bbox": [50, 8, 18, 12], "category_id": 3},
        ],
        "categories": [{"id": 7, "name": "dog"}, {"id": 3, "name": "cat"}],
    }
    for k, image in enumerate(data["images"]):
        boxes = [
            [a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]]
            for a in data["annotations"] if a["image_id"] == image["id"]
        ]
        write_jpeg(root / "images" / image["file_name"], image["width"], image["height"], boxes, seed=k)
    return data


def write_json(path: Path, data: Any) -> Path:
    path.write_text(json.dumps(data))
    return path


def two_class_json(root: Path, boxes: dict[int, list[list[float]]]) -> Path:
    """``root/d.json``: 100 x 100 JPEGs ``root/<id>.jpg``, image ``id``'s boxes ``[x1, y1, x2, y2]`` in
    pixels, the j-th box of an image in class j + 1 (categories ``first``, ``second``)."""
    data = {
        "images": [{"id": i, "file_name": f"{i}.jpg", "width": 100, "height": 100} for i in boxes],
        "annotations": [
            {"id": 10 * i + j, "image_id": i, "bbox": [x1, y1, x2 - x1, y2 - y1], "category_id": 1 + j}
            for i, bs in boxes.items() for j, (x1, y1, x2, y2) in enumerate(bs)
        ],
        "categories": [{"id": 1, "name": "first"}, {"id": 2, "name": "second"}],
    }
    for i in boxes:
        write_jpeg(root / f"{i}.jpg", 100, 100)
    return write_json(root / "d.json", data)
