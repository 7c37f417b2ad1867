"""Using a trained model: the Python API, image sources, drawing at the image's own resolution, the
predict loop, and export to ONNX (the network alone, or end to end with NMS) with its runtime.

- :mod:`~detector.deploy.api`: :class:`Detector` (``Detector.from_checkpoint(path).predict(source)``);
- :mod:`~detector.deploy.loading`: a checkpoint -> the trained module of whichever task wrote it;
- :mod:`~detector.deploy.sources`, :mod:`~detector.deploy.prediction`, :mod:`~detector.deploy.annotate`:
  images in, :class:`Prediction` out, pictures drawn;
- :mod:`~detector.deploy.inference`: ``detector predict``'s loop (checkpoint or ONNX);
- :mod:`~detector.deploy.export`, :mod:`~detector.deploy.end_to_end`: ONNX export;
  :mod:`~detector.deploy.onnx_detector`: :class:`OnnxDetector`, onnxruntime only (no torch).
"""

import lazy_loader as _lazy

__getattr__, __dir__, __all__ = _lazy.attach(__name__, submod_attrs={
    "api": ["Detector"],
    "loading": ["load_detector", "load_model"],
    "onnx_detector": ["OnnxDetector"],
    "prediction": ["Prediction", "to_coco"],
})
