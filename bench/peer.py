"""Our recipe against standard detectors, side by side: torchvision's RetinaNet and FCOS on an FPN
over the same body, trained for the same epochs and optimiser steps on the same images, scored by
the same metric code. The peers get what a careful torchvision user would give them; each such
setting is a flag whose default is the fair choice, so that one row per flag shows what it is worth.

    python bench/peer.py --config data/bccd/config.yaml [--epochs N] [--batch-size B] [--threads 1] [--seed 0]
        [--peers retinanet fcos] [--schedules cosine adamw sgd sgd-clip] [--anchors fitted|torchvision-scaled|torchvision]
        [--frozen-bn] [--no-ema] [--levels 3|5] [--skip-ours | --skip-peer | --ours-run runs/NAME/vN]

For a training config (typically the one ``detector data import`` writes, with ``anchors: auto``):

* **ours**: ``detector train fit --config CONFIG --epochs N`` (plus ``--data.batch_size B`` with
  ``--batch-size``, plus ``--ours-args``) in a run folder ``runs/NAME/vN`` (``--name``, default
  ``<dataset>_bench``), then its ``best.ckpt`` (as ``detector eval`` picks) over the test split;
  ``--ours-run RUN_FOLDER`` scores a finished run instead.
* **RetinaNet** (``--peers retinanet``): torchvision's ``RetinaNet`` (Lin et al. 2017: its matcher,
  IoU >= 0.5 / < 0.4 with low-quality matches; its sigmoid focal loss, alpha 0.25, gamma 2; its box
  coder with L1 loss; its head of 4 convs per branch; its NMS at 0.5) on an FPN over the config's
  body and weights (the same ImageNet EfficientNet-Lite0 body), ``--fpn-channels`` wide (default
  128; torchvision's ResNet-50 models use 256, which over this 0.4 GMAC body makes a step ~10x ours
  on this CPU; EfficientDet-D0 uses 64 over this family of bodies). Its anchors (``--anchors``):

  - ``fitted`` (default): fitted to the training boxes at the run's input size, as YOLO fits its
    anchors: IoU k-means (distance 1 - IoU of two boxes sharing a corner, medians as centres,
    started from area quantiles, so deterministic) of the boxes' (width, height) in input pixels
    into ``levels x --anchors-per-level`` shapes, sorted by area and dealt out in that order, the
    smallest ``--anchors-per-level`` to P3 and so on (each level of torchvision's head must have
    the same number of anchors per cell). On FPN levels P3-P5 (``--levels``, default 3 here: the
    layout of the independent script that reached 0.520 on BCCD). The script prints the share of
    the training boxes that some anchor of the grid overlaps at IoU >= 0.5 (RetinaNet's positive
    rule) for the fitted and for torchvision's anchors.
  - ``torchvision-scaled``: torchvision's anchors (32-512 px x 2^(0, 1/3, 2/3), ratios 0.5 / 1 / 2 on
    P3-P7) times input size / 800 (torchvision's models resize to 800 px; ours train at 224-320).
  - ``torchvision``: torchvision's anchors as they ship, at our input size (the old peer).

* **FCOS** (``--peers fcos``): torchvision's ``FCOS`` (Tian et al. 2019: no anchor boxes to tune;
  one "anchor" per cell equal to the level's stride, 8-128 on P3-P7, as ``fcos_resnet50_fpn`` builds
  it; its centre sampling, radius 1.5; its size ranges per level; sigmoid focal loss, GIoU loss and
  centerness as torchvision ships them; its GroupNorm head; NMS 0.6) on the same FPN (P3-P7, the
  default ``--levels`` for every peer but the fitted RetinaNet) and body.

Both peers, each setting a flag with the fair default:

* BatchNorm: the body's BatchNorm trains wherever its group trains, and freezes (eval mode, no
  gradient) where the recipe freezes the group, exactly as ours (our configs' ``train_bn: false``):
  the config's stages say, epoch by epoch, which of the body's two layer groups are frozen
  (``detector.training.recipe.apply_freeze`` on the body's ``layer_groups``). The imported configs freeze
  the whole body for the first stage and the body up to stride 8 (group 0) after it, so the peers
  train what ours trains. ``--frozen-bn``: every body BatchNorm frozen as torchvision's detection
  bodies (``FrozenBatchNorm2d``: running statistics and affine fixed) - the old peer.
* the same loader: the config's batch size (``--batch-size`` changes it for BOTH sides, ours through
  ``--data.batch_size``), so the same optimiser steps and images, in the same order with the same
  augmentation (the same seed); the JSON rows give both counts.
* ``--schedules`` (each a row; one learning rate for every parameter):

  - ``cosine`` (default): AdamW, lr ``--lr`` (1e-3, the independent script's), weight decay 1e-4,
    linear warm-up from lr / 1000 over ``--warmup`` (0.1, ours' climb: one tenth) of the run's
    steps, then a cosine down to lr / 20 (our one-cycle ends at lr / 20); the gradient's L2 norm
    clipped at ``--clip`` (35, mmdetection's RetinaNet value; 0: none).
  - ``adamw``: AdamW 1e-3 constant, weight decay 1e-4, no clipping (the old peer's, and the
    independent script's, schedule).
  - ``sgd``: torchvision's detection reference (lr 0.01 x batch / 16, momentum 0.9, weight decay
    1e-4, linear warm-up from 1/1000 over the first epoch's steps up to 1000 - COCO's warm-up,
    squeezed into a dozen steps here - x0.1 at 2/3 and 8/9 of the run); ``sgd-clip``: that with the
    gradient's L2 norm clipped at 35, as mmdetection's RetinaNet configs.

* an EMA of the weights, as ours: the config's ``EMAWeightAveraging`` decay (e.g. 0.9722),
  ``torch.optim.swa_utils.AveragedModel`` with ``get_ema_multi_avg_fn`` and the buffers averaged
  too (Lightning's callback's defaults), updated after every optimiser step from the first (which
  copies), and it is the EMA that is validated, kept as best and tested (as ours' ``best.ckpt``
  holds the EMA). ``--no-ema``: the raw weights. With no EMA callback in the config, no EMA.

Both sides: the same input size (the config's, or what ``anchors: auto`` chooses from the training
boxes), the same train loader (see above), the body frozen for the same first epochs, validation at
the config's cadence (scaled with ``--epochs`` as ``detector train`` scales it) keeping the weights
of the best value of what the config's ``best.ckpt`` monitors (``val/fitness`` = 0.1 mAP@0.5 + 0.9
COCO mAP in imported configs), and the test split scored by :class:`detector.evaluation.metrics.DetectionMetrics`
in original image pixels (COCO by pycocotools, at most 100 detections per image, score threshold
0.01). A claim that ours is ahead must hold against the better of the peers at its best row, on
each metric. Train seconds are the wall time of each fit, validations included, on this machine as
it was loaded (compare ratios only within one run). Prints two tables (overall, per class AP@0.5)
and one JSON line (with the command, the commit and the date).
"""

