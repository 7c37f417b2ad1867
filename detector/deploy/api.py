"""The Python API: a trained checkpoint, ready to predict on images.

    from detector import Detector

    detector = Detector.from_checkpoint("runs/shapes/v1/checkpoints/best.ckpt")
    results = detector.predict("photos/")              # or a file, a glob, PIL images, arrays, tensors, a list
    detector.draw(results[0]).save("first.png")        # at the photo's own resolution
    print(results[0].names, results[0].boxes)          # boxes (N, 4) x1, y1, x2, y2 in the photo's pixels

Any task's checkpoint works (the SSD and the lessons' stepping stones, :mod:`detector.training.tasks`);
each result is a :class:`~detector.deploy.prediction.Prediction` with NumPy arrays. Images go through the
network in batches, preprocessed as evaluation preprocesses them (:mod:`detector.deploy.sources`; the
``"none"`` transform: squash to ``S x S``, the backbone's normalisation) and decoded by the
checkpoint's own ``detect``: so with ``score`` at the evaluation threshold
(``post_cfg.score_threshold``, 0.01) an SSD gives on a split's files exactly the detections
``detector eval`` scores. Without ``score``, predictions keep what a picture shows: the SSD's
``picture_score_threshold`` (the lesson's 0.25), the multi-label classifier's threshold (0.4),
everything for the other tasks.

:class:`detector.deploy.onnx_detector.OnnxDetector` is the same interface on an ONNX export, without torch.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from detector.data.image import ImageDecodeError
from detector.data.transforms import DetectionTransform
from detector.deploy.annotate import draw
from detector.deploy.loading import load_model
from detector.deploy.prediction import Prediction, to_coco
from detector.deploy.sources import Loaded, expand, load
from detector.errors import BadImageError, ConfigError
from detector.training.tasks.detection import DetectorModule
from detector.training.tasks.staged import StagedModule

__all__ = ["Detector"]

OnError = Literal["raise", "report"]


class _Items(Dataset):
    """Reads and preprocesses one source item per index; a file that fails becomes its error."""

    def __init__(self, items: list[Path | np.ndarray], transform: DetectionTransform):
        self.items, self.transform = items, transform

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[Loaded, torch.Tensor] | tuple[Path, str]:
        item = self.items[index]
        try:
            loaded = load(item, self.transform.size)
        except (ImageDecodeError, OSError) as e:
            return item, str(e).removeprefix(f"{item}: ")
        return loaded, self.transform(loaded.image, np.zeros((0, 4), np.float32)).image  # (3, S, S)


class Detector:
    """A trained module of any task, in eval mode, with what predicting on images needs.

    Args:
        model: a :class:`~detector.training.tasks.detection.DetectorModule` or a :mod:`detector.training.tasks` module (see
            :meth:`from_checkpoint`); it stays on its device.
    """

    def __init__(self, model: StagedModule):
        self.model = model.eval()
        self.class_names: list[str] = list(model.class_names)
        self.image_size: int = int(model.image_size)
        backbone = model.model.backbone
        self.transform = DetectionTransform("none", self.image_size, mean=backbone.mean, std=backbone.std)

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str | torch.device = "auto") -> Detector:
        """The checkpoint's module (whichever task wrote it) on ``device`` (``auto``: a GPU when
        there is one). Raises :class:`~detector.errors.CheckpointError` naming the file when it is
        missing, unreadable or of no known task."""
        return cls(load_model(path, device))

    @property
    def task(self) -> str:
        """The class of the module: ``DetectorModule`` (the SSD) or a stepping stone's."""
        return type(self.model).__name__

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def __repr__(self) -> str:
        return f"Detector({self.task}, {len(self.class_names)} classes, {self.image_size} px, {self.device})"

    def predict(
        self, source: Any, score: float | None = None, flip_tta: bool | None = None, batch_size: int = 8
    ) -> list[Prediction]:
        """One :class:`~detector.deploy.prediction.Prediction` per image of ``source`` (a path, a folder,
        a glob, a PIL image, an ``(H, W, 3)`` uint8 RGB array, a tensor, or a list of these; see
        :mod:`detector.deploy.sources`), in order.

        Args:
            score: keep predictions scoring above this (default: the task's, module docstring).
            flip_tta: the SSD's flip test-time augmentation (default: the checkpoint's setting).
            batch_size: images per forward pass.

        Raises:
            MissingFileError: a path naming no image file.
            BadImageError: a file that cannot be decoded, or something that is no image.
        """
        return list(self.predict_iter(source, score, flip_tta, batch_size))

    @torch.inference_mode()
    def predict_iter(
        self,
        source: Any,
        score: float | None = None,
        flip_tta: bool | None = None,
        batch_size: int = 8,
        on_error: OnError = "raise",
        workers: int = 0,
    ) -> Iterator[Prediction]:
        """:meth:`predict`, one result at a time, reading the images a batch at a time.

        Args:
            on_error: ``"raise"`` :class:`BadImageError` at a file that cannot be read, or
                ``"report"`` it as a result whose ``error`` says why (and that has no predictions).
            workers: DataLoader processes reading and preprocessing the images (0: this one).
        """
        if on_error not in ("raise", "report"):
            raise ConfigError(f"on_error must be 'raise' or 'report'; got {on_error!r}")
        items = expand(source)
        loader = DataLoader(_Items(items, self.transform), batch_size=batch_size, num_workers=workers, collate_fn=list)
        with self._flip_tta(flip_tta):
            for batch in loader:
                good = [(loaded, x) for loaded, x in batch if isinstance(loaded, Loaded)]
                preds = iter(self._detect(good, score) if good else [])
                for first, second in batch:
                    if isinstance(first, Loaded):
                        yield next(preds)
                    elif on_error == "raise":
                        raise BadImageError(f"{first}: {second}")
                    else:
                        yield Prediction.failed(Path(first), second)

    def _detect(self, batch: list[tuple[Loaded, torch.Tensor]], score: float | None) -> list[Prediction]:
        """The module's ``detect`` on a batch, boxes ``[0, 1]`` -> the originals' pixels (as
        :func:`detector.core.postprocess.to_pixels`, on the module's device)."""
        inputs = torch.stack([x for _, x in batch]).to(self.device)  # (b, 3, S, S)
        threshold = self.model.post_cfg.picture_score_threshold if score is None and isinstance(self.model, DetectorModule) else score
        out = []
        for (loaded, _), pred in zip(batch, self.model.detect(inputs, score_threshold=threshold)):
            if "boxes" in pred:
                w, h = loaded.width, loaded.height
                pred["boxes"] = pred["boxes"] * pred["boxes"].new_tensor([w, h, w, h])  # (N, 4) pixels
            arrays = {k: v.cpu().numpy() for k, v in pred.items()}
            out.append(Prediction.from_arrays(arrays, self.class_names, loaded.width, loaded.height, path=loaded.path, image=loaded.original))
        return out

    @contextlib.contextmanager
    def _flip_tta(self, flip_tta: bool | None) -> Iterator[None]:
        """``flip_tta`` set on the SSD's postprocess config for the ``with`` block, if given."""
        if flip_tta is None:
            yield
            return
        if not isinstance(self.model, DetectorModule):
            if flip_tta:
                raise ConfigError(f"flip_tta is the SSD's test-time augmentation; this is a {self.task}")
            yield
            return
        cfg, before = self.model.post_cfg, self.model.post_cfg.flip_tta
        cfg.flip_tta = bool(flip_tta)
        try:
            yield
        finally:
            cfg.flip_tta = before

    def draw(self, prediction: Prediction, image: np.ndarray | Image.Image | None = None) -> Image.Image:
        """``prediction`` drawn on its image at the image's own resolution (:mod:`detector.deploy.annotate`).

        The image is ``image`` if given, else the array the prediction was made on, else its file
        read again (EXIF orientation applied, full size)."""
        return draw(prediction, image)

    def to_coco(self, predictions: list[Prediction], start_id: int = 1) -> list[dict[str, Any]]:
        """The COCO results of ``predictions`` (:func:`detector.deploy.prediction.to_coco`): ``image_id``
        numbered from ``start_id`` in order, ``category_id`` = class index + 1, ``bbox`` xywh pixels."""
        return to_coco(predictions, start_id)

