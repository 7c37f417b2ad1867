"""The data pipeline: COCO-format JSON -> validated records -> augmented, padded batches.

- ``records``: parse and validate a COCO detection JSON into per-image ``Record``s (xyxy pixels).
- ``image``: decode image files to RGB; read image sizes from headers.
- ``transforms``: albumentations presets (``lesson``, ``strong``, ``ssd``, ``none``), boxes moving
  with the pixels, seeded per sample.
- ``datamodule``: the dataset, ``collate_detections`` and the ``DetectionDataModule``.
- ``shapes``: the synthetic default dataset; ``voc``: VOC download and XML -> JSON conversion.

Import from the submodules: this package imports nothing, so that ``python -m
detector.data.shapes`` or ``detector.data.voc`` does not pay for torch and Lightning.
"""