from __future__ import annotations

import argparse
import copy
import datetime
import inspect
import json
import math
import os
import shlex
import subprocess
import sys
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml
from jsonargparse import Namespace
from torch import Tensor, nn

REPO = Path(__file__).resolve().parents[1]
sys.path[:] = [str(REPO)] + [p for p in sys.path[1:] if Path(p or ".").resolve() != REPO / "bench"]

from detector.autoanchor.choice import resolve_auto_anchors, squashed_boxes, train_split  # noqa: E402
from detector.core.postprocess import to_pixels  # noqa: E402
from detector.data.datamodule import DetectionDataModule  # noqa: E402
from detector.data.dataset import targets_in_pixels  # noqa: E402
from detector.deploy.loading import load_detector  # noqa: E402
from detector.evaluation.evaluator import evaluate  # noqa: E402
from detector.evaluation.metrics import DetectionMetrics, fitness, per_class  # noqa: E402
from detector.model.backbones import Backbone, backbone_stats, build_backbone  # noqa: E402
from detector.training.plan import recipe_stages, size_recipe  # noqa: E402
from detector.training.recipe import FREEZE, apply_freeze, stage_at_epoch  # noqa: E402
from detector.training.runs import find_run  # noqa: E402
from detector.training.tasks.staged import StagedModule  # noqa: E402

PEERS = ("retinanet", "fcos")
SCHEDULES = ("cosine", "adamw", "sgd", "sgd-clip")
ANCHORS = ("fitted", "torchvision-scaled", "torchvision")
CLIP_NORM = {"sgd-clip": 35.0}  # mmdetection's RetinaNet configs clip the gradient's L2 norm at 35
KEYS = ("map_50", "map", "map_75", "map_small", "map_medium", "map_large")
TORCHVISION_SIZES = (32, 64, 128, 256, 512)  # retinanet_resnet50_fpn: x 2^(0, 1/3, 2/3), ratios 0.5 / 1 / 2
TORCHVISION_RATIOS = (0.5, 1.0, 2.0)
TORCHVISION_INPUT = 800  # the shorter side torchvision's detection models resize to
POSITIVE_IOU = 0.5  # RetinaNet's matcher: IoU >= 0.5 is a positive


