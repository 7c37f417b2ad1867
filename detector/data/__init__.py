"""The data pipeline: COCO-format JSON -> validated records -> augmented, padded batches.

- ``records``: parse and validate a COCO detection JSON into per-image ``Record``s (xyxy pixels).
- ``image``: decode image files to RGB; read image sizes from headers; ``image_cache``: decoded
  images kept in memory (opt-in, for small datasets on a CPU).
- ``transforms``: albumentations presets (``lesson``, ``strong``, ``ssd``, ``none``), boxes moving
  with the pixels, seeded per sample; ``samplers``: which images each process loads, in which order.
- ``dataset``: samples and ``collate_detections``; ``datamodule``: the ``DetectionDataModule``.
- ``shapes``, ``scenes``: the synthetic default dataset; ``voc``, ``download``: VOC XML -> JSON and
  the VOC 2007 download; ``importers``: ``detector data import``; ``skip_guard``: the skip ceiling.

The names below load their module on first use: importing this package imports nothing, so that
``python -m detector.data.shapes`` or ``detector data import`` does not pay for torch and Lightning.
"""

import lazy_loader as _lazy

__getattr__, __dir__, __all__ = _lazy.attach(__name__, submod_attrs={
    "datamodule": ["DetectionDataModule"],
    "dataset": ["DetectionDataset", "collate_detections"],
    "records": ["LoadedSplit", "Record", "load_records"],
    "transforms": ["DetectionTransform"],
})
