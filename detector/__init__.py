"""detector: the single-shot detector of fast.ai 2018 Part 2, Lessons 8-9, with PyTorch Lightning.

The package is a house of rooms by stage of the data flow (docs/design.md, "Layout"), each
importing only the rooms below it: ``cli`` > ``research``, ``inspection`` > ``deploy`` > ``training`` >
``evaluation`` > ``autoanchor``, ``pictures`` > ``model``, ``data`` > ``core`` (the lesson's box
maths, anchors, coder, matching, loss and NMS); ``errors`` and ``defaults`` serve every room.
The command line is ``detector`` (:mod:`detector.cli`).

The Python API for a trained model is :class:`Detector` (:mod:`detector.deploy.api`)::

    from detector import Detector
    detector = Detector.from_checkpoint("runs/shapes/v1/checkpoints/best.ckpt")
    results = detector.predict("photos/")

and :class:`OnnxDetector` (:mod:`detector.deploy.onnx_detector`) the same on an end-to-end ONNX export,
without torch. Importing this package imports nothing else: those names load their module on
first use.
"""

from __future__ import annotations

import lazy_loader as _lazy

__getattr__, __dir__, __all__ = _lazy.attach(__name__, submod_attrs={
    "deploy.api": ["Detector"],
    "deploy.onnx_detector": ["OnnxDetector"],
    "deploy.prediction": ["Prediction"],
})