@dataclass
class Setting:
    """What both sides share, resolved from the config as ``detector train`` resolves it."""

    data: dict[str, Any]  # the data module's arguments (image size, statistics, seed, batch size filled in)
    backbone: str
    weights: str
    epochs: int
    frozen_epochs: int  # the first stage's epochs when it freezes the whole body, else 0
    val_every: int
    monitor: str  # what best.ckpt keeps the best of (the config's first monitored checkpoint), without "val/"
    frozen_groups: list[tuple[int, ...]] = field(default_factory=list)  # per epoch: the body's frozen layer groups
    train_bn: bool = True  # the config's: BatchNorm in frozen groups keeps training
    ema_decay: float | None = None  # the config's EMAWeightAveraging decay (None: no EMA callback)


def _namespace(value: Any) -> Any:
    """YAML mappings as the ``Namespace`` objects that ``detector train``'s config steps take."""
    if isinstance(value, dict):
        return Namespace(**{k: _namespace(v) for k, v in value.items()})
    return [_namespace(v) for v in value] if isinstance(value, list) else value


def resolve(config_path: Path, epochs: int | None, seed: int, batch_size: int | None = None) -> Setting:
    """The config with ``--epochs`` applied (:func:`size_recipe`), ``anchors: auto`` chosen and
    ``--batch-size`` applied."""
    config = _namespace(yaml.safe_load(config_path.read_text()))
    config.trainer.max_epochs = epochs
    size_recipe(config)
    resolve_auto_anchors(config)
    init = config.model.init_args
    backbone = init.get("backbone") or inspect.signature(StagedModule).parameters["backbone"].default
    stages = recipe_stages(config)
    first = stages[0]
    frozen = first.epochs if first.freeze == "body" else 0
    data = config.data.as_dict()
    mean, std = backbone_stats(backbone)  # what `detector train` links from the backbone (detector.training.config)
    data.update(image_size=int(init.get("image_size", 224)), mean=mean, std=std, seed=seed)
    if batch_size is not None:
        data["batch_size"] = batch_size
    data.setdefault("batch_size", inspect.signature(DetectionDataModule).parameters["batch_size"].default)
    callbacks = config.trainer.get("callbacks") or []
    monitors = [c.init_args.monitor for c in callbacks
                if str(c.get("class_path", "")).endswith("ModelCheckpoint") and c.get("init_args") and c.init_args.get("monitor")]
    decays = [float((c.get("init_args") or Namespace()).get("decay", 0.999)) for c in callbacks
              if str(c.get("class_path", "")).endswith("EMAWeightAveraging")]
    n = int(config.trainer.max_epochs)
    train_bn = init.get("train_bn")
    return Setting(
        data, backbone, init.get("weights", "imagenet"), n, frozen,
        int(config.trainer.get("check_val_every_n_epoch") or 1), (monitors or ["val/map_50"])[0].removeprefix("val/"),
        frozen_groups=[FREEZE[stages[stage_at_epoch(stages, e)].freeze] for e in range(n)],
        train_bn=True if train_bn is None else bool(train_bn), ema_decay=decays[0] if decays else None,
    )


def score(detections: list[dict[str, Tensor]], ground_truths: list[dict[str, Tensor]], names: list[str]) -> dict[str, Any]:
    """Per-image detections and ground truth in original pixels -> the table's numbers."""
    metric = DetectionMetrics(len(names))
    metric.update(detections, ground_truths)
    result = metric.compute()
    out = {k: float(result[k]) for k in KEYS}
    out["fitness"] = fitness(out["map_50"], out["map"])  # as the module logs it
    out["per_class_ap_50"] = {n: float(v) for n, v in zip(names, per_class(result)["map_50"])}
    return out


# ----------------------------------------------------------------------------------------- ours


