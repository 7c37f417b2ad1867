"""``detector eval``: a checkpoint over a split -> the mAP table, ``metrics.json`` and COCO-format
``detections.json`` (:mod:`detector.evaluation.evaluator`)."""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from detector.cli import Parser
from detector.defaults import SPLITS

__all__ = ["main"]

DESCRIPTION = """Evaluate a checkpoint on a split: print the mAP table, write metrics.json and detections.json.

  detector eval --run shapes --split val             (the newest run named shapes: its best.ckpt)
  detector eval --checkpoint runs/shapes/v2/checkpoints/best.ckpt --split test
  detector eval --checkpoint CKPT --data configs/lesson9_ssd.yaml --split test --out out/voc_test
  detector eval --checkpoint CKPT --json my_test.json --image-dir my_images --out out/mine

The data comes from the checkpoint (the data it was trained with), from another config's data
section (--data), or from any COCO-format JSON and image folder (--json, --image-dir). Images are
only resized, exactly as in validation. The results go to the run's results/SPLIT folder (or
--out): metrics.json with COCO mAP, mAP@0.5, mAP@0.75, the VOC APs and per-class APs, and
detections.json, the COCO results in original-image pixels, which pycocotools reads.

Why a number is what it is: errors_per_image.csv (per image TP, FP, FN at IoU 0.5 and score
>= 0.25, the worst first), worst_images.png (those images, TP / FP / FN in three colours) and
errors.png (TIDE's breakdown: the AP@0.5 each kind of error costs; the numbers in metrics.json
under "errors"; its one line printed below the table)."""


def _data_args(args: argparse.Namespace, checkpoint: dict[str, Any], model: Any) -> dict[str, Any]:
    """The data module's arguments: the checkpoint's, overridden by ``--data`` or ``--json``; the
    image size and normalisation always the checkpoint's network's."""
    from detector.defaults import SPLITS
    from detector.errors import ConfigError
    from detector.training.config import read_config

    data = dict(checkpoint.get("datamodule_hyper_parameters") or {})
    data.pop("_instantiator", None)
    if args.data:
        data.update(read_config(args.data).data.as_dict())
    if args.json:
        data.update({f"{s}_json": None for s in SPLITS})
        data[f"{args.split}_json"] = args.json
    if args.image_dir:
        data["image_dir"] = args.image_dir
    if not data.get("image_dir"):
        raise ConfigError("no data: the checkpoint has none; give --data CONFIG, or --json and --image-dir")
    backbone = model.model.backbone
    data.update(image_size=model.image_size, mean=tuple(backbone.mean), std=tuple(backbone.std))
    data.update(num_workers=args.workers, batch_size=args.batch_size, generate=None)
    return data


def main(argv: Sequence[str]) -> int:
    parser = Parser(prog="detector eval", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", help="a .ckpt written by detector train (or give --run)")
    parser.add_argument("--run", help="a run's name (its newest version with the checkpoint) or NAME/vN: its best.ckpt")
    parser.add_argument("--runs", default="runs", help="the folder of the runs (default: runs)")
    parser.add_argument("--which", default="best", choices=("best", "last"), help="with --run: which checkpoint")
    parser.add_argument("--split", default="val", choices=SPLITS)
    parser.add_argument("--data", help="a config whose data section replaces the checkpoint's")
    parser.add_argument("--json", help="a COCO-format JSON to evaluate on (as --split)")
    parser.add_argument("--image-dir", help="the folder the JSON's file names resolve against")
    parser.add_argument(
        "--out", help="folder for the results (default: the run's results/SPLIT folder)"
    )
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, ... or auto (a GPU when there is one)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=1, help="processes decoding images")
    parser.add_argument("--nms-iou", type=float, help="NMS IoU threshold instead of the checkpoint's (the lesson's: 0.4)")
    parser.add_argument("--score-threshold", type=float, help="drop detections scoring below this (default: the checkpoint's)")
    parser.add_argument(
        "--flip-tta", action=argparse.BooleanOptionalAction,
        help="test-time augmentation: average each image's and its mirror image's predictions (default: the checkpoint's)",
    )
    args = parser.parse_args(argv)
    if (args.checkpoint is None) == (args.run is None):
        parser.error("give --checkpoint FILE or --run NAME, one of them")
    for flag, value in (("--nms-iou", args.nms_iou), ("--score-threshold", args.score_threshold)):
        if value is not None and not 0.0 <= value <= 1.0:
            parser.error(f"{flag} must be in [0, 1]; got {value}")

    from detector.data.datamodule import DetectionDataModule
    from detector.data.image import load_image
    from detector.deploy.loading import load_detector, resolve_device
    from detector.errors import ConfigError
    from detector.evaluation.errors import analyse_errors
    from detector.evaluation.evaluator import evaluate, format_table
    from detector.evaluation.results import SplitImages, predictions_figure, write_results
    from detector.training.checkpoints import read_checkpoint
    from detector.training.runs import find_run, run_of_checkpoint

    device = resolve_device(args.device)
    if args.run is not None:
        name, _, version = args.run.partition("/v")
        run = find_run(args.runs, name, f"{args.which}.ckpt", int(version) if version.isdigit() else None)
        args.checkpoint = str(run.checkpoints / f"{args.which}.ckpt")
    if args.out is None:
        folder = run_of_checkpoint(Path(args.checkpoint))
        if folder is None:
            parser.error(f"--out is needed: {args.checkpoint} lies in no run folder")
        args.out = str(folder.path / "results" / args.split)
    model = load_detector(args.checkpoint)
    if args.nms_iou is not None:
        model.post_cfg.iou_threshold = args.nms_iou
    if args.score_threshold is not None:
        model.post_cfg.score_threshold = args.score_threshold
    if args.flip_tta is not None:
        model.post_cfg.flip_tta = args.flip_tta
    dm = DetectionDataModule(**_data_args(args, read_checkpoint(args.checkpoint), model))
    if dm.class_names != model.class_names:
        raise ConfigError(f"the data's classes {dm.class_names} differ from the checkpoint's {model.class_names}")
    found = evaluate(model, dm, args.split, device)
    metrics = found.summary
    metrics["checkpoint"] = str(args.checkpoint)
    metrics["postprocess"] = asdict(model.post_cfg)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "detections.json").write_text(json.dumps(found.coco) + "\n")
    threshold = model.post_cfg.picture_score_threshold  # what predictions.png draws and the errors count
    images = SplitImages.of(found.image_ids, dm.splits[args.split].records, dm.hparams.image_dir)
    shown = [load_image(path) for path in images.paths[:8]]
    picture = predictions_figure(shown, found.detections, found.ground_truths, model.class_names, threshold)
    log = run_of_checkpoint(Path(args.checkpoint))
    log = log.path / "csv" / "metrics.csv" if log is not None else None
    errors = analyse_errors(found.detections, found.ground_truths, model.num_classes)
    written = write_results(
        out, found.detections, found.ground_truths, model.class_names, metrics, log, picture, images, errors, threshold
    )
    print(format_table(metrics))
    at = metrics["errors"]["at_score_threshold"]
    print(f"\n{errors.summary_line()}")
    print(
        f"at score >= {threshold:g}, IoU {errors.iou:g}: {at['tp']} TP, {at['fp']} FP "
        f"({', '.join(f'{k} {at[k]}' for k in ('cls', 'loc', 'both', 'dupe', 'bkg'))}), {at['fn']} FN: "
        "errors_per_image.csv, worst_images.png"
    )
    print(f"\nwrote {len(written) + 1} files to {out}: " + ", ".join(p.name for p in written) + f", detections.json ({len(found.coco)} detections)")
    return 0
