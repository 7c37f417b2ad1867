"""Predict image files with a trained checkpoint of any task (the SSD or a stepping stone of the
lessons, see ``detector.tasks``): annotated PNGs + COCO-format ``detections.json``.

    python predict.py --checkpoint runs/shapes/checkpoints/best.ckpt --images photos/ --out out/photos [--score 0.3]
        [--device cpu|cuda|auto] [--batch-size 8]

The work is done by :mod:`detector.inference` (importable: ``predict_images``, ``main``); its
docstring describes the outputs (boxes in original-image pixels, ``category_id`` = class index + 1,
and which keys each task fills).
"""

from __future__ import annotations

import sys

from detector.inference import main

if __name__ == "__main__":
    sys.exit(main())