def run_ours(args: argparse.Namespace, setting: Setting) -> dict[str, Any]:
    """Train our recipe through the CLI, then score its best checkpoint on the test split."""
    if args.ours_run is None:
        command = [
            sys.executable, "-m", "detector", "train", "fit", "--config", str(args.config), "--epochs", str(setting.epochs),
            "--name", args.name, "--run.root", str(args.runs), "--seed_everything", str(args.seed),
            "--data.seed", str(args.seed),  # the image order and augmentations too, as the peers' (setting.data)
            *(["--data.batch_size", str(args.batch_size)] if args.batch_size is not None else []),
            *shlex.split(args.ours_args),
        ]
        print("ours:", shlex.join(command), file=sys.stderr, flush=True)
        env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
        start = time.perf_counter()
        subprocess.run(command, check=True, env=env, stdout=sys.stderr)  # stdout: the tables only
        seconds = time.perf_counter() - start
        run = find_run(str(args.runs), args.name, "best.ckpt", None)
        folder, label = run.path, f"{args.name}/v{run.version}"
    else:
        folder, label = args.ours_run, str(args.ours_run)
        # its wall time: from the resolved config written at the start to the last epoch's checkpoint
        seconds = (folder / "checkpoints" / "last.ckpt").stat().st_mtime - (folder / "config.yaml").stat().st_mtime
    last = torch.load(folder / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    steps = int(last["global_step"])
    trained = yaml.safe_load((folder / "config.yaml").read_text())
    batch = int((trained.get("data") or {}).get("batch_size") or setting.data["batch_size"])
    if batch != setting.data["batch_size"]:
        raise RuntimeError(f"ours trained at batch {batch}, the peers would train at {setting.data['batch_size']}")
    model = load_detector(folder / "checkpoints" / "best.ckpt")
    if model.image_size != setting.data["image_size"]:
        raise RuntimeError(f"ours trained at {model.image_size} px, the peer would train at {setting.data['image_size']}")
    dm = DetectionDataModule(**setting.data)
    found = evaluate(model, dm, "test", progress=False)
    result = score(found.detections, found.ground_truths, model.class_names)
    result.update(name=f"ours ({label})", train_seconds=seconds, images_seen=steps * batch, optimizer_steps=steps)
    return result


# ----------------------------------------------------------------------------------------- anchors


def iou_kmeans(wh: Tensor, k: int, iterations: int = 100) -> Tensor:
    """``k`` (width, height) centres of the boxes' shapes ``wh (N, 2)`` under the distance 1 - IoU
    of two boxes that share a corner (YOLOv2's anchor clustering), medians as centres, started
    from the shapes at k area quantiles (deterministic). -> ``(k, 2)`` sorted by area."""
    wh = wh.double()
    order = wh.prod(1).argsort()
    centres = wh[order[((torch.arange(k, dtype=torch.float64) + 0.5) / k * len(wh)).long().clamp(max=len(wh) - 1)]].clone()
    for _ in range(iterations):
        inter = torch.minimum(wh[:, None], centres[None]).prod(2)
        iou = inter / (wh.prod(1)[:, None] + centres.prod(1)[None] - inter)
        nearest = iou.argmax(1)
        new = torch.stack([wh[nearest == j].median(0).values if (nearest == j).any() else centres[j] for j in range(k)])
        if torch.equal(new, centres):
            break
        centres = new
    return centres[centres.prod(1).argsort()].float()


def fit_anchors(wh: Tensor, levels: int, per_level: int) -> list[Tensor]:
    """Anchor shapes per FPN level fitted to the boxes' shapes ``wh (N, 2)`` (input pixels): the
    boxes' scales ``sqrt(w h)`` between their 1st and 99th percentiles cut into ``levels`` equal
    spans of log scale, the smallest span to P3 and so on (FPN's rule: one octave of scale per
    level, here as many octaves as the data spans), then ``per_level`` shapes per level by IoU
    k-means of the level's boxes. A level with fewer boxes than ``per_level`` gets their shapes
    and squares at scales log-spaced over its span. -> ``levels`` tensors ``(per_level, 2)``."""
    log_scale = wh.prod(1).sqrt().log()
    lo, hi = (float(q) for q in torch.quantile(log_scale.double(), torch.tensor([0.01, 0.99], dtype=torch.float64)))
    span = max(hi - lo, 1e-6) / levels
    level = ((log_scale - lo) / span).floor().clamp(0, levels - 1).long()
    shapes = []
    for i in range(levels):
        mine = wh[level == i]
        if len(mine) >= per_level:
            shapes.append(iou_kmeans(mine, per_level))
        else:  # the level's few boxes' own shapes, then squares over its span
            scales = torch.exp(lo + span * (i + (torch.arange(per_level - len(mine), dtype=torch.float64) + 0.5)
                                            / (per_level - len(mine)))).float()
            shapes.append(torch.cat([mine.float(), torch.stack([scales, scales], 1)]))
    return shapes


def shape_anchors(shapes: list[Tensor]) -> nn.Module:
    """torchvision's ``AnchorGenerator`` with the given ``(A, 2)`` (width, height) shapes per level
    in place of sizes x aspect ratios (the same grid: an anchor every ``stride`` from the corner)."""
    from torchvision.models.detection.anchor_utils import AnchorGenerator

    generator = AnchorGenerator(sizes=tuple((1.0,) * len(s) for s in shapes), aspect_ratios=((1.0,),) * len(shapes))
    generator.cell_anchors = [torch.cat([-s / 2, s / 2], 1).round() for s in shapes]  # as generate_anchors rounds
    return generator


def peer_anchors(mode: str, boxes: Tensor, size: int, levels: int, per_level: int) -> nn.Module:
    """The anchor generator of ``--anchors mode`` for ``levels`` FPN levels from P3; ``boxes (N, 4)``:
    the training boxes, xyxy in input pixels."""
    from torchvision.models.detection.anchor_utils import AnchorGenerator

    if mode == "fitted":
        return shape_anchors(fit_anchors(boxes[:, 2:] - boxes[:, :2], levels, per_level))
    scale = size / TORCHVISION_INPUT if mode == "torchvision-scaled" else 1.0
    sizes = tuple(tuple(x * scale * 2 ** (j / 3) for j in range(3)) for x in TORCHVISION_SIZES[:levels])
    return AnchorGenerator(sizes, (TORCHVISION_RATIOS,) * levels)


def grid_anchors(generator: nn.Module, size: int, levels: int) -> Tensor:
    """Every anchor the generator places on a ``size`` x ``size`` input over P3.. (strides 8, 16, ...)."""
    strides = [8 * 2**i for i in range(levels)]
    grids = [[math.ceil(size / s)] * 2 for s in strides]
    return torch.cat(generator.grid_anchors(grids, [[torch.tensor(s), torch.tensor(s)] for s in strides]))


def coverage(boxes: Tensor, anchors: Tensor, threshold: float = POSITIVE_IOU) -> float:
    """The share of ``boxes`` that some anchor overlaps at IoU >= ``threshold``."""
    from torchvision.ops import box_iou

    if not len(boxes):
        return float("nan")
    best = torch.cat([box_iou(chunk, anchors).amax(1) for chunk in boxes.split(512)])
    return float((best >= threshold).float().mean())


def training_boxes(setting: Setting) -> Tensor:
    """The training boxes as the network sees them (squashed to the square input), xyxy in input pixels."""
    boxes, _ = squashed_boxes(train_split(setting.data, quiet=True))
    return boxes * setting.data["image_size"]


# ----------------------------------------------------------------------------------------- the peers


class BodyWithFPN(nn.Module):
    """Our body's maps at strides 8, 16, 32 -> FPN P3-P5, and P6, P7 from P5 with ``levels=5``
    (``retinanet_resnet50_fpn``'s and ``fcos_resnet50_fpn``'s layout)."""

    def __init__(self, body: Backbone, channels: int = 256, levels: int = 5) -> None:
        super().__init__()
        from torchvision.ops.feature_pyramid_network import FeaturePyramidNetwork, LastLevelP6P7

        if levels not in (3, 5):
            raise ValueError(f"levels {levels}: 3 (P3-P5) or 5 (P3-P7)")
        self.body = body
        extra = LastLevelP6P7(channels, channels) if levels == 5 else None
        self.fpn = FeaturePyramidNetwork(list(body.out_channels), channels, extra_blocks=extra)
        self.out_channels = channels

    def forward(self, images: Tensor) -> OrderedDict[str, Tensor]:
        """``(B, 3, H, W)`` -> ``levels`` maps ``(B, channels, H / s, W / s)``, s = 8, 16, ..."""
        return self.fpn(OrderedDict((str(i), x) for i, x in enumerate(self.body(images))))


@dataclass
class PeerConfig:
    """One peer row's settings."""

    kind: str = "retinanet"  # retinanet | fcos
    schedule: str = "cosine"
    anchors: str = "fitted"  # retinanet only
    frozen_bn: bool = False
    ema: bool = True
    levels: int | None = None  # None: 3 for the fitted RetinaNet, 5 otherwise
    anchors_per_level: int = 6
    channels: int = 128
    lr: float = 1e-3
    warmup: float = 0.1
    clip: float = 35.0

    def __post_init__(self) -> None:
        if self.levels is None:
            self.levels = 3 if (self.kind == "retinanet" and self.anchors == "fitted") else 5

    @property
    def name(self) -> str:
        levels = f"P3-P{2 + self.levels}"
        what = (f"RetinaNet+FPN{self.channels} {levels}, {self.anchors} anchors" if self.kind == "retinanet"
                else f"FCOS+FPN{self.channels} {levels}")
        schedule = self.schedule + (f", clip {self.clip:g}" if self.schedule == "cosine" and self.clip > 0 else "")
        return f"peer {what}, BN {'frozen' if self.frozen_bn else 'trained'}, {schedule}, {'EMA' if self.ema else 'no EMA'}"


def build_peer(setting: Setting, num_classes: int, cfg: PeerConfig, boxes: Tensor | None = None) -> nn.Module:
    """torchvision's RetinaNet or FCOS over the config's body; inputs arrive resized and normalised.
    ``boxes``: the training boxes in input pixels (for fitted anchors)."""
    from torchvision.models.detection import FCOS, RetinaNet
    from torchvision.models.detection.anchor_utils import AnchorGenerator

    body = build_backbone(setting.backbone, setting.weights)
    if cfg.frozen_bn:  # torchvision's FrozenBatchNorm2d: statistics and affine fixed (eval mode: train_step)
        for m in body.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.requires_grad_(False)
    size = setting.data["image_size"]
    common = dict(min_size=size, max_size=size, image_mean=[0.0] * 3, image_std=[1.0] * 3,
                  score_thresh=0.01, detections_per_img=100)  # as our evaluation: threshold 0.01, COCO's 100 per image
    backbone = BodyWithFPN(body, cfg.channels, cfg.levels)
    if cfg.kind == "fcos":
        strides = tuple((8 * 2**i,) for i in range(cfg.levels))  # fcos_resnet50_fpn: one anchor = the stride
        return FCOS(backbone, num_classes, anchor_generator=AnchorGenerator(strides, ((1.0,),) * cfg.levels), **common)
    if cfg.anchors == "fitted" and boxes is None:
        boxes = training_boxes(setting)
    generator = peer_anchors(cfg.anchors, boxes, size, cfg.levels, cfg.anchors_per_level)
    return RetinaNet(backbone, num_classes, anchor_generator=generator, **common)


def set_training(peer: nn.Module, setting: Setting, epoch: int, frozen_bn: bool) -> None:
    """Train mode, the body's groups frozen as the recipe has them at ``epoch`` (BatchNorm in frozen
    groups as the config's ``train_bn``), and with ``frozen_bn`` every body BatchNorm in eval mode."""
    peer.train()
    body = peer.backbone.body
    apply_freeze(body.layer_groups, setting.frozen_groups[min(epoch, len(setting.frozen_groups) - 1)], setting.train_bn)
    if frozen_bn:
        for m in body.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.eval()
                m.requires_grad_(False)


def warmup_steps(total_steps: int, fraction: float) -> int:
    return max(1, round(fraction * total_steps))


def schedule(cfg: PeerConfig, peer: nn.Module, batch: int, steps_per_epoch: int, epochs: int):
    """(optimiser, scheduler stepped after every optimiser step or None, scheduler stepped every epoch
    or None, gradient norm clip or None). Every parameter is in the optimiser; frozen ones get no
    gradient and stay as they are."""
    params = list(peer.parameters())
    total = steps_per_epoch * epochs
    if cfg.schedule == "cosine":
        opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=1e-4)
        warm, end = warmup_steps(total, cfg.warmup), 1 / 20

        def factor(step: int) -> float:
            if step < warm:
                return 1e-3 + (1 - 1e-3) * step / warm
            t = min(1.0, (step - warm) / max(1, total - warm))
            return end + (1 - end) * 0.5 * (1 + math.cos(math.pi * t))

        return opt, torch.optim.lr_scheduler.LambdaLR(opt, factor), None, cfg.clip if cfg.clip > 0 else None
    if cfg.schedule == "adamw":
        return torch.optim.AdamW(params, lr=1e-3, weight_decay=1e-4), None, None, None
    sgd = torch.optim.SGD(params, lr=0.01 * batch / 16, momentum=0.9, weight_decay=1e-4)
    warmup = max(1, min(1000, steps_per_epoch - 1))  # the reference: min(1000, len(data_loader) - 1) steps of epoch 0

    def first_epoch(step: int) -> float:  # the reference's LinearLR, stepped in epoch 0 only
        return 1e-3 + (1 - 1e-3) * min(step, warmup) / warmup

    per_step = torch.optim.lr_scheduler.LambdaLR(sgd, first_epoch)
    milestones = sorted({max(1, round(epochs * 2 / 3)), max(1, round(epochs * 8 / 9))})
    return sgd, per_step, torch.optim.lr_scheduler.MultiStepLR(sgd, milestones, gamma=0.1), CLIP_NORM.get(cfg.schedule)


