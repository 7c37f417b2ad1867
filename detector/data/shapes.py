"""The embedded default dataset, "shapes": seeded synthetic scenes (:mod:`detector.data.scenes`)
written in the course's layout, generated once and safely shared between concurrent runs.

Layout written under ``root`` (the JSONs' ``file_name``s resolve against ``root/JPEGImages``)::

    root/JPEGImages/train_00000.jpg ... val_00399.jpg
    root/shapes_train.json, root/shapes_val.json     COCO-style, the course's keys (see below)
    root/shapes_params.json                          written last: "complete, with these parameters"

JSON keys, as in the course's ``pascal_train2007.json``: ``images`` (``file_name``, ``height``,
``width``, ``id``), ``annotations`` (``segmentation`` = the box as a polygon, ``area``,
``iscrowd`` 0, ``image_id``, ``bbox`` = ``[x, y, w, h]`` in pixels, ``category_id`` 1..C, ``id``,
``ignore`` 0), ``categories`` (``supercategory``, ``id``, ``name``) and ``type: "instances"``.
Pixel ``i`` spans ``[i, i + 1)``, so ``x + w`` is the right edge of the shape.

Command line: ``detector data shapes --root data/shapes [--seed 0]``.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import secrets
import shutil
import sys
from pathlib import Path

import cv2
import numpy as np

from detector.data.scenes import CLASS_NAMES, Scene, render_scene, sample_scene

__all__ = ["CLASS_NAMES", "ensure_shapes", "generate_shapes", "summary"]

GENERATOR_VERSION = 1  # bump whenever the output changes, so ensure_shapes regenerates old data
PARAMS_FILE = "shapes_params.json"  # written last: its presence means "complete"
SPLITS = ("train", "val")
JPEG_QUALITY = 90


def _scene_rngs(seed: int, split: str, index: int) -> tuple[np.random.Generator, np.random.Generator]:
    """Independent (layout, paint) generators for one image, from ``(seed, split, index)`` alone."""
    layout, paint = np.random.SeedSequence([seed, SPLITS.index(split), index]).spawn(2)
    return np.random.default_rng(layout), np.random.default_rng(paint)


def _layout(split: str, index: int, seed: int, image_size: int) -> Scene:
    """The layout of image ``index`` of ``split``, exactly as ``generate_shapes`` draws it."""
    return sample_scene(_scene_rngs(seed, split, index)[0], image_size)


def _file_name(split: str, index: int) -> str:
    return f"{split}_{index:05d}.jpg"


def _make_image(job: tuple[str, str, int, int, int]) -> tuple[int, int, list[int], list[list[float]]]:
    """Worker: sample, draw and write one JPEG. Returns ``(width, height, labels, boxes xyxy)``."""
    image_dir, split, index, seed, image_size = job
    layout_rng, paint_rng = _scene_rngs(seed, split, index)
    scene = sample_scene(layout_rng, image_size)
    image = render_scene(scene, paint_rng)
    path = os.path.join(image_dir, _file_name(split, index))
    if not cv2.imwrite(path, image[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY]):
        raise OSError(f"shapes: could not write {path}")
    return scene.width, scene.height, scene.labels.tolist(), scene.boxes.tolist()


def _coco_json(split: str, results: list[tuple[int, int, list[int], list[list[float]]]]) -> dict:
    """The course's COCO-style dict for one split; image ids are unique across splits."""
    first_id = 1 + SPLITS.index(split) * 1_000_000
    images, annotations = [], []
    for index, (width, height, labels, boxes) in enumerate(results):
        image_id = first_id + index
        images.append({"file_name": _file_name(split, index), "height": height, "width": width,
                       "id": image_id})
        for label, (x1, y1, x2, y2) in zip(labels, boxes):
            x, y, w, h = (round(v, 2) for v in (x1, y1, x2 - x1, y2 - y1))
            right, bottom = round(x + w, 2), round(y + h, 2)
            annotations.append({
                "segmentation": [[x, y, x, bottom, right, bottom, right, y]],
                "area": round(w * h, 2), "iscrowd": 0, "image_id": image_id,
                "bbox": [x, y, w, h], "category_id": label + 1,
                "id": first_id + len(annotations), "ignore": 0,
            })
    categories = [{"supercategory": "shape", "id": i + 1, "name": name}
                  for i, name in enumerate(CLASS_NAMES)]
    return {"images": images, "type": "instances", "annotations": annotations,
            "categories": categories}


def _params(n_train: int, n_val: int, image_size: int, seed: int) -> dict[str, int]:
    return {"generator_version": GENERATOR_VERSION, "n_train": n_train, "n_val": n_val,
            "image_size": image_size, "seed": seed}



