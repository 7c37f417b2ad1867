"""What bench/frozen_bn.py and bench/depthwise.py share: configs/shapes.yaml's model in its main
stage (group 0 frozen, the config's BatchNorm and depthwise settings, as ``StagedFreezing`` applies
them), a random batch, and whole training steps of several models timed interleaved in one process
(forward, loss, backward, AdamW; alternating which goes first; medians), since this machine is too
noisy for back-to-back runs."""

from __future__ import annotations

import statistics
import time
from typing import Any

import torch
import yaml
from torch import Tensor

from detector.training.recipe import freeze_for_epoch
from detector.training.tasks.detection import DetectorModule

SHAPES_CONFIG = "configs/shapes.yaml"


def shapes_init() -> dict[str, Any]:
    """``model.init_args`` of configs/shapes.yaml."""
    return yaml.safe_load(open(SHAPES_CONFIG))["model"]["init_args"]


def main_stage_model(**overrides: Any) -> DetectorModule:
    """The shapes model (random weights: the cost does not depend on them) frozen as in its main
    stage; ``overrides`` replace init args (e.g. ``train_depthwise=True``)."""
    torch.manual_seed(0)
    model = DetectorModule(**{**shapes_init(), "weights": "none", "num_classes": 7, **overrides}).train()
    freeze_for_epoch(model, 1)
    return model


def random_batch(batch_size: int, size: int) -> tuple[Tensor, Tensor, Tensor]:
    """``images (B, 3, S, S)`` in [-1, 1], ``boxes (B, 4, 4)`` xyxy in [0, 1], ``labels (B, 4)``."""
    gen = torch.Generator().manual_seed(0)
    images = torch.rand(batch_size, 3, size, size, generator=gen) * 2 - 1
    xy = torch.rand(batch_size, 4, 2, generator=gen) * 0.5
    boxes = torch.cat([xy, xy + 0.1 + torch.rand(batch_size, 4, 2, generator=gen) * 0.4], dim=2)
    labels = torch.randint(0, 7, (batch_size, 4), generator=gen)
    return images, boxes, labels


def interleaved_step_ms(models: dict[str, DetectorModule], batch: tuple[Tensor, Tensor, Tensor], steps: int) -> dict[str, float]:
    """Median ms of a training step of each model, the models alternating step by step; two
    warm-up steps each (a frozen stage's fold is built in the first)."""
    images, boxes, labels = batch
    runs = {name: (m, torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=1e-4)) for name, m in models.items()}
    times: dict[str, list[float]] = {name: [] for name in runs}
    for r in range(steps + 2):
        for name in (list(runs) if r % 2 == 0 else list(runs)[::-1]):
            model, opt = runs[name]
            start = time.perf_counter()
            cls_logits, box_deltas = model(images)
            model.criterion(cls_logits, box_deltas, model.anchors, boxes, labels)["loss"].backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            if r >= 2:
                times[name].append((time.perf_counter() - start) * 1000)
    return {name: statistics.median(t) for name, t in times.items()}