def peer_batch(batch: dict[str, Tensor], size: int) -> tuple[list[Tensor], list[dict[str, Tensor]]]:
    """Our batch -> torchvision's images and targets (xyxy in input pixels, padding dropped)."""
    targets = []
    for boxes, labels in zip(batch["boxes"], batch["labels"]):
        keep = labels >= 0
        targets.append({"boxes": boxes[keep] * size, "labels": labels[keep]})
    return list(batch["images"]), targets


@torch.no_grad()
def peer_detections(peer: nn.Module, dm: DetectionDataModule, split: str, size: int):
    """The peer over a split: per-image detections and ground truth in original pixels."""
    peer.eval()
    detections, ground_truths = [], []
    for batch in dm.eval_dataloader(split):
        if not len(batch["images"]):
            continue
        out = peer(list(batch["images"]))
        dets = [{"boxes": o["boxes"] / size, "scores": o["scores"], "labels": o["labels"]} for o in out]
        detections += to_pixels(dets, batch["sizes"])
        ground_truths += targets_in_pixels(batch)
    return detections, ground_truths


def train_step(peer: nn.Module, batch: tuple[list[Tensor], list[dict[str, Tensor]]], optimizer, clip: float | None) -> Tensor:
    """One step of the peer: its loss (the sum of its terms), backward, clipping, the update.
    A non-finite loss is returned before any update."""
    loss = sum(peer(*batch).values())  # RetinaNet: focal + L1; FCOS: focal + GIoU + centerness
    if not torch.isfinite(loss):
        return loss.detach()
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if clip is not None:
        torch.nn.utils.clip_grad_norm_([p for g in optimizer.param_groups for p in g["params"]], clip)
    optimizer.step()
    return loss.detach()


