"""``detector predict``'s loop: a detector over image files -> annotated pictures and COCO-format
detections.

    detector predict --checkpoint runs/shapes/v1/checkpoints/best.ckpt --images photos/ --out out/photos
    detector predict --onnx model.onnx --images "data/shapes/JPEGImages/val_*.jpg" --out out/val --score 0.3

The detector is a checkpoint of any task (:class:`detector.deploy.api.Detector`: the SSD or a stepping
stone of the lessons) or an end-to-end ONNX export (:class:`detector.deploy.onnx_detector.OnnxDetector`,
onnxruntime without torch); both read and preprocess the images as evaluation does
(:mod:`detector.deploy.sources`). For every readable image, ``OUT/<name>.png`` is the image at its own
resolution with the predictions scoring above ``--score`` drawn on it (:mod:`detector.deploy.annotate`;
default: for the SSD, the checkpoint's ``picture_score_threshold``, the lesson's 0.25), and
``OUT/detections.json`` lists the same predictions in the COCO results layout
(:func:`detector.deploy.prediction.to_coco`)::

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

* ``bbox`` is in pixels of the original, upright image (EXIF orientation applied), whatever the
  network's input size;
* ``category_id`` is the class index + 1, as in the course's JSONs, whose categories are numbered
  1..C in order;
* ``image_id`` numbers the images 1, 2, ... in the sorted order of their paths (``file_name`` is
  the file's name, to join on).

A file that cannot be decoded is reported by name and skipped, and a summary lists them at the end
(``detector predict`` exits non-zero only when no image at all could be read). This module imports
no torch: the ONNX path runs without it.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from detector.deploy.prediction import Prediction, to_coco
from detector.deploy.sources import find_images

__all__ = ["PredictReport", "find_images", "predict_images"]


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


def predict_images(
    detector: Any,
    paths: Sequence[Path],
    out: str | Path,
    score: float | None = None,
    batch_size: int = 8,
    pictures: bool = True,
    progress: bool = True,
    **options: Any,
) -> PredictReport:
    """Predict ``paths`` with ``detector``; write the pictures and ``detections.json`` to ``out``.

    Args:
        detector: a :class:`detector.deploy.api.Detector` or :class:`detector.deploy.onnx_detector.OnnxDetector`.
        score: keep predictions scoring above this (default: the detector's, module docstring).
        batch_size: images per forward pass.
        pictures: write one annotated PNG per image.
        options: passed on to ``detector.predict_iter`` (``flip_tta``, ``workers`` for a checkpoint).

    Returns:
        :class:`PredictReport`; unreadable files are in ``failures``, never raised.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    names = _picture_names(paths)
    report = PredictReport()
    results: list[Prediction] = []
    bar = tqdm(total=len(paths), unit="img", desc="predict", file=sys.stderr, disable=not progress)
    stream = detector.predict_iter(list(paths), score=score, batch_size=batch_size, on_error="report", **options)
    for name, pred in zip(names, stream):
        results.append(pred)
        bar.update(1)
        if pred.error is not None:
            report.failures.append((pred.path, pred.error))
            tqdm.write(f"predict: skipping unreadable {pred.path}: {pred.error}", file=sys.stderr)
            continue
        report.images += 1
        if pictures:
            path = out / name
            detector.draw(pred).save(path)
            report.pictures.append(path)
    bar.close()
    report.detections = to_coco(results)
    (out / "detections.json").write_text(json.dumps(report.detections) + "\n")
    return report
