"""``anchors: auto`` in a training config: the training split's boxes -> :mod:`detector.autoanchor.fit`'s
choice -> concrete ``image_size`` and ``anchors`` written into the parsed config, before anything is
built, so the run's saved ``config.yaml`` holds the values the model was built with (and resuming,
or training again from that file, builds the same model). Also what ``detector data anchors``
prints: the config's own anchors against the choice.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Mapping
from dataclasses import asdict
from typing import Any

import numpy as np
import torch
from jsonargparse import Namespace
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor

from detector.autoanchor.fit import AnchorChoice, best_anchor_iou, choose_anchors
from detector.core.anchors import AnchorConfig
from detector.data.datamodule import DetectionDataModule
from detector.data.records import LoadedSplit, load_records
from detector.defaults import IMAGE_SIZE, MATCH_IOU
from detector.errors import ConfigError

__all__ = ["AUTO", "anchor_settings", "describe_choice", "resolve_auto_anchors", "squashed_boxes", "train_split"]

AUTO = "auto"
"""The value of ``model.init_args.anchors`` that asks for anchors chosen from the data."""


def train_split(data: Mapping[str, Any], quiet: bool = False) -> LoadedSplit:
    """The training split of a config's ``data:`` section (the shapes data written first when the
    config generates it); image files are not opened. ``quiet``: skipped records are not logged
    (the data module logs them when training loads the split)."""
    dm = DetectionDataModule(**dict(data))
    if dm.jsons["train"] is None:
        raise ConfigError("data.train_json is not set: the training boxes are what anchors: auto and the report read")
    dm.prepare_data()
    with _quiet("detector.data.records") if quiet else contextlib.nullcontext():
        return load_records(dm.jsons["train"], dm.hparams.image_dir, dm.hparams.on_bad_record, verify_images=False)


def squashed_boxes(split: LoadedSplit) -> tuple[Tensor, Tensor]:
    """Every object of ``split`` as the network sees it after the squash resize: boxes ``(N, 4)``
    float32 xyxy in ``[0, 1]`` (pixels over the image's width and height) and labels ``(N,)`` int64."""
    records = [r for r in split.records if len(r.boxes)]
    if not records:
        return torch.zeros(0, 4), torch.zeros(0, dtype=torch.int64)
    scale = [np.array([r.width, r.height, r.width, r.height], dtype=np.float32) for r in records]
    boxes = np.concatenate([r.boxes / s for r, s in zip(records, scale)])  # (N, 4)
    return torch.from_numpy(boxes), torch.from_numpy(np.concatenate([r.labels for r in records]))


def anchor_settings(model: Namespace | Mapping[str, Any]) -> tuple[AnchorConfig | str, int, float]:
    """A ``model:`` section's anchors (:class:`AnchorConfig`, or :data:`AUTO`), image size and
    matching threshold, with the defaults of :class:`detector.training.tasks.detection.DetectorModule`."""
    init = _as_dict(model)
    init = _as_dict(init.get("init_args", init))
    anchors, loss = init.get("anchors"), _as_dict(init.get("loss") or {})
    if anchors is None:
        anchors = AnchorConfig()
    elif anchors != AUTO and not isinstance(anchors, AnchorConfig):
        anchors = AnchorConfig(**_as_dict(anchors))
    return anchors, int(init.get("image_size", IMAGE_SIZE)), float(loss.get("iou_threshold", MATCH_IOU))


def resolve_auto_anchors(config: Namespace) -> AnchorChoice | None:
    """With ``model.init_args.anchors: auto`` in the parsed ``config`` (``model`` and ``data``
    sections): choose the image size and anchors from the training boxes, write them into
    ``config`` (``model.init_args.image_size``, ``.anchors``, and the linked ``data.image_size``),
    log the choice in one line and return it. Otherwise leave ``config`` alone and return None."""
    model = config.get("model")
    init = model.get("init_args") if isinstance(model, Namespace) else None
    if init is None or init.get("anchors") != AUTO:
        return None
    _, _, threshold = anchor_settings(model)
    split = train_split(config.data.as_dict(), quiet=True)
    boxes, _ = squashed_boxes(split)
    if len(boxes) == 0:
        raise ConfigError(f"model.init_args.anchors: auto: {split.json_path} has no boxes to choose anchors from")
    choice = choose_anchors(boxes, iou_threshold=threshold)
    chosen = asdict(choice.anchors)
    init.anchors = Namespace(grids=chosen["grids"], zooms=chosen["zooms"], ratios=[list(r) for r in chosen["ratios"]])
    init.image_size = choice.image_size
    config.data.image_size = choice.image_size
    rank_zero_info(f"anchors: auto -> {choice.summary()}")
    return choice


def describe_choice(config: Namespace, source: str, target: float = 0.99, image_size: int | None = None) -> str:
    """What ``detector data anchors CONFIG`` prints for the parsed ``config`` (read from ``source``):
    the config's anchors' coverage (unless they are ``auto``), the choice's, per class, and the
    YAML lines that fix the choice in the config."""
    anchors, size, threshold = anchor_settings(config.model)
    split = train_split(config.data.as_dict())
    boxes, labels = squashed_boxes(split)
    if len(boxes) == 0:
        raise ConfigError(f"{split.json_path}: no boxes to choose anchors from")
    choice = choose_anchors(boxes, iou_threshold=threshold, target=target, image_size=image_size)
    lines = [f"{split.json_path}: {len(boxes)} boxes in {len(split.records)} images; a box is covered when an "
             f"anchor overlaps it at IoU > {threshold:g} (the matcher's positive rule)"]
    per_class = {}
    if anchors != AUTO:
        made = anchors.make()
        covered = best_anchor_iou(boxes, made) > threshold  # (N,)
        lines.append(f"config ({source}): image_size {size}, grids {list(anchors.grids)}, k = {made.k}: {len(made)} "
                     f"anchors; {100 * float(covered.float().mean()):.1f} % covered")
        per_class["config"] = covered
    per_class["auto"] = best_anchor_iou(boxes, choice.anchors.make()) > threshold
    lines.append(f"auto: {choice.summary()}")
    for name, covered in per_class.items():
        shares = [f"{n} {100 * float(covered[labels == c].float().mean()):.1f} %"
                  for c, n in enumerate(split.class_names) if (labels == c).any()]
        lines.append(f"  covered per class ({name}): " + ", ".join(shares))
    a = choice.anchors
    lines += [
        "in the config (model.init_args), for these values rather than a choice at every start:",
        f"    image_size: {choice.image_size}",
        "    anchors:",
        f"      grids: {list(a.grids)}",
        f"      zooms: {list(a.zooms)}",
        f"      ratios: {[list(r) for r in a.ratios]}",
    ]
    return "\n".join(lines)


def _as_dict(value: Any) -> dict[str, Any]:
    if isinstance(value, Namespace):
        return value.as_dict()
    return dict(value) if isinstance(value, Mapping) else {}


@contextlib.contextmanager
def _quiet(name: str) -> Iterator[None]:
    """Warnings of logger ``name`` dropped for the duration."""
    logger = logging.getLogger(name)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)
