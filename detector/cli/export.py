"""``detector export``: a detector checkpoint -> ONNX and its sidecar JSON (:mod:`detector.export`)."""

from __future__ import annotations

import argparse
from typing import Sequence

from detector.cli import Parser

__all__ = ["main"]

DESCRIPTION = """Export a trained detector to ONNX, with a JSON beside it that says how to decode its outputs.

  detector export --checkpoint runs/shapes/checkpoints/best.ckpt --onnx model.onnx [--dynamic-batch]

The graph takes normalised (B, 3, S, S) images and returns the raw class logits and box
activations; model.json holds the class names, the normalisation, the anchors and the box coder,
and the steps to decode them and suppress overlaps (also in the ONNX file's metadata)."""


def main(argv: Sequence[str]) -> int:
    parser = Parser(prog="detector export", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="a .ckpt of the detector written by detector train")
    parser.add_argument("--onnx", required=True, help="the .onnx file to write (its .json sidecar goes beside it)")
    parser.add_argument("--opset", type=int, default=17, help="ONNX opset version")
    parser.add_argument("--dynamic-batch", action="store_true", help="any batch size (default: batch 1)")
    args = parser.parse_args(argv)

    from detector.export import export_onnx
    from detector.loading import load_detector

    written = export_onnx(load_detector(args.checkpoint), args.onnx, args.opset, args.dynamic_batch)
    print(f"wrote {written[0]} and {written[1]}")
    return 0
