"""Running a trained checkpoint on image files: annotated pictures and COCO-format detections.

    detector predict --checkpoint runs/shapes/checkpoints/best.ckpt --images photos/ --out out/photos
    detector predict --checkpoint CKPT --images "data/shapes/JPEGImages/val_*.jpg" --out out/val --score 0.3

The checkpoint may hold any task (:func:`detector.loading.load_model` rebuilds the class that wrote it): the SSD
(:class:`detector.module.DetectorModule`) or a stepping stone of the lessons (:mod:`detector.tasks`).
For every readable image, ``OUT/<name>.png`` shows the predictions scoring above ``--score``
(default: for the SSD, the checkpoint's ``picture_score_threshold``, the lesson's 0.25), and
``OUT/detections.json`` lists the same predictions in the COCO results layout::

    [{"image_id": 1, "file_name": "photo.jpg", "category_id": 3, "category_name": "triangle",
      "bbox": [x, y, w, h], "score": 0.91}, ...]

Each task fills the keys it predicts:

=========================  ==========================================  ===========================
task                       one entry per                               keys beyond the image's
=========================  ==========================================  ===========================
SSD                        detection                                   all
SingleObjectDetector       image: its largest object                    all
LargestBoxRegressor        image: its largest object's box              ``bbox``
LargestObjectClassifier    image: its largest object's class            category, ``score``
MultiLabelClassifier       class present (sigmoid above --score,        category, ``score``
                           default the model's threshold, 0.4)
=========================  ==========================================  ===========================

Pictures draw the boxes (with class and score where there are some); a classifier's classes are
written in the image's top-left corner, as the lesson's pictures did. ``--score`` drops a
classifier's or single-object detector's answer whose probability is not above it.

* ``bbox`` is in pixels of the original, upright image (EXIF orientation applied, as every decoder
  here does), whatever the network's input size;
* ``category_id`` is the class index + 1: class ``i`` of the checkpoint's ``class_names`` has id
  ``i + 1``, as in the course's JSONs (``pascal_*2007.json``, the shapes JSONs), whose categories
  are numbered 1..C in order;
* ``image_id`` numbers the images 1, 2, ... in the sorted order of their paths (``file_name`` is
  the file's name, to join on).

The preprocessing is evaluation's exactly (``DetectionDataset`` with the ``"none"`` preset): a JPEG
at least twice the network's input size is decoded at a reduced scale (libjpeg's DCT scaling, see
:func:`detector.data.image.load_image`), squashed to ``S x S`` and normalised with the backbone's
statistics; so a checkpoint predicts here what it predicted when it was evaluated. The pictures
are drawn on that decoded image.

Images of any size and mode (grayscale, RGBA, palette, CMYK) are read; a file that cannot be
decoded is reported by name and skipped, and a summary lists them at the end (``detector predict``
exits non-zero only when no image at all could be read).
"""

from __future__ import annotations

import glob
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from detector.boxes import xyxy_to_xywh
from detector.data.image import ImageDecodeError, load_image, read_image_size
from detector.data.transforms import DetectionTransform
from detector.module import DetectorModule
from detector.staged import StagedModule

__all__ = ["PredictReport", "find_images", "predict_images"]


def find_images(spec: str | Path) -> list[Path]:
    """The image files named by ``spec``, sorted.

    A folder: its files (not sub-folders) whose suffix is one PIL reads (``.jpg``, ``.png``, ...;
    other files are ignored). A file: itself. Anything else: a glob pattern (``**`` recurses), every
    matching file, whatever its suffix (so a corrupt or mis-named file is reported, not ignored).
    """
    path = Path(spec)
    if path.is_dir():
        suffixes = {s.lower() for s in Image.registered_extensions()}
        return sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in suffixes)
    if path.is_file():
        return [path]
    return sorted(Path(p) for p in glob.glob(str(spec), recursive=True) if Path(p).is_file())



class _ImageFiles(Dataset):
    """Decodes and preprocesses one file per item; a file that fails becomes ``{"error": ...}``."""

    def __init__(self, paths: Sequence[Path], transform: DetectionTransform):
        self.paths, self.transform = list(paths), transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> dict[str, Any]:
        path = self.paths[index]
        try:
            image = load_image(path, min_side=self.transform.size)  # (h, w, 3) uint8, as evaluation decodes
            width, height = read_image_size(path)  # the original, upright size
        except (ImageDecodeError, OSError) as e:
            reason = str(e).removeprefix(f"{path}: ")  # the summary names the file itself
            return {"index": index, "path": path, "error": reason}
        network_input = self.transform(image, np.zeros((0, 4), np.float32)).image  # (3, S, S)
        return {"index": index, "path": path, "image": image, "input": network_input, "size": (height, width)}


@dataclass
class PredictReport:
    """What :func:`predict_images` did.

    Attributes:
        detections: the entries written to ``detections.json`` (see the module docstring).
        pictures: the annotated PNGs written, in image order.
        failures: ``(path, reason)`` of every file that could not be read.
        images: how many images were read and predicted.
    """

    detections: list[dict[str, Any]] = field(default_factory=list)
    pictures: list[Path] = field(default_factory=list)
    failures: list[tuple[Path, str]] = field(default_factory=list)
    images: int = 0

    def summary(self) -> str:
        lines = [f"{self.images} images, {len(self.detections)} predictions"]
        if self.failures:
            lines.append(f"{len(self.failures)} unreadable file(s), skipped:")
            lines += [f"  {path}: {reason}" for path, reason in self.failures]
        return "\n".join(lines)