def make_ema(peer: nn.Module, decay: float) -> nn.Module:
    """Lightning's ``EMAWeightAveraging`` as our configs use it: buffers averaged too; the first
    update copies."""
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    return AveragedModel(peer, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)


def run_peer(args: argparse.Namespace, setting: Setting, cfg: PeerConfig) -> dict[str, Any]:
    torch.manual_seed(args.seed)
    dm = DetectionDataModule(**setting.data)
    dm.setup("fit")
    names = dm.class_names
    size = setting.data["image_size"]
    boxes = training_boxes(setting)
    peer = build_peer(setting, len(names), cfg, boxes)
    anchors = {}
    if cfg.kind == "retinanet":
        anchors = {"anchor_coverage": coverage(boxes, grid_anchors(peer.anchor_generator, size, cfg.levels)),
                   "anchor_shapes": [[[round(float(v), 1) for v in (a[2] - a[0], a[3] - a[1])] for a in level]
                                     for level in peer.anchor_generator.cell_anchors]}
        print(f"{cfg.name}: {100 * anchors['anchor_coverage']:.1f} % of {len(boxes)} training boxes have an anchor at "
              f"IoU >= {POSITIVE_IOU} (anchors w x h per level: {anchors['anchor_shapes']})", file=sys.stderr, flush=True)
    loader = dm.train_dataloader()
    optimizer, per_step, per_epoch, clip = schedule(cfg, peer, dm.hparams.batch_size, len(loader), setting.epochs)
    ema = make_ema(peer, setting.ema_decay) if cfg.ema and setting.ema_decay is not None else None
    best, best_val, seen, steps, diverged = None, -1.0, 0, 0, None
    start = time.perf_counter()
    for epoch in range(setting.epochs):
        loader.sampler.set_epoch(epoch)
        set_training(peer, setting, epoch, cfg.frozen_bn)
        for batch in loader:
            if not len(batch["images"]):
                continue
            loss = train_step(peer, peer_batch(batch, size), optimizer, clip)
            if not torch.isfinite(loss):  # diverged: what a user keeps is the best checkpoint before it
                diverged = f"loss {float(loss)} at epoch {epoch + 1}"
                break
            steps += 1
            seen += len(batch["images"])
            if ema is not None:
                ema.update_parameters(peer)
            if per_step is not None and (cfg.schedule == "cosine" or epoch == 0):
                per_step.step()
        if diverged:
            print(f"{cfg.name}: diverged, {diverged}", file=sys.stderr, flush=True)
            break
        if per_epoch is not None:
            per_epoch.step()
        if (epoch + 1) % setting.val_every == 0 or epoch + 1 == setting.epochs:
            judged = peer if ema is None else ema.module
            val = score(*peer_detections(judged, dm, "val", size), names) if dm.jsons["val"] else {setting.monitor: epoch}
            print(f"{cfg.name} epoch {epoch + 1}/{setting.epochs} ({time.perf_counter() - start:.0f} s): loss {loss.item():.3f}, "
                  f"lr {optimizer.param_groups[0]['lr']:.2e}, val "
                  + ", ".join(f"{k} {val[k]:.3f}" for k in ("map_50", "map", "fitness") if k in val), file=sys.stderr, flush=True)
            val = val[setting.monitor]
            if val > best_val:
                best, best_val = copy.deepcopy(judged.state_dict()), val
    seconds = time.perf_counter() - start
    if best is None:
        raise FloatingPointError(f"{cfg.name} diverged before its first validation: {diverged}")
    judged = peer if ema is None else ema.module
    judged.load_state_dict(best)
    dm.setup("test")
    result = score(*peer_detections(judged, dm, "test", size), names)
    result.update(name=cfg.name, train_seconds=seconds, images_seen=seen, optimizer_steps=steps,
                  **{f"best_val_{setting.monitor}": best_val}, diverged=diverged, settings=vars(cfg).copy(), **anchors)
    return result


