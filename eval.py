"""Evaluate a checkpoint on a split: the mAP table, ``metrics.json`` and COCO-format detections.

    python eval.py --checkpoint runs/shapes/checkpoints/best.ckpt --split val --out runs/shapes/eval
    python eval.py --checkpoint CKPT --data configs/lesson9_ssd.yaml --split test --out out/voc_test
    python eval.py --checkpoint CKPT --json my_test.json --image-dir my_images --out out/mine
    python eval.py --checkpoint CKPT --out out/nms05 --nms-iou 0.5 --score-threshold 0.001
    python eval.py --checkpoint CKPT --out out/no_tta --no-flip-tta

The data comes from the checkpoint (the data module it was trained with), from another config's
``data:`` section (``--data``), or from any COCO-format JSON + image folder (``--json``,
``--image-dir``). Images are only resized (no augmentation), exactly as in validation. A checkpoint
that cannot be read, that holds another task than the detector, or whose classes differ from the
data's, stops it with a message naming the file. Under the data's ``on_bad_record: skip``, images
that cannot be read are left out and listed in ``metrics.json`` (``skipped_images``).

Writes ``OUT/metrics.json`` (``map``, ``map_50``, ``map_75``, ``voc07_map_50``, ``voc_map_50``,
``per_class``: {class: {ap, ap_50, ap_75, voc07_ap_50, voc_ap_50, objects}}, plus the split and
checkpoint, and the post-processing used: ``postprocess``) and ``OUT/detections.json``: COCO results (``image_id``, ``category_id`` = the JSON's
id, ``bbox`` = ``[x, y, w, h]`` in original-image pixels, ``score``), which pycocotools'
``COCO.loadRes`` reads directly.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
import yaml
from tqdm import tqdm

from detector.boxes import xyxy_to_xywh
from detector.checks import CheckpointError, read_checkpoint
from detector.data.datamodule import DetectionDataModule
from detector.metrics import DetectionMetrics
from detector.module import CheckpointMismatchError, DetectorModule
from detector.postprocess import to_pixels

SPLITS = ("train", "val", "test")


def _data_args(args: argparse.Namespace, checkpoint: dict[str, Any], model: DetectorModule) -> dict[str, Any]:
    """The DataModule's arguments: the checkpoint's, overridden by ``--data`` or ``--json``."""
    data = dict(checkpoint.get("datamodule_hyper_parameters") or {})
    data.pop("_instantiator", None)
    if args.data:
        config = yaml.safe_load(Path(args.data).read_text())
        section = config.get("data", config)
        data.update(section.get("init_args", section))
    if args.json:
        data.update({f"{s}_json": None for s in SPLITS})
        data[f"{args.split}_json"] = args.json
    if args.image_dir:
        data["image_dir"] = args.image_dir
    if not data.get("image_dir"):
        raise SystemExit("eval.py: no data: the checkpoint has none; give --data CONFIG or --json + --image-dir")
    # What the network was trained with, whatever the data config says.
    backbone = model.model.backbone
    data.update(image_size=model.hparams.image_size, mean=tuple(backbone.mean), std=tuple(backbone.std))
    data.update(num_workers=args.workers, batch_size=args.batch_size, generate=None)
    return data


@torch.no_grad()
def evaluate(
    model: DetectorModule, dm: DetectionDataModule, split: str, device: torch.device
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Run ``model`` over ``split``; return (metrics.json content, COCO results)."""
    dm.setup({"val": "validate", "test": "test"}.get(split, "fit"))
    loaded = dm.splits[split]
    loader = dm._loader(split, "none", train=False)
    metric = DetectionMetrics(model.hparams.num_classes).to(device)
    results: list[dict[str, Any]] = []
    skipped: list[int] = []
    model.eval().to(device)
    for batch in tqdm(loader, desc=f"eval {split}", file=sys.stderr):
        skipped += batch["skipped_ids"].tolist()
        if not len(batch["images"]):  # every image of the batch was skipped as unreadable
            continue
        batch = {k: v.to(device) for k, v in batch.items()}
        dets = to_pixels(model.detect(batch["images"]), batch["sizes"])
        metric.update(dets, model._targets_in_pixels(batch))
        for image_id, det in zip(batch["image_ids"].tolist(), dets):
            for box, score, label in zip(xyxy_to_xywh(det["boxes"]).tolist(), det["scores"].tolist(), det["labels"].tolist()):
                results.append(
                    {
                        "image_id": image_id,
                        "category_id": loaded.category_ids[label],
                        "bbox": [round(v, 2) for v in box],
                        "score": round(score, 5),
                    }
                )
    r = metric.compute()
    pc = r["per_class"]

    def num(x: Any) -> float | None:
        x = float(x)
        return None if math.isnan(x) else x

    metrics = {key: num(r[key]) for key in ("map", "map_50", "map_75", "voc07_map_50", "voc_map_50")}
    metrics["per_class"] = {
        name: {
            "ap": num(pc["map"][i]),
            "ap_50": num(pc["map_50"][i]),
            "ap_75": num(pc["map_75"][i]),
            "voc07_ap_50": num(pc["voc07_map_50"][i]),
            "voc_ap_50": num(pc["voc_map_50"][i]),
            "objects": int(pc["num_positives"][i]),
        }
        for i, name in enumerate(model.class_names)
    }
    metrics.update(split=split, json=str(loaded.json_path), images=len(loaded.records) - len(skipped), skipped_images=skipped)
    return metrics, results