def _picture_names(paths: Sequence[Path]) -> list[str]:
    """``<stem>.png`` per path; a stem seen before gets ``_2``, ``_3``, ... (same names in two folders)."""
    taken: set[str] = set()
    names = []
    for path in paths:
        name, n = path.stem, 1
        while name in taken:
            n += 1
            name = f"{path.stem}_{n}"
        taken.add(name)
        names.append(f"{name}.png")
    return names


@torch.inference_mode()
def predict_images(
    model: StagedModule,
    paths: Sequence[Path],
    out: str | Path,
    score: float | None = None,
    batch_size: int = 8,
    workers: int = 0,
    pictures: bool = True,
    progress: bool = True,
) -> PredictReport:
    """Predict ``paths`` with ``model``; write the pictures and ``detections.json`` to ``out``.

    Args:
        model: a :class:`DetectorModule` or a :mod:`detector.tasks` module, in eval mode, on the
            device to run on (see :func:`detector.loading.load_model`).
        score: keep predictions scoring above this (default: the SSD's
            ``model.post_cfg.picture_score_threshold``; each stepping stone's own, see the module
            docstring).
        batch_size: images per forward pass.
        workers: DataLoader processes decoding images (0: decode in this process).
        pictures: write one annotated PNG per image.

    Returns:
        :class:`PredictReport`; unreadable files are in ``failures``, never raised.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    threshold = model.post_cfg.picture_score_threshold if score is None and isinstance(model, DetectorModule) else score
    mean, std = model.model.backbone.mean, model.model.backbone.std
    transform = DetectionTransform("none", model.image_size, mean=mean, std=std)
    loader = DataLoader(_ImageFiles(paths, transform), batch_size=batch_size, num_workers=workers, collate_fn=list)
    names = _picture_names(paths)
    device = next(model.parameters()).device
    report = PredictReport()
    bar = tqdm(total=len(paths), unit="img", desc="predict", file=sys.stderr, disable=not progress)
    for items in loader:
        for item in items:
            if "error" in item:
                report.failures.append((item["path"], item["error"]))
                tqdm.write(f"predict: skipping unreadable {item['path']}: {item['error']}", file=sys.stderr)
        good = [item for item in items if "error" not in item]
        if good:
            inputs = torch.stack([item["input"] for item in good]).to(device)  # (b, 3, S, S)
            # For the SSD, thresholding before NMS keeps exactly the detections of evaluation's NMS
            # that score above ``threshold``: a box below it could never have suppressed one above it.
            for item, pred in zip(good, model.detect(inputs, score_threshold=threshold)):
                pred = {k: v.cpu() for k, v in pred.items()}
                _record(report, item, pred, model.class_names)
                if pictures:
                    from detector.pictures import save_figure

                    fig = _picture(item["image"], pred, model.class_names)
                    report.pictures.append(save_figure(fig, out / names[item["index"]]))
        report.images += len(good)
        bar.update(len(items))
    bar.close()
    (out / "detections.json").write_text(json.dumps(report.detections) + "\n")
    return report


def _picture(image: np.ndarray, pred: dict[str, torch.Tensor], class_names: Sequence[str]) -> Any:
    """The figure of one prediction on its decoded ``(h, w, 3)`` image: boxes (``[0, 1]`` -> pixels)
    with whatever labels and scores there are, or a classifier's labels written in the corner."""
    from detector.pictures import show_boxes, show_labels

    if "boxes" not in pred:
        return show_labels(image, pred["labels"], class_names, pred.get("scores"))
    h, w = image.shape[:2]
    boxes = pred["boxes"] * torch.tensor([w, h, w, h], dtype=pred["boxes"].dtype)  # (N, 4) pixels
    return show_boxes(image, boxes, pred.get("labels"), class_names, pred.get("scores"))


def _record(report: PredictReport, item: dict[str, Any], pred: dict[str, torch.Tensor], class_names: Sequence[str]) -> None:
    """Append one image's predictions in COCO results layout, with the keys the task predicts:
    ``boxes (N, 4)`` xyxy in ``[0, 1]`` -> ``bbox`` xywh in original pixels, ``labels (N,)`` ->
    ``category_id`` / ``category_name``, ``scores (N,)`` -> ``score``."""
    height, width = item["size"]
    columns: dict[str, list] = {}
    if "labels" in pred:
        columns["labels"] = pred["labels"].tolist()
    if "boxes" in pred:
        scale = torch.tensor([width, height, width, height], dtype=pred["boxes"].dtype)
        columns["bbox"] = xyxy_to_xywh(pred["boxes"] * scale).tolist()  # (N, 4) pixels
    if "scores" in pred:
        columns["score"] = pred["scores"].tolist()
    n = len(next(iter(columns.values()))) if columns else 0
    for i in range(n):
        entry: dict[str, Any] = {"image_id": item["index"] + 1, "file_name": item["path"].name}
        if "labels" in columns:
            label = columns["labels"][i]
            entry.update(category_id=label + 1, category_name=class_names[label])
        if "bbox" in columns:
            entry["bbox"] = [round(v, 2) for v in columns["bbox"][i]]
        if "score" in columns:
            entry["score"] = round(columns["score"][i], 5)
        report.detections.append(entry)
