"""Look at a config before training it: its anchors, how they match the data's objects, and the
augmented batches the network will be trained on; and after training, what a checkpoint predicts.

    python -m detector.inspect anchors --config configs/debug.yaml --out runs/inspect/debug
    python -m detector.inspect matches --config configs/shapes.yaml --out runs/inspect/shapes [--images 8]
    python -m detector.inspect batch   --config configs/shapes.yaml --out runs/inspect/shapes [--batches 2]
    python -m detector.inspect predictions --config configs/shapes.yaml --checkpoint runs/shapes/checkpoints/best.ckpt \
        --out runs/inspect/shapes [--images 8] [--score 0.25]

``--palette 256`` writes 256-colour PNGs (about 3x smaller: for pictures kept in ``docs/``).

``anchors``  writes ``anchors.png`` (:func:`detector.visualize.anchor_figure`): one panel per grid,
             the ``k`` anchors of a few cells (``--image`` draws them on a picture squashed to S).
``matches``  writes ``matches.png`` (:func:`detector.visualize.match_grid`) for the first
             ``--images`` training images, resized as in validation (squashed to S x S), and
             ``matches.txt``: over the WHOLE training split, positive anchors per object, the
             objects that only their one forced anchor covers (their best IoU with any anchor is
             at most the loss's ``iou_threshold``: the anchors fit them badly) and those left with
             no positive anchor at all, overall and per class (:func:`match_statistics`).
             Matching needs no pixels, so this reads only the JSON.
``batch``    writes ``batch_0.png``, ... : the first ``--images`` images of the first ``--batches``
             training batches, augmented exactly as in training (epoch 0), with their boxes.
``predictions`` (needs ``--checkpoint``) writes, for the first ``--images`` validation images (the
             training split when the config has none), ``raw_predictions.png``
             (:func:`detector.visualize.raw_prediction_grid`: the 10 best-scoring anchors' boxes
             before NMS) and ``detections.png`` (:func:`detector.visualize.detection_grid`: after
             NMS, scores above ``--score`` (default: the checkpoint's picture threshold), ground
             truth dashed). The checkpoint's image size and normalisation are used, as in evaluation.

The config is a ``train.py`` YAML. Its ``model:`` section gives the anchors (``anchors``), the input
size (``image_size``), the backbone (whose mean / std normalise the data, as ``train.py`` links
them) and the matching threshold (``loss.iou_threshold``); its ``data:`` section builds the
:class:`~detector.data.datamodule.DetectionDataModule`, generating the shapes data on first use as
training would (``generate:``). Relative paths resolve against the current directory, as in
``train.py``. Defaults for absent keys are :class:`~detector.module.DetectorModule`'s.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import yaml

from detector.anchors import Anchors, make_anchors
from detector.boxes import batched_box_iou
from detector.data.datamodule import DetectionDataModule, DetectionDataset, collate_detections
from detector.data.image import load_image
from detector.data.records import LoadedSplit
from detector.data.transforms import DetectionTransform
from detector.inference import load_detector
from detector.matching import match
from detector.model import backbone_stats
from detector.module import AnchorConfig, LossConfig
from detector.visualize import (
    anchor_figure,
    denormalize,
    detection_grid,
    ground_truth_grid,
    match_grid,
    raw_prediction_grid,
    save_figure,
)

__all__ = [
    "InspectConfig",
    "inspect_anchors",
    "inspect_batches",
    "inspect_matches",
    "inspect_predictions",
    "load_config",
    "main",
    "match_statistics",
]


def _section(config: dict[str, Any], name: str) -> dict[str, Any]:
    """A YAML section as plain init arguments (``class_path`` / ``init_args`` form unwrapped)."""
    section = config.get(name) or {}
    return dict(section.get("init_args", section)) if isinstance(section, dict) else {}


@dataclass
class InspectConfig:
    """What the inspector reads from a ``train.py`` config.

    Attributes:
        anchors: the model's anchors (``make_anchors`` of ``model.anchors``).
        image_size: S, the network's input side.
        iou_threshold: the loss's matching threshold.
        data: the ``DetectionDataModule`` arguments, with ``image_size`` / ``mean`` / ``std`` linked
            from the model as ``train.py`` links them.
        path: the config file.
    """

    anchors: Anchors
    image_size: int
    iou_threshold: float
    data: dict[str, Any]
    path: Path

    def datamodule(self) -> DetectionDataModule:
        """The config's data module, its data generated if the config says so (``prepare_data``)."""
        dm = DetectionDataModule(**self.data)
        dm.prepare_data()
        return dm


