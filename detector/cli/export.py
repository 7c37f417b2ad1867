"""``detector export``: a detector checkpoint -> ONNX and its JSON beside it: the raw network
(:mod:`detector.deploy.export`) or, with ``--with-nms``, the end-to-end graph (:mod:`detector.deploy.end_to_end`)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from detector.cli import Parser

__all__ = ["main"]

DESCRIPTION = """Export a trained detector to ONNX, with a JSON beside it that describes the model.

  detector export --checkpoint runs/shapes/v1/checkpoints/best.ckpt --onnx model.onnx [--dynamic-batch]
  detector export --checkpoint runs/shapes/v1/checkpoints/best.ckpt --onnx model.onnx --with-nms [--flip-tta]

Without --with-nms the graph takes normalised (B, 3, S, S) images and returns the raw class logits
and box activations; model.json holds the class names, the normalisation, the anchors and the box
coder, and the steps to decode them and suppress overlaps (also in the ONNX file's metadata).

With --with-nms the graph does it all: uint8 (B, H, W, 3) RGB images of any size and a
score_threshold in; resize and normalisation (bit for bit as evaluation), the network, decoding,
the score threshold and NMS inside; boxes (N, 4) in the input's pixels, scores (N,), labels (N,)
and batch_index (N,) out. detector predict --onnx model.onnx runs it without torch."""


def main(argv: Sequence[str]) -> int:
    parser = Parser(prog="detector export", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="a .ckpt of the detector written by detector train")
    parser.add_argument("--onnx", required=True, help="the .onnx file to write (its .json goes beside it)")
    parser.add_argument("--opset", type=int, default=17, help="ONNX opset version")
    parser.add_argument("--with-nms", action="store_true", help="the end-to-end graph: uint8 images in, detections out")
    parser.add_argument(
        "--flip-tta", action=argparse.BooleanOptionalAction, default=None,
        help="with --with-nms: flip test-time augmentation in the graph (default: the checkpoint's setting)",
    )
    parser.add_argument("--dynamic-batch", action="store_true", help="the raw export takes any batch size (default: batch 1); the --with-nms graph always does")
    args = parser.parse_args(argv)
    if args.flip_tta is not None and not args.with_nms:
        parser.error("--flip-tta goes with --with-nms (the raw export's JSON says how to apply it)")

    from detector.deploy.loading import load_detector

    model = load_detector(args.checkpoint)
    if args.with_nms:
        from detector.deploy.end_to_end import export_end_to_end

        written = export_end_to_end(model, args.onnx, args.flip_tta, args.opset)
    else:
        from detector.deploy.export import export_onnx

        written = export_onnx(model, args.onnx, args.opset, args.dynamic_batch)
    print(f"wrote {written[0]} and {written[1]}")
    return 0
