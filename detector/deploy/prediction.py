"""One image's predictions, in its own pixels, as NumPy arrays; and the COCO results layout.

Both ways of predicting return these (:class:`detector.deploy.api.Detector`, PyTorch, and
:class:`detector.deploy.onnx_detector.OnnxDetector`, onnxruntime): NumPy, so the ONNX path needs no torch.
The fields follow torchvision's detection output (``boxes``, ``scores``, ``labels``) and add what
ultralytics' ``Results`` carries (the class ``names``, the image's size and ``path``)::

    for p in detector.predict("photos/"):
        for (x1, y1, x2, y2), score, name in zip(p.boxes, p.scores, p.names):
            print(p.path.name, name, round(float(score), 2), x1, y1, x2, y2)

Each task fills what it predicts (the others are ``None``): the SSD and the single-object detector
all four; the largest-object and multi-label classifiers ``scores``, ``labels``, ``names``; the
box regressor ``boxes``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["Prediction", "to_coco"]


@dataclass(eq=False)
class Prediction:
    """What was predicted on one image; N predictions, highest score first.

    Attributes:
        boxes: ``(N, 4)`` float32 ``x1, y1, x2, y2`` in pixels of the original, upright image
            (EXIF orientation applied), whatever the network's input size; ``None`` for a
            classifier.
        scores: ``(N,)`` float32 probabilities in ``[0, 1]``; ``None`` for the box regressor.
        labels: ``(N,)`` int64 class indices ``0..C-1``; ``None`` for the box regressor.
        names: the N class names (``class_names[label]``); ``None`` for the box regressor.
        width, height: the original image's size in pixels.
        path: the image file, or ``None`` for an image given in memory.
        error: why the file could not be read (only with ``on_error="report"``; the arrays are
            then empty).
        image: the ``(H, W, 3)`` uint8 array of an image given in memory, which ``draw`` draws on
            (a file is read again instead); not printed.
    """

    boxes: np.ndarray | None
    scores: np.ndarray | None
    labels: np.ndarray | None
    names: list[str] | None
    width: int
    height: int
    path: Path | None = None
    error: str | None = None
    image: np.ndarray | None = field(default=None, repr=False)

    def __len__(self) -> int:
        """N, the number of predictions."""
        return len(next(x for x in (self.boxes, self.scores, self.labels) if x is not None))

    @classmethod
    def failed(cls, path: Path, reason: str) -> Prediction:
        """The entry for a file that could not be read: nothing predicted, ``error`` says why."""
        return cls(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64), [], 0, 0, path, reason)

    @classmethod
    def from_arrays(
        cls, pred: dict[str, np.ndarray], class_names: Sequence[str], width: int, height: int, **kw: Any
    ) -> Prediction:
        """From a dict of whichever of ``boxes (N, 4)`` (pixels), ``scores (N,)``, ``labels (N,)``
        the task predicts."""
        labels = pred.get("labels")
        return cls(
            boxes=None if pred.get("boxes") is None else np.asarray(pred["boxes"], np.float32).reshape(-1, 4),
            scores=None if pred.get("scores") is None else np.asarray(pred["scores"], np.float32),
            labels=None if labels is None else np.asarray(labels, np.int64),
            names=None if labels is None else [class_names[int(c)] for c in labels],
            width=int(width),
            height=int(height),
            **kw,
        )


def to_coco(predictions: Iterable[Prediction], start_id: int = 1) -> list[dict[str, Any]]:
    """The COCO results layout (what ``detector predict`` writes to ``detections.json``)::

        [{"image_id": 1, "file_name": "photo.jpg", "category_id": 3, "category_name": "triangle",
          "bbox": [x, y, w, h], "score": 0.91}, ...]

    ``image_id`` numbers the predictions ``start_id, start_id + 1, ...`` in order (an unreadable
    file keeps its number); ``category_id`` is the class index + 1 (the course's JSONs number
    their categories 1..C in order); ``bbox`` is in pixels, rounded to 0.01, and ``score`` to 1e-5;
    ``file_name`` only for files. Each task fills the keys it predicts (module docstring).
    """
    out: list[dict[str, Any]] = []
    for image_id, p in enumerate(predictions, start=start_id):
        for i in range(len(p)):
            entry: dict[str, Any] = {"image_id": image_id}
            if p.path is not None:
                entry["file_name"] = p.path.name
            if p.labels is not None:
                entry.update(category_id=int(p.labels[i]) + 1, category_name=p.names[i])
            if p.boxes is not None:
                x1, y1, x2, y2 = (float(v) for v in p.boxes[i])
                entry["bbox"] = [round(v, 2) for v in (x1, y1, x2 - x1, y2 - y1)]
            if p.scores is not None:
                entry["score"] = round(float(p.scores[i]), 5)
            out.append(entry)
    return out