def load_config(path: str | Path) -> InspectConfig:
    """Read the ``model:`` and ``data:`` sections of a ``train.py`` YAML (see the module docstring)."""
    path = Path(path)
    config = yaml.safe_load(path.read_text()) or {}
    if not isinstance(config, dict):
        raise ValueError(f"{path}: expected a YAML mapping with model: and data: sections")
    model = _section(config, "model")
    known = {f.name for f in fields(AnchorConfig)}
    anchor_args = model.get("anchors") or {}
    if set(anchor_args) - known:
        raise ValueError(f"{path}: model.anchors has unknown keys {sorted(set(anchor_args) - known)}; known: {sorted(known)}")
    anchor_cfg = AnchorConfig(**anchor_args)
    image_size = int(model.get("image_size", 224))
    mean, std = backbone_stats(model.get("backbone", "resnet34"))
    data = _section(config, "data")
    data.update(image_size=image_size, mean=tuple(mean), std=tuple(std))
    return InspectConfig(
        anchors=make_anchors(anchor_cfg.grids, anchor_cfg.zooms, anchor_cfg.ratios),
        image_size=image_size,
        iou_threshold=float((model.get("loss") or {}).get("iou_threshold", LossConfig.iou_threshold)),
        data=data,
        path=path,
    )


@torch.no_grad()
def match_statistics(
    split: LoadedSplit, anchors: Anchors, iou_threshold: float, chunk: int = 256
) -> dict[str, Any]:
    """How the anchors match every object of ``split``, images squashed to a square as the network
    sees them (so a box's ``[0, 1]`` coordinates are its pixels divided by the image's size).

    Returns:
        ``objects``; ``positives_per_object`` (mean, min, max positive anchors per object);
        ``best_iou``: the mean over objects of their best IoU with any anchor; ``forced_only``:
        objects whose best IoU with any anchor is ``<= iou_threshold``, so only the anchor forced
        to them is positive; ``unmatched``: objects with no positive anchor at all (their best
        anchor went to a later object, as the lesson's rule has it, and no anchor passes the
        threshold); ``per_class``: ``{name: (objects, forced_only, unmatched)}``.
    """
    positives: list[torch.Tensor] = []
    best_iou: list[torch.Tensor] = []
    labels_all: list[torch.Tensor] = []
    records = [r for r in split.records if len(r.boxes)]
    for start in range(0, len(records), chunk):
        batch = records[start : start + chunk]
        M = max(len(r.boxes) for r in batch)
        boxes = torch.zeros(len(batch), M, 4)  # (B, M, 4) in [0, 1]
        labels = torch.full((len(batch), M), -1, dtype=torch.int64)  # (B, M)
        for i, r in enumerate(batch):
            scale = np.array([r.width, r.height, r.width, r.height], dtype=np.float32)
            boxes[i, : len(r.boxes)] = torch.tensor(r.boxes / scale)
            labels[i, : len(r.boxes)] = torch.tensor(r.labels)  # a copy: records hold read-only arrays
        m = match(anchors, boxes, labels, iou_threshold)
        real = labels >= 0  # (B, M)
        owned = torch.nn.functional.one_hot(m.matched_idx, M).bool() & m.positive[:, :, None]  # (B, A, M)
        positives.append(owned.sum(dim=1)[real])  # (N,) positive anchors per object
        best_iou.append(batched_box_iou(boxes, anchors.xyxy).amax(dim=2)[real])  # (N,)
        labels_all.append(labels[real])
    if not positives:
        return {"objects": 0, "positives_per_object": (0.0, 0, 0), "best_iou": float("nan"), "forced_only": 0,
                "unmatched": 0, "per_class": {}}
    count, iou, labels = torch.cat(positives), torch.cat(best_iou), torch.cat(labels_all)  # (N,) each
    only, none = (iou <= iou_threshold) & (count > 0), count == 0  # (N,) each
    per_class = {
        name: (int((labels == c).sum()), int((only & (labels == c)).sum()), int((none & (labels == c)).sum()))
        for c, name in enumerate(split.class_names)
    }
    return {
        "objects": len(count),
        "positives_per_object": (float(count.float().mean()), int(count.min()), int(count.max())),
        "best_iou": float(iou.mean()),
        "forced_only": int(only.sum()),
        "unmatched": int(none.sum()),
        "per_class": per_class,
    }


