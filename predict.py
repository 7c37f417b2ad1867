"""Detect objects in image files with a trained checkpoint: annotated PNGs + COCO-format detections.

    python predict.py --checkpoint runs/shapes/checkpoints/best.ckpt --images photos/ --out out/photos [--score 0.3]
        [--device cpu|cuda|auto] [--batch-size 8]

The work is done by :mod:`detector.inference` (importable: ``predict_images``, ``main``); its
docstring describes the outputs (boxes in original-image pixels, ``category_id`` = class index + 1).
"""

from __future__ import annotations

import sys

from detector.inference import main

if __name__ == "__main__":
    sys.exit(main())
