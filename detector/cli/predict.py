"""``detector predict``: a checkpoint of any task, or an end-to-end ONNX export, on image files ->
annotated pictures and COCO-format ``detections.json`` (:func:`detector.deploy.inference.predict_images`,
a loop over :class:`detector.deploy.api.Detector` or :class:`detector.deploy.onnx_detector.OnnxDetector`).
With ``--onnx`` nothing imports torch."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from detector.cli import Parser

__all__ = ["main"]

DESCRIPTION = """Detect objects in image files with a trained checkpoint (the detector, or any stepping stone)
or an ONNX model exported with detector export --with-nms (run by onnxruntime, without torch).

  detector predict --checkpoint runs/shapes/v1/checkpoints/best.ckpt --images photos/ --out out/photos
  detector predict --onnx model.onnx --images "photos/*.jpg" --out out/photos --score 0.3

Writes one annotated PNG per image, at the image's own resolution, and detections.json: COCO
results (image_id, file_name, category_id = class index + 1, category_name, bbox = [x, y, w, h] in
the original image's pixels, score). A file that cannot be read is reported by name and skipped;
the exit status is 1 only when no image at all could be read."""


def main(argv: Sequence[str]) -> int:
    parser = Parser(prog="detector predict", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    model = parser.add_mutually_exclusive_group(required=True)
    model.add_argument("--checkpoint", help="a .ckpt written by detector train (any task)")
    model.add_argument("--onnx", help="a .onnx written by detector export --with-nms")
    parser.add_argument("--images", required=True, help="a folder, an image file, or a glob pattern (quote it)")
    parser.add_argument("--out", required=True, help="folder for the annotated PNGs and detections.json")
    parser.add_argument(
        "--score", type=float, default=None,
        help="keep predictions scoring above this (default: the detector's picture threshold, 0.25 in the "
        "lesson; the multi-label classifier's threshold, 0.4; no threshold for the other tasks)",
    )
    parser.add_argument(
        "--flip-tta", action=argparse.BooleanOptionalAction, default=None,
        help="the SSD's flip test-time augmentation (default: the checkpoint's setting; an ONNX model's is fixed at export)",
    )
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, ... or auto (a GPU when there is one)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--workers", type=int, default=0, help="processes decoding images (with --checkpoint)")
    parser.add_argument("--no-pictures", action="store_true", help="write detections.json only")
    args = parser.parse_args(argv)

    from detector.deploy.inference import find_images, predict_images
    from detector.errors import ConfigError, MissingFileError

    paths = find_images(args.images)
    if not paths:
        raise MissingFileError(f"--images {args.images!r}: no image files found there")
    if args.onnx:
        from detector.deploy.onnx_detector import OnnxDetector

        detector = OnnxDetector(args.onnx)
        if args.flip_tta is not None and args.flip_tta != detector.flip_tta:
            state = "with" if detector.flip_tta else "without"
            raise ConfigError(f"--onnx {args.onnx} was exported {state} flip TTA; export it again to change that")
        options = {}
    else:
        from detector.deploy.api import Detector

        detector = Detector.from_checkpoint(args.checkpoint, args.device)
        options = {"flip_tta": args.flip_tta, "workers": args.workers}
    report = predict_images(detector, paths, args.out, args.score, args.batch_size, pictures=not args.no_pictures, **options)
    print(report.summary())
    print(f"wrote {Path(args.out) / 'detections.json'} and {len(report.pictures)} pictures")
    return 0 if report.images else 1