def _format_statistics(stats: dict[str, Any], cfg: InspectConfig, split: LoadedSplit) -> str:
    n = stats["objects"]
    mean, low, high = stats["positives_per_object"]

    def pct(part: int, whole: int) -> str:
        return f"{100 * part / whole:.1f} %" if whole else "n/a"

    lines = [
        f"{cfg.path}: {len(cfg.anchors)} anchors (grids {list(cfg.anchors.grids)}, k = {cfg.anchors.k}), "
        f"IoU threshold {cfg.iou_threshold}, {split.json_path}",
        f"objects: {n}; positive anchors per object: mean {mean:.2f}, min {low}, max {high}; "
        f"best anchor IoU per object: mean {stats['best_iou']:.3f}",
        f"objects covered only by their forced anchor (best IoU <= {cfg.iou_threshold}): "
        f"{stats['forced_only']} ({pct(stats['forced_only'], n)})",
        f"objects with no positive anchor (their best anchor went to another object): "
        f"{stats['unmatched']} ({pct(stats['unmatched'], n)})",
        "",
        "| class | objects | forced only | no anchor |",
        "|---|---|---|---|",
    ]
    lines += [f"| {name} | {c} | {f} ({pct(f, c)}) | {u} ({pct(u, c)}) |" for name, (c, f, u) in stats["per_class"].items()]
    return "\n".join(lines)


def inspect_anchors(cfg: InspectConfig, out: Path, image: str | None = None, palette: int | None = None) -> list[Path]:
    """``out/anchors.png``; ``image``: a picture file to draw them on, squashed to S x S.

    ``palette`` (here and below): see :func:`detector.visualize.save_figure`.
    """
    background = None
    if image is not None:
        transform = DetectionTransform("none", cfg.image_size, mean=(0, 0, 0), std=(1, 1, 1))
        pixels = transform(load_image(image), np.zeros((0, 4), np.float32)).image  # (3, S, S) in [0, 1]
        background = denormalize(pixels[None], (0, 0, 0), (1, 1, 1))[0]
    fig = anchor_figure(cfg.anchors, cfg.image_size, image=background)
    return [save_figure(fig, out / "anchors.png", dpi=100, palette=palette)]


def inspect_matches(cfg: InspectConfig, out: Path, images: int = 8, palette: int | None = None) -> list[Path]:
    """``out/matches.png`` (the first ``images`` training images) and ``out/matches.txt`` (the whole split)."""
    dm = cfg.datamodule()
    dm.setup("fit")
    split = dm.splits["train"]
    stats = _format_statistics(match_statistics(split, cfg.anchors, cfg.iou_threshold), cfg, split)
    print(stats)
    dataset = DetectionDataset(split, DetectionTransform("none", cfg.image_size, cfg.data["mean"], cfg.data["std"]))
    samples = [dataset[i] for i in range(min(images, len(dataset)))]
    pictures = denormalize(torch.stack([s["image"] for s in samples]), cfg.data["mean"], cfg.data["std"])
    S = cfg.image_size
    targets = [{"boxes": s["boxes"] * S, "labels": s["labels"]} for s in samples]
    titles = [f"id {s['image_id']}" for s in samples]
    fig = match_grid(list(pictures), targets, cfg.anchors, dm.class_names, cfg.iou_threshold, titles=titles)
    (out / "matches.txt").write_text(stats + "\n")
    return [save_figure(fig, out / "matches.png", dpi=90, palette=palette), out / "matches.txt"]


def inspect_batches(
    cfg: InspectConfig, out: Path, batches: int = 1, images: int = 8, palette: int | None = None
) -> list[Path]:
    """``out/batch_{i}.png``: the first ``images`` images of each of the first ``batches`` train batches."""
    dm = cfg.datamodule()
    dm.setup("fit")
    mean, std, S = cfg.data["mean"], cfg.data["std"], cfg.image_size
    written = []
    for i, batch in zip(range(batches), dm.train_dataloader()):
        n = min(images, batch["images"].shape[0])
        pictures = denormalize(batch["images"][:n], mean, std)
        real = batch["labels"][:n] >= 0  # (n, M)
        targets = [
            {"boxes": batch["boxes"][j][real[j]] * S, "labels": batch["labels"][j][real[j]],
             "difficult": batch["difficult"][j][real[j]]}
            for j in range(n)
        ]
        titles = [f"id {int(t)}" for t in batch["image_ids"][:n]]
        fig = ground_truth_grid(list(pictures), targets, dm.class_names, titles=titles)
        fig.suptitle(f"train batch {i} ({dm.hparams.train_augment} augmentation, epoch 0)", fontsize=10)
        fig.tight_layout(rect=(0, 0, 1, 0.97))
        written.append(save_figure(fig, out / f"batch_{i}.png", dpi=90, palette=palette))
    return written