def generate_shapes(root: str | Path, n_train: int = 2000, n_val: int = 400, image_size: int = 256,
                    seed: int = 0, workers: int = 2) -> None:
    """Write the dataset into ``root`` (created if needed; not atomic, see ``ensure_shapes``).

    Writes ``root/JPEGImages/{split}_{index:05d}.jpg``, ``root/shapes_{split}.json`` for
    ``split`` in ``("train", "val")``, and last ``root/shapes_params.json``. Image ``index`` of
    ``split`` depends only on ``(seed, split, index, image_size)``: the output is byte-identical
    for any ``workers`` (``<= 1`` runs in this process).
    """
    root = Path(root)
    (root / PARAMS_FILE).unlink(missing_ok=True)
    image_dir = root / "JPEGImages"
    image_dir.mkdir(parents=True, exist_ok=True)
    counts = dict(zip(SPLITS, (n_train, n_val)))
    jobs = [(str(image_dir), split, index, seed, image_size)
            for split in SPLITS for index in range(counts[split])]
    if workers <= 1:
        results = [_make_image(job) for job in jobs]
    else:
        # (no cv2.setNumThreads in the workers: in a forked child it waits forever on the parent's pool)
        with multiprocessing.Pool(workers) as pool:
            results = pool.map(_make_image, jobs, chunksize=16)
    for split in SPLITS:
        split_results, results = results[:counts[split]], results[counts[split]:]
        (root / f"shapes_{split}.json").write_text(json.dumps(_coco_json(split, split_results)))
    (root / PARAMS_FILE).write_text(json.dumps(_params(n_train, n_val, image_size, seed)))


def _is_complete(root: Path, params: dict[str, int]) -> bool:
    """True when ``root`` holds a finished generation made with exactly ``params``."""
    try:
        if json.loads((root / PARAMS_FILE).read_text()) != params:
            return False
        n_images = sum(1 for _ in (root / "JPEGImages").glob("*.jpg"))
    except (OSError, ValueError):
        return False
    return all((root / f"shapes_{s}.json").is_file() for s in SPLITS) and \
        n_images == params["n_train"] + params["n_val"]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by someone else
        return True
    return True


def _remove_leftovers(root: Path) -> None:
    """Delete temporary siblings of ``root`` left by killed runs (``.{name}.tmp-{pid}-*``)."""
    for path in root.parent.glob(f".{root.name}.*-*-*"):
        kind, pid = path.name[len(root.name) + 2:].split("-")[:2]
        if kind in ("tmp", "old") and pid.isdigit() and not _pid_alive(int(pid)):
            shutil.rmtree(path, ignore_errors=True)


def ensure_shapes(root: str | Path, n_train: int = 2000, n_val: int = 400, image_size: int = 256,
                  seed: int = 0, workers: int = 2) -> None:
    """Make sure ``root`` holds the shapes dataset with these parameters; generate it if not.

    Idempotent: a complete dataset with the same parameters (``workers`` aside) is left alone.
    Atomic: generation happens in a temporary sibling ``.{name}.tmp-{pid}-{token}``, renamed to
    ``root`` at the end; an incomplete or different ``root`` is replaced only then. A killed run
    leaves at most a temporary folder, removed by the next call; two racing calls both end with
    one complete dataset. ``root`` belongs to the generator: anything else in it is replaced.
    """
    root = Path(root).absolute()
    params = _params(n_train, n_val, image_size, seed)
    if _is_complete(root, params):
        return
    root.parent.mkdir(parents=True, exist_ok=True)
    _remove_leftovers(root)
    print(f"shapes: generating {n_train} + {n_val} images into {root}", file=sys.stderr)
    token = f"{os.getpid()}-{secrets.token_hex(4)}"
    tmp = root.parent / f".{root.name}.tmp-{token}"
    try:
        generate_shapes(tmp, n_train, n_val, image_size, seed, workers)
        for _ in range(5):
            try:
                tmp.rename(root)
                return
            except OSError:  # root exists and is not empty
                if _is_complete(root, params):
                    return  # a concurrent call finished first: keep its copy
                old = root.parent / f".{root.name}.old-{token}"
                try:
                    root.rename(old)
                except FileNotFoundError:  # a concurrent call moved it away first
                    continue
                shutil.rmtree(old, ignore_errors=True)
        raise RuntimeError(f"shapes: could not install {tmp} as {root}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def summary(root: str | Path) -> str:
    """A table of images, objects and objects per class for each split."""
    header = f"{'split':<6} {'images':>6} {'objects':>7} " + " ".join(f"{n:>8}" for n in CLASS_NAMES)
    lines = [header]
    for split in SPLITS:
        data = json.loads((Path(root) / f"shapes_{split}.json").read_text())
        per_class = np.bincount([a["category_id"] - 1 for a in data["annotations"]],
                                minlength=len(CLASS_NAMES))
        lines.append(f"{split:<6} {len(data['images']):>6} {len(data['annotations']):>7} "
                     + " ".join(f"{c:>8}" for c in per_class))
    return "\n".join(lines)