# ----------------------------------------------------------------------------------------- the tables


def tables(rows: list[dict[str, Any]]) -> str:
    def f(x: float) -> str:
        return "  n/a" if x != x else f"{x:.3f}"

    lines = [
        "| model | mAP@0.5 | COCO mAP | mAP@0.75 | small | medium | large | train s | images seen | steps |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        name = r["name"] + (f" (diverged: {r['diverged']}; its best checkpoint before)" if r.get("diverged") else "")
        lines.append(f"| {name} | " + " | ".join(f(r[k]) for k in KEYS)
                     + f" | {'n/a' if r['train_seconds'] != r['train_seconds'] else round(r['train_seconds'])}"
                     + f" | {r['images_seen']} | {r['optimizer_steps']} |")
    names = list(rows[0]["per_class_ap_50"])
    lines += ["", "| AP@0.5 per class | " + " | ".join(r["name"] for r in rows) + " |", "|---" * (len(rows) + 1) + "|"]
    for n in names:
        lines.append(f"| {n} | " + " | ".join(f(r["per_class_ap_50"][n]) for r in rows) + " |")
    return "\n".join(lines)


def commit() -> str:
    """The worktree's commit (``+dirty`` when bench/ or detector/ have uncommitted changes)."""
    try:
        head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--", "bench", "detector"],
                               capture_output=True, text=True, check=True).stdout.strip()
        return head + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, required=True, help="a training config (e.g. data/NAME/config.yaml)")
    parser.add_argument("--epochs", type=int, help="epochs of both sides (default: the config's recipe)")
    parser.add_argument("--batch-size", type=int, help="batch size of both sides (default: the config's)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads of each side (default 2)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--peers", nargs="+", choices=PEERS, default=list(PEERS), help="the peers (default: both)")
    parser.add_argument("--schedules", nargs="+", choices=SCHEDULES, default=["cosine"],
                        help="the peers' schedules, each a row (default: cosine)")
    parser.add_argument("--anchors", choices=ANCHORS, default="fitted", help="RetinaNet's anchors (default: fitted)")
    parser.add_argument("--anchors-per-level", type=int, default=6, help="fitted anchors per FPN level (default 6)")
    parser.add_argument("--levels", type=int, choices=(3, 5), help="FPN levels from P3 (default: 3 for the fitted "
                        "RetinaNet, 5 for torchvision's anchors and FCOS)")
    parser.add_argument("--frozen-bn", action="store_true", help="freeze every body BatchNorm, as torchvision's detection bodies")
    parser.add_argument("--no-ema", action="store_true", help="no EMA of the peers' weights")
    parser.add_argument("--lr", type=float, default=1e-3, help="the cosine schedule's peak learning rate (default 1e-3)")
    parser.add_argument("--warmup", type=float, default=0.1, help="the cosine schedule's warm-up, a share of the steps (default 0.1)")
    parser.add_argument("--clip", type=float, default=35.0, help="the cosine schedule's gradient norm clip (default 35; 0: none)")
    parser.add_argument("--fpn-channels", type=int, default=128, help="the peers' FPN and head width (default 128)")
    parser.add_argument("--skip-ours", action="store_true", help="train and score the peers only")
    parser.add_argument("--ours-run", type=Path, help="score this finished run folder (runs/NAME/vN) instead of training ours")
    parser.add_argument("--skip-peer", action="store_true", help="train and score ours only")
    parser.add_argument("--ours-args", default="", help="more arguments for our `detector train fit` (one string)")
    parser.add_argument("--name", help="our run's name (default: <the config's folder>_bench)")
    parser.add_argument("--runs", type=Path, default=Path("runs"), help="the folder of our runs (default: runs)")
    args = parser.parse_args(argv)
    if args.skip_ours and args.skip_peer:
        parser.error("--skip-ours and --skip-peer leave nothing to run")
    args.runs = args.runs.resolve()
    args.name = args.name or f"{args.config.resolve().parent.name}_bench"
    torch.set_num_threads(args.threads)
    setting = resolve(args.config, args.epochs, args.seed, args.batch_size)
    print(f"{args.config}: {setting.epochs} epochs ({setting.frozen_epochs} with the body frozen), "
          f"{setting.data['image_size']} px, batch {setting.data['batch_size']}, validation every {setting.val_every} epochs, "
          f"EMA decay {setting.ema_decay}", file=sys.stderr, flush=True)
    header = {"command": shlex.join([Path(sys.executable).name, *sys.argv]) if argv is None else shlex.join(argv),
              "commit": commit(), "date": datetime.datetime.now().isoformat(timespec="seconds")}
    rows = []
    if not args.skip_ours:
        rows.append(run_ours(args, setting))
        print("row:", json.dumps(rows[-1]), file=sys.stderr, flush=True)  # kept should a later row fail
    for kind in [] if args.skip_peer else args.peers:
        for name in args.schedules:
            cfg = PeerConfig(kind, name, args.anchors, args.frozen_bn, not args.no_ema, args.levels,
                             args.anchors_per_level, args.fpn_channels, args.lr, args.warmup, args.clip)
            rows.append(run_peer(args, setting, cfg))
            print("row:", json.dumps(rows[-1]), file=sys.stderr, flush=True)
    print(tables(rows))
    print(json.dumps({**header, "config": str(args.config), "epochs": setting.epochs, "image_size": setting.data["image_size"],
                      "batch_size": setting.data["batch_size"], "seed": args.seed, "threads": args.threads, "rows": rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