def load_detector(path: str) -> tuple[dict[str, Any], DetectorModule]:
    """(the checkpoint's contents, the DetectorModule it holds, on the CPU); SystemExit naming the
    file when it cannot be read or does not hold a detector."""
    try:
        checkpoint = read_checkpoint(path)
    except CheckpointError as e:
        raise SystemExit(f"eval.py: {e}") from None
    task = checkpoint.get("task_class")  # written by the stepping-stone tasks (detector.tasks)
    if task is not None and not task.endswith(".DetectorModule"):
        raise SystemExit(f"eval.py: {path} holds a {task}, not a detector: evaluate it with train.py validate --ckpt_path")
    try:
        model = DetectorModule.load_from_checkpoint(path, map_location="cpu", weights="none")
    except CheckpointMismatchError as e:
        raise SystemExit(f"eval.py: {path} does not hold a DetectorModule of this code's version: {e}") from None
    return checkpoint, model


def format_table(metrics: dict[str, Any]) -> str:
    """The summary and per-class AP as a markdown table."""

    def f(x: float | None) -> str:
        return "  n/a" if x is None else f"{x:.3f}"

    skipped = f", {len(metrics['skipped_images'])} skipped as unreadable" if metrics.get("skipped_images") else ""
    lines = [
        f"{metrics['split']}: {metrics['images']} images ({metrics['json']}){skipped}",
        "",
        "| metric | value |",
        "|---|---|",
        f"| COCO mAP@[.5:.95] | {f(metrics['map'])} |",
        f"| mAP@0.5 | {f(metrics['map_50'])} |",
        f"| mAP@0.75 | {f(metrics['map_75'])} |",
        f"| VOC07 11-point mAP@0.5 | {f(metrics['voc07_map_50'])} |",
        f"| VOC all-point mAP@0.5 | {f(metrics['voc_map_50'])} |",
        "",
        "| class | objects | AP | AP@0.5 | AP@0.75 | VOC07 AP@0.5 |",
        "|---|---|---|---|---|---|",
    ]
    for name, c in metrics["per_class"].items():
        lines.append(f"| {name} | {c['objects']} | {f(c['ap'])} | {f(c['ap_50'])} | {f(c['ap_75'])} | {f(c['voc07_ap_50'])} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="a .ckpt written by train.py")
    parser.add_argument("--split", default="val", choices=SPLITS)
    parser.add_argument("--data", help="a YAML whose data: section replaces the checkpoint's")
    parser.add_argument("--json", help="a COCO-format JSON to evaluate on (as --split)")
    parser.add_argument("--image-dir", help="the folder the JSON's file_names resolve against")
    parser.add_argument("--out", required=True, help="folder for metrics.json and detections.json")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, ... or auto")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--nms-iou", type=float, help="NMS IoU threshold instead of the checkpoint's (lesson: 0.4)")
    parser.add_argument("--score-threshold", type=float, help="drop detections scoring below this (default: the checkpoint's)")
    parser.add_argument(
        "--flip-tta", action=argparse.BooleanOptionalAction,
        help="test-time augmentation: average each image's and its mirror image's predictions (default: the checkpoint's)",
    )
    args = parser.parse_args(argv)

    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device)
    checkpoint, model = load_detector(args.checkpoint)
    for flag, field, value in (("--nms-iou", "iou_threshold", args.nms_iou), ("--score-threshold", "score_threshold", args.score_threshold)):
        if value is not None:
            if not 0.0 <= value <= 1.0:
                raise SystemExit(f"eval.py: {flag} must be in [0, 1]; got {value}")
            setattr(model.post_cfg, field, value)
    if args.flip_tta is not None:
        model.post_cfg.flip_tta = args.flip_tta
    dm = DetectionDataModule(**_data_args(args, checkpoint, model))
    if dm.class_names != model.class_names:
        raise SystemExit(f"eval.py: the data's classes {dm.class_names} differ from the checkpoint's {model.class_names}")
    metrics, results = evaluate(model, dm, args.split, device)
    metrics["checkpoint"] = str(args.checkpoint)
    metrics["postprocess"] = asdict(model.post_cfg)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    (out / "detections.json").write_text(json.dumps(results) + "\n")
    print(format_table(metrics))
    print(f"\nwrote {out / 'metrics.json'} and {out / 'detections.json'} ({len(results)} detections)")
    return metrics


if __name__ == "__main__":
    main()
