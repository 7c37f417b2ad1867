"""An end-to-end ONNX export (:mod:`detector.deploy.end_to_end`) run with onnxruntime: the interface of
:class:`detector.deploy.api.Detector` without torch (this module imports NumPy, PIL and onnxruntime only).

    from detector.deploy.onnx_detector import OnnxDetector

    detector = OnnxDetector("model.onnx")
    results = detector.predict("photos/")
    detector.draw(results[0]).save("first.png")

Images are read as the PyTorch path reads them (:mod:`detector.deploy.sources`), and the graph resizes
and normalises them bit for bit as evaluation does; consecutive images of the same decoded size
share a batch (the graph takes one size per call). The flip TTA is whatever the export chose
(``flip_tta`` in the metadata).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import numpy as np
from PIL import Image

from detector.data.image import ImageDecodeError
from detector.deploy.annotate import draw
from detector.deploy.prediction import Prediction, to_coco
from detector.deploy.sources import Loaded, expand, load
from detector.errors import BadImageError, CheckpointError, ConfigError, MissingFileError

__all__ = ["OnnxDetector"]

METADATA_KEY = "detector"  # detector.deploy.export.METADATA_KEY (that module imports torch)


class OnnxDetector:
    """An end-to-end ONNX export, ready to predict on images.

    Args:
        path: the ``.onnx`` file ``detector export --with-nms`` wrote.
        threads: onnxruntime's intra-op threads (default: its own choice, one per core).
        providers: onnxruntime execution providers (default: the CPU's).

    Raises:
        MissingFileError: no such file.
        CheckpointError: not an ONNX model, not one ``detector export`` wrote, or its raw-activation
            export (without decoding and NMS).
    """

    def __init__(self, path: str | Path, threads: int | None = None, providers: list[str] | None = None):
        self.path = Path(path)
        if not self.path.is_file():
            raise MissingFileError(f"{self.path}: no such file")
        try:
            import onnxruntime as ort
        except ImportError:
            raise ConfigError("predicting with an ONNX model needs onnxruntime: pip install onnxruntime") from None
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(str(self.path), options, providers=providers or ["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime's own exception types, for a file it cannot load
            message = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise CheckpointError(f"{self.path}: not an ONNX model onnxruntime can load ({message})") from None
        metadata = self.session.get_modelmeta().custom_metadata_map.get(METADATA_KEY)
        if metadata is None:
            raise CheckpointError(f"{self.path}: an ONNX model without detector metadata, not one detector export wrote")
        self.info: dict[str, Any] = json.loads(metadata)
        if not self.info.get("end_to_end"):
            raise CheckpointError(
                f"{self.path} is the raw-activation export (no decoding or NMS in the graph): "
                "export the checkpoint again with --with-nms to predict with it"
            )
        self.class_names: list[str] = list(self.info["class_names"])
        self.image_size: int = int(self.info["image_size"])
        self.score_threshold: float = float(self.info["score_threshold"])
        self.flip_tta: bool = bool(self.info["flip_tta"])

    def __repr__(self) -> str:
        return f"OnnxDetector({self.path.name}, {len(self.class_names)} classes, {self.image_size} px, flip_tta={self.flip_tta})"

    def predict(self, source: Any, score: float | None = None, batch_size: int = 8) -> list[Prediction]:
        """As :meth:`detector.deploy.api.Detector.predict`; ``score`` defaults to the export's
        ``score_threshold`` (the checkpoint's picture threshold)."""
        return list(self.predict_iter(source, score, batch_size))

    def predict_iter(
        self, source: Any, score: float | None = None, batch_size: int = 8, on_error: Literal["raise", "report"] = "raise"
    ) -> Iterator[Prediction]:
        """:meth:`predict` one result at a time (``on_error``: as :meth:`detector.deploy.api.Detector.predict_iter`)."""
        if on_error not in ("raise", "report"):
            raise ConfigError(f"on_error must be 'raise' or 'report'; got {on_error!r}")
        threshold = np.asarray(self.score_threshold if score is None else score, np.float32)
        pending: list[Loaded] = []
        for item in expand(source):
            try:
                loaded = load(item, self.image_size)
            except (ImageDecodeError, OSError) as e:
                yield from self._run(pending, threshold)
                pending = []
                reason = str(e).removeprefix(f"{item}: ")
                if on_error == "raise":
                    raise BadImageError(f"{item}: {reason}") from None
                yield Prediction.failed(Path(item), reason)
                continue
            if pending and (pending[0].image.shape != loaded.image.shape or len(pending) == batch_size):
                yield from self._run(pending, threshold)
                pending = []
            pending.append(loaded)
        yield from self._run(pending, threshold)

    def _run(self, batch: list[Loaded], threshold: np.ndarray) -> list[Prediction]:
        """The graph on images of one size; boxes from the decoded images' pixels to the originals'."""
        if not batch:
            return []
        images = np.stack([loaded.image for loaded in batch])  # (b, h, w, 3) uint8
        boxes, scores, labels, index = self.session.run(None, {"images": images, "score_threshold": threshold})
        h, w = images.shape[1:3]
        out = []
        for i, loaded in enumerate(batch):
            mine = index == i  # (N,)
            scale = np.asarray([loaded.width / w, loaded.height / h] * 2, np.float32)  # (4,)
            pred = {"boxes": boxes[mine] * scale, "scores": scores[mine], "labels": labels[mine]}
            out.append(Prediction.from_arrays(pred, self.class_names, loaded.width, loaded.height, path=loaded.path, image=loaded.original))
        return out

    def draw(self, prediction: Prediction, image: np.ndarray | Image.Image | None = None) -> Image.Image:
        """As :meth:`detector.deploy.api.Detector.draw`."""
        return draw(prediction, image)

    def to_coco(self, predictions: list[Prediction], start_id: int = 1) -> list[dict[str, Any]]:
        """As :meth:`detector.deploy.api.Detector.to_coco`."""
        return to_coco(predictions, start_id)
