"""detector: the single-shot detector of fast.ai 2018 Part 2, Lessons 8-9, with PyTorch Lightning.

The command line is ``detector`` (:mod:`detector.cli`); the data flow, top to bottom, is
``data`` (records, transforms, batches) -> ``model`` (body and SSD head, raw activations) ->
``anchors``, ``matching``, ``loss`` (training) and ``box_coder``, ``postprocess``, ``metrics``
(evaluation), wired by ``module.DetectorModule`` on the recipe of ``staged`` and ``recipe``.

The Python API for a trained model is :class:`Detector` (:mod:`detector.api`)::

    from detector import Detector
    detector = Detector.from_checkpoint("runs/shapes/v1/checkpoints/best.ckpt")
    results = detector.predict("photos/")

and :class:`OnnxDetector` (:mod:`detector.onnx_detector`) the same on an end-to-end ONNX export,
without torch. Importing this package imports nothing else: those names load their module on
first use.
"""

from __future__ import annotations

from typing import Any

__all__ = ["Detector", "OnnxDetector", "Prediction"]

_LAZY = {"Detector": "detector.api", "OnnxDetector": "detector.onnx_detector", "Prediction": "detector.prediction"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'detector' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])
