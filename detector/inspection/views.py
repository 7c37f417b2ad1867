"""Looking at a config before training it (its anchors, how they match the data's objects, the
augmented batches the network will see) and, after training, at what a checkpoint predicts: what
``detector inspect`` draws. Every picture is drawn by :mod:`detector.pictures`; the config is read
by :func:`detector.training.config.read_config`, with ``detector train``'s links."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from detector.autoanchor.choice import resolve_auto_anchors
from detector.autoanchor.coverage import format_statistics, match_statistics
from detector.core.anchors import AnchorConfig, Anchors
from detector.core.loss import LossConfig
from detector.core.matching import Matching
from detector.data.datamodule import DetectionDataModule
from detector.data.dataset import DetectionDataset, collate_detections
from detector.data.image import load_image
from detector.data.transforms import DetectionTransform
from detector.defaults import ATSS_TOPK
from detector.deploy.loading import load_detector
from detector.errors import ConfigError
from detector.pictures import (
    anchor_figure,
    box_comparison_figure,
    denormalize,
    detection_grid,
    ground_truth_grid,
    match_grid,
    raw_prediction_grid,
    save_figure,
)
from detector.training.config import read_config

__all__ = [
    "InspectConfig",
    "inspect_anchors",
    "inspect_batches",
    "inspect_compare_boxes",
    "inspect_matches",
    "inspect_predictions",
    "load_config",
]

@dataclass
class InspectConfig:
    """What the inspector reads from a training config.

    Attributes:
        anchors: the model's anchors (``model.init_args.anchors``; the lesson's when absent).
        image_size: S, the network's input side.
        iou_threshold: the loss's matching threshold.
        data: the ``DetectionDataModule`` arguments, linked to the model as in training.
        path: the config file.
        matching, atss_topk: the loss's matching rule (``"fixed"`` or ``"atss"``) and ATSS's candidates.
    """

    anchors: Anchors
    image_size: int
    iou_threshold: float
    data: dict[str, Any]
    path: Path
    matching: Matching = "fixed"
    atss_topk: int = ATSS_TOPK

    def datamodule(self) -> DetectionDataModule:
        """The config's data module, its data generated if the config says so (``prepare_data``)."""
        dm = DetectionDataModule(**self.data)
        dm.prepare_data()
        return dm


def load_config(path: str | Path) -> InspectConfig:
    """The parts of a training config the inspector needs (:func:`detector.training.config.read_config`)."""
    cfg = read_config(path)
    resolve_auto_anchors(cfg)
    model = cfg.model.init_args
    anchors, loss = model.get("anchors"), model.get("loss")
    anchor_cfg = AnchorConfig(**anchors.as_dict()) if anchors is not None else AnchorConfig()
    return InspectConfig(
        anchors=anchor_cfg.make(),
        image_size=int(model.image_size),
        iou_threshold=float(loss.iou_threshold) if loss is not None else LossConfig.iou_threshold,
        data=cfg.data.as_dict(),
        path=Path(path),
        matching=loss.get("matching", LossConfig.matching) if loss is not None else LossConfig.matching,
        atss_topk=int(loss.get("atss_topk", LossConfig.atss_topk)) if loss is not None else LossConfig.atss_topk,
    )


