"""K folds of a training split, as COCO JSONs training reads: fold ``k`` trains on every image but
its own and holds its own out, so that every image is predicted once by a model that never saw it
(what :mod:`detector.research.audit` gives cleanlab).

The images are ordered by the SHA-256 of ``seed`` and the image's ``file_name`` (the importers'
rule, :mod:`detector.data.importers.splits`: the same on any machine and library version) and dealt
round-robin, so the folds differ in size by at most one image.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from detector.errors import ConfigError

__all__ = ["Fold", "assign_folds", "write_folds"]


@dataclass(frozen=True)
class Fold:
    """One fold's files: ``train`` (the other folds' images) and ``heldout`` (its own)."""

    index: int  # 1..k
    train: Path
    heldout: Path
    train_images: int
    heldout_images: int


def assign_folds(names: Sequence[str], k: int, seed: int = 0) -> list[int]:
    """The fold (0..k-1) of each of ``names`` (the images' ``file_name``), in their order."""
    if k < 2:
        raise ConfigError(f"--folds {k}: needs at least 2 folds (each image is predicted by a model trained on the others)")
    if len(names) < k:
        raise ConfigError(f"--folds {k}: the train split has only {len(names)} images, fewer than the folds")
    order = sorted(range(len(names)), key=lambda i: hashlib.sha256(f"{seed}\0{names[i]}".encode()).hexdigest())
    folds = [0] * len(names)
    for position, i in enumerate(order):
        folds[i] = position % k
    return folds


def _subset(coco: dict[str, Any], image_ids: set[int]) -> dict[str, Any]:
    """``coco`` with only the images of ``image_ids`` and their annotations (every other key kept,
    ``categories`` in its order, so that label ``i`` is the same class in every fold)."""
    return {
        **coco,
        "images": [im for im in coco["images"] if im["id"] in image_ids],
        "annotations": [a for a in coco.get("annotations", []) if a.get("image_id") in image_ids],
    }


def write_folds(train_json: Path, image_ids: Sequence[int], k: int, out: Path, seed: int = 0) -> list[Fold]:
    """Write ``fold_K_train.json`` and ``fold_K_heldout.json`` (K = 1..k) into ``out`` from
    ``train_json``, over the images of ``image_ids`` (the records training keeps: an image
    ``on_bad_record: skip`` leaves out is in no fold)."""
    coco = json.loads(Path(train_json).read_text())
    keep = set(int(i) for i in image_ids)
    images = [im for im in coco["images"] if im["id"] in keep]
    folds = assign_folds([str(im["file_name"]) for im in images], k, seed)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for f in range(k):
        heldout = {im["id"] for im, g in zip(images, folds) if g == f}
        train = {im["id"] for im, g in zip(images, folds) if g != f}
        paths = out / f"fold_{f + 1}_train.json", out / f"fold_{f + 1}_heldout.json"
        for path, ids in zip(paths, (train, heldout)):
            path.write_text(json.dumps(_subset(coco, ids)))
        written.append(Fold(f + 1, paths[0], paths[1], len(train), len(heldout)))
    return written