@torch.no_grad()
def inspect_predictions(
    cfg: InspectConfig,
    out: Path,
    checkpoint: str | Path,
    images: int = 8,
    score: float | None = None,
    palette: int | None = None,
) -> list[Path]:
    """``out/raw_predictions.png`` and ``out/detections.png`` of ``checkpoint`` on the first
    ``images`` validation images (training images when the config has no ``val_json``)."""
    model = load_detector(checkpoint, "cpu")
    backbone = model.model.backbone
    cfg.data.update(image_size=model.hparams.image_size, mean=tuple(backbone.mean), std=tuple(backbone.std))
    dm = cfg.datamodule()
    name = "val" if dm.jsons["val"] else "train"
    dm.setup("validate" if name == "val" else "fit")
    split = dm.splits[name]
    if split.class_names != model.class_names:
        raise ValueError(f"{split.json_path}: classes {split.class_names} differ from {checkpoint}'s {model.class_names}")
    S = model.hparams.image_size
    dataset = DetectionDataset(split, DetectionTransform("none", S, backbone.mean, backbone.std))
    n = min(images, len(dataset))
    batch = collate_detections([dataset[i] for i in range(n)])
    records = split.records[:n]
    pictures = [load_image(r.path) for r in records]  # drawn on the originals, boxes stretched back
    targets = [{"boxes": r.boxes, "labels": r.labels} for r in records]
    titles = [r.path.name for r in records]
    cls_logits, box_deltas = model(batch["images"])
    raw = raw_prediction_grid(
        pictures, cls_logits, box_deltas, model.anchors, model.coder, model.class_names, top=10, titles=titles
    )
    raw.suptitle(f"{name}: the 10 best-scoring anchors' boxes, before NMS", fontsize=10)
    raw.tight_layout(rect=(0, 0, 1, 0.97))
    threshold = model.post_cfg.picture_score_threshold if score is None else score
    dets = model.detect(batch["images"], score_threshold=threshold)
    preds = [
        {**d, "boxes": d["boxes"] * torch.tensor([r.width, r.height, r.width, r.height], dtype=torch.float32)}
        for d, r in zip(dets, records)
    ]
    fig = detection_grid(pictures, preds, targets, model.class_names, titles=titles)
    fig.suptitle(f"{name}: detections scoring above {threshold:g} (solid) and ground truth (dashed)", fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    return [
        save_figure(raw, out / "raw_predictions.png", dpi=90, palette=palette),
        save_figure(fig, out / "detections.png", dpi=90, palette=palette),
    ]


def main(argv: Sequence[str] | None = None) -> list[Path]:
    parser = argparse.ArgumentParser(
        prog="python -m detector.inspect", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("what", choices=("anchors", "matches", "batch", "predictions"))
    parser.add_argument("--config", required=True, help="a train.py YAML")
    parser.add_argument("--out", required=True, help="folder for the pictures")
    parser.add_argument("--images", type=int, default=8, help="images per picture (matches, batch)")
    parser.add_argument("--batches", type=int, default=1, help="training batches to draw (batch)")
    parser.add_argument("--image", help="anchors: draw them on this picture, squashed to the input size")
    parser.add_argument("--checkpoint", help="predictions: a .ckpt written by train.py")
    parser.add_argument("--score", type=float, help="predictions: the score threshold (default: the checkpoint's)")
    parser.add_argument("--palette", type=int, help="reduce the PNGs to this many colours (e.g. 256, for the docs)")
    args = parser.parse_args(argv)
    if args.what == "predictions" and not args.checkpoint:
        parser.error("predictions needs --checkpoint")

    cfg = load_config(args.config)
    cfg.data.update(num_workers=0, persistent_workers=False)  # a few batches: no worker start-up
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.what == "anchors":
        written = inspect_anchors(cfg, out, args.image, args.palette)
    elif args.what == "matches":
        written = inspect_matches(cfg, out, args.images, args.palette)
    elif args.what == "batch":
        written = inspect_batches(cfg, out, args.batches, args.images, args.palette)
    else:
        written = inspect_predictions(cfg, out, args.checkpoint, args.images, args.score, args.palette)
    for path in written:
        print(f"wrote {path}", file=sys.stderr)
    return written


if __name__ == "__main__":
    main()