def inspect_anchors(cfg: InspectConfig, out: Path, image: str | None = None, palette: int | None = None) -> list[Path]:
    """``out/anchors.png``; ``image``: a picture file to draw them on, squashed to S x S.

    ``palette`` (here and below): see :func:`detector.pictures.save_figure`.
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
    rule = {"matching": cfg.matching, "atss_topk": cfg.atss_topk}
    stats = format_statistics(
        match_statistics(split, cfg.anchors, cfg.iou_threshold, **rule), cfg.anchors, cfg.iou_threshold, split,
        f"{cfg.path}: ", **rule,
    )
    print(stats)
    dataset = DetectionDataset(split, DetectionTransform("none", cfg.image_size, cfg.data["mean"], cfg.data["std"]))
    samples = [dataset[i] for i in range(min(images, len(dataset)))]
    pictures = denormalize(torch.stack([s["image"] for s in samples]), cfg.data["mean"], cfg.data["std"])
    S = cfg.image_size
    targets = [{"boxes": s["boxes"] * S, "labels": s["labels"]} for s in samples]
    titles = [f"id {s['image_id']}" for s in samples]
    fig = match_grid(list(pictures), targets, cfg.anchors, dm.class_names, cfg.iou_threshold, titles=titles, **rule)
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
    cfg.data.update(image_size=model.image_size, mean=tuple(backbone.mean), std=tuple(backbone.std))
    dm = cfg.datamodule()
    name = "val" if dm.jsons["val"] else "train"
    dm.setup("validate" if name == "val" else "fit")
    split = dm.splits[name]
    if split.class_names != model.class_names:
        raise ConfigError(f"{split.json_path}: classes {split.class_names} differ from {checkpoint}'s {model.class_names}")
    S = model.image_size
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


@torch.no_grad()
def inspect_compare_boxes(
    cfg: InspectConfig,
    out: Path,
    baseline: str | Path,
    checkpoint: str | Path,
    index: int = 0,
    score: float | None = None,
    palette: int | None = None,
) -> list[Path]:
    """``out/compare_boxes.png``: ``baseline``'s detections (left) and ``checkpoint``'s (right) on
    validation image ``index`` (a training image when the config has no ``val_json``), drawn on the
    original over the same ground truth, each object's best IoU written at its corner. Each model sees
    the image at its own size and normalisation. Drawn: each model's N best-scoring detections, N the
    image's objects, so that two models whose scores differ in scale show as many boxes each (a
    picture threshold hides everything of a model that is not yet confident); with ``score``, every
    detection above it instead."""
    models = [load_detector(path, "cpu") for path in (baseline, checkpoint)]
    dm = cfg.datamodule()
    name = "val" if dm.jsons["val"] else "train"
    dm.setup("validate" if name == "val" else "fit")
    split = dm.splits[name]
    for path, model in zip((baseline, checkpoint), models, strict=True):
        if split.class_names != model.class_names:
            raise ConfigError(f"{split.json_path}: classes {split.class_names} differ from {path}'s {model.class_names}")
    if not 0 <= index < len(split.records):
        raise ConfigError(f"{split.json_path}: --index {index} is not one of its {len(split.records)} images (0 to {len(split.records) - 1})")
    record = split.records[index]
    scale = torch.tensor([record.width, record.height, record.width, record.height], dtype=torch.float32)
    predictions = []
    for model in models:
        backbone = model.model.backbone
        dataset = DetectionDataset(split, DetectionTransform("none", model.image_size, backbone.mean, backbone.std))
        batch = collate_detections([dataset[index]])
        det = model.detect(batch["images"], score_threshold=score)[0]  # None: the evaluation's threshold
        if score is None:  # the best-scoring N (detections come highest score first)
            det = {key: value[: max(1, len(record.boxes))] for key, value in det.items()}
        predictions.append({**det, "boxes": det["boxes"] * scale})
    names = [f"{side}: {'/'.join(Path(path).parts[-4:])}" for side, path in zip(("left", "right"), (baseline, checkpoint), strict=True)]
    target = {"boxes": record.boxes, "labels": record.labels}
    fig = box_comparison_figure(load_image(record.path), target, predictions, names, models[0].class_names)
    n = max(1, len(record.boxes))
    shown = f"the {n} best-scoring detection{'s' * (n > 1)}" if score is None else f"detections scoring above {score:g}"
    fig.suptitle(f"{name} image {record.path.name}: ground truth dashed white, {shown} solid", fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    return [save_figure(fig, out / "compare_boxes.png", dpi=100, palette=palette)]
