"""Our recipe against a standard detector, side by side: torchvision's RetinaNet + FPN over the same
body, trained for the same epochs on the same images, scored by the same metric code.

    .venv/bin/python bench/peer.py --config data/bccd/config.yaml [--epochs N] [--threads 2] [--seed 0]
        [--schedules adamw sgd sgd-clip] [--skip-ours | --skip-peer] [--ours-args "--model.init_args.loss.beta 0.5"]

For a training config (typically the one ``detector data import`` writes, with ``anchors: auto``):

* **ours**: ``detector train fit --config CONFIG --epochs N`` (plus ``--ours-args``) in a run folder
  ``runs/NAME/vN`` (``--name``, default ``<dataset>_bench``), then its ``best.ckpt`` (as ``detector
  eval`` picks) over the test split; ``--ours-run RUN_FOLDER`` scores a finished run instead.
* **the peer**: torchvision's ``RetinaNet`` (Lin et al. 2017: its anchors, 3 scales x 3 ratios at
  4 x stride on P3-P7; its matcher, IoU >= 0.5 / < 0.4 with low-quality matches; its sigmoid focal
  loss, alpha 0.25, gamma 2; its box coder with L1 loss; its NMS at 0.5) on an FPN (P6 and P7 from
  P5, as ``retinanet_resnet50_fpn``; ``--fpn-channels``, default 128: torchvision's ResNet-50 models
  use 256, which over this 0.4 GMAC body makes the peer's head ~12x the body's cost and a step ~10x
  ours on this CPU; EfficientDet-D0 uses 64 over this family of bodies) over the config's body and weights (the same
  ImageNet EfficientNet-Lite0 body). As torchvision's detection models do, the body's BatchNorm is
  frozen and its first stage (stem to stride 8, like ``trainable_backbone_layers=3``) never trains;
  for the config's first stage's epochs when it freezes the body, the whole body stays frozen, as
  ours does. One learning rate for every parameter, under each schedule of ``--schedules``:
  ``adamw`` (AdamW, lr 1e-3 constant, weight decay 1e-4) and ``sgd`` (torchvision's detection
  reference: lr 0.01 x batch / 16, momentum 0.9, weight decay 1e-4, linear warm-up from 1/1000 over
  the first epoch's steps up to 1000, x0.1 at 2/3 and 8/9 of the run); ``sgd-clip`` is that schedule
  with the gradient's L2 norm clipped at 35, as mmdetection's RetinaNet configs do (the reference
  schedule alone diverged on raccoon). Each schedule is a row: a
  claim that ours is ahead must hold against the better of them on each metric (so the peer is not
  a strawman).

Both sides: the same input size (the config's, or what ``anchors: auto`` chooses from the training
boxes), the same train loader (the config's split, batch size and augmentation preset, the same
seed, so the same images in the same order with the same augmentation), validation at the config's
cadence (scaled with ``--epochs`` as ``detector train`` scales it) keeping the weights of the best
value of what the config's ``best.ckpt`` monitors (``val/fitness`` = 0.1 mAP@0.5 + 0.9 COCO mAP in
imported configs), and the test split scored by :class:`detector.evaluation.metrics.DetectionMetrics` in original
image pixels (COCO by pycocotools, at most 100 detections per image, score threshold 0.01). Train
seconds are the wall time of each fit, validations included, on this machine as it was loaded
(compare ratios only within one run). Prints two tables (overall, per class AP@0.5) and one JSON line.
"""

from __future__ import annotations

import argparse
import copy
import inspect
import json
import os
import shlex
import subprocess
import sys
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from jsonargparse import Namespace
from torch import Tensor, nn

REPO = Path(__file__).resolve().parents[1]
sys.path[:] = [str(REPO)] + [p for p in sys.path[1:] if Path(p or ".").resolve() != REPO / "bench"]

from detector.autoanchor.choice import resolve_auto_anchors  # noqa: E402
from detector.core.postprocess import to_pixels  # noqa: E402
from detector.data.datamodule import DetectionDataModule  # noqa: E402
from detector.data.dataset import targets_in_pixels  # noqa: E402
from detector.deploy.loading import load_detector  # noqa: E402
from detector.evaluation.evaluator import evaluate  # noqa: E402
from detector.evaluation.metrics import DetectionMetrics, fitness  # noqa: E402
from detector.model.backbones import Backbone, backbone_stats, build_backbone  # noqa: E402
from detector.training.plan import recipe_stages, size_recipe  # noqa: E402
from detector.training.runs import find_run  # noqa: E402
from detector.training.tasks.staged import StagedModule  # noqa: E402

SCHEDULES = ("adamw", "sgd", "sgd-clip")
CLIP_NORM = {"sgd-clip": 35.0}  # mmdetection's RetinaNet configs clip the gradient's L2 norm at 35
KEYS = ("map_50", "map", "map_75", "map_small", "map_medium", "map_large")


@dataclass
class Setting:
    """What both sides share, resolved from the config as ``detector train`` resolves it."""

    data: dict[str, Any]  # the data module's arguments (image size, statistics, seed filled in)
    backbone: str
    weights: str
    epochs: int
    frozen_epochs: int  # the first stage's epochs when it freezes the whole body, else 0
    val_every: int
    monitor: str  # what best.ckpt keeps the best of (the config's first monitored checkpoint), without "val/"


def _namespace(value: Any) -> Any:
    """YAML mappings as the ``Namespace`` objects that ``detector train``'s config steps take."""
    if isinstance(value, dict):
        return Namespace(**{k: _namespace(v) for k, v in value.items()})
    return [_namespace(v) for v in value] if isinstance(value, list) else value


def resolve(config_path: Path, epochs: int | None, seed: int) -> Setting:
    """The config with ``--epochs`` applied (:func:`size_recipe`) and ``anchors: auto`` chosen."""
    config = _namespace(yaml.safe_load(config_path.read_text()))
    config.trainer.max_epochs = epochs
    size_recipe(config)
    resolve_auto_anchors(config)
    init = config.model.init_args
    backbone = init.get("backbone") or inspect.signature(StagedModule).parameters["backbone"].default
    first = recipe_stages(config)[0]
    frozen = first.epochs if first.freeze == "body" else 0
    data = config.data.as_dict()
    mean, std = backbone_stats(backbone)  # what `detector train` links from the backbone (detector.training.config)
    data.update(image_size=int(init.get("image_size", 224)), mean=mean, std=std, seed=seed)
    monitors = [c.init_args.monitor for c in config.trainer.get("callbacks") or []
                if str(c.get("class_path", "")).endswith("ModelCheckpoint") and c.get("init_args") and c.init_args.get("monitor")]
    return Setting(
        data, backbone, init.get("weights", "imagenet"), int(config.trainer.max_epochs), frozen,
        int(config.trainer.get("check_val_every_n_epoch") or 1), (monitors or ["val/map_50"])[0].removeprefix("val/"),
    )


def score(detections: list[dict[str, Tensor]], ground_truths: list[dict[str, Tensor]], names: list[str]) -> dict[str, Any]:
    """Per-image detections and ground truth in original pixels -> the table's numbers."""
    metric = DetectionMetrics(len(names))
    metric.update(detections, ground_truths)
    result = metric.compute()
    out = {k: float(result[k]) for k in KEYS}
    out["fitness"] = fitness(out["map_50"], out["map"])  # as the module logs it
    out["per_class_ap_50"] = {n: float(v) for n, v in zip(names, result["per_class"]["map_50"])}
    return out


# ----------------------------------------------------------------------------------------- ours


def run_ours(args: argparse.Namespace, setting: Setting) -> dict[str, Any]:
    """Train our recipe through the CLI, then score its best checkpoint on the test split."""
    if args.ours_run is None:
        command = [
            sys.executable, "-m", "detector", "train", "fit", "--config", str(args.config), "--epochs", str(setting.epochs),
            "--name", args.name, "--run.root", str(args.runs), "--seed_everything", str(args.seed),
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
    model = load_detector(folder / "checkpoints" / "best.ckpt")
    if model.image_size != setting.data["image_size"]:
        raise RuntimeError(f"ours trained at {model.image_size} px, the peer would train at {setting.data['image_size']}")
    dm = DetectionDataModule(**setting.data)
    found = evaluate(model, dm, "test", progress=False)
    result = score(found.detections, found.ground_truths, model.class_names)
    result.update(name=f"ours ({label})", train_seconds=seconds, images_seen=images_seen(dm, setting))
    return result


def images_seen(dm: DetectionDataModule, setting: Setting) -> int:
    dm.setup("fit")
    return len(dm.train_dataloader()) * dm.hparams.batch_size * setting.epochs


# ----------------------------------------------------------------------------------------- the peer


class BodyWithFPN(nn.Module):
    """Our body's maps at strides 8, 16, 32 -> FPN P3-P7 (``retinanet_resnet50_fpn``'s layout)."""

    def __init__(self, body: Backbone, channels: int = 256) -> None:
        super().__init__()
        from torchvision.ops.feature_pyramid_network import FeaturePyramidNetwork, LastLevelP6P7

        self.body = body
        self.fpn = FeaturePyramidNetwork(list(body.out_channels), channels, extra_blocks=LastLevelP6P7(channels, channels))
        self.out_channels = channels

    def forward(self, images: Tensor) -> OrderedDict[str, Tensor]:
        """``(B, 3, H, W)`` -> five ``(B, channels, H / s, W / s)`` maps, s = 8 ... 128."""
        return self.fpn(OrderedDict((str(i), x) for i, x in enumerate(self.body(images))))

    def train(self, mode: bool = True) -> BodyWithFPN:
        super().train(mode)
        for m in self.body.modules():  # frozen BatchNorm, as torchvision's detection bodies
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.eval()
        return self


def build_peer(setting: Setting, num_classes: int, channels: int = 128) -> nn.Module:
    """torchvision's RetinaNet over the config's body; inputs arrive resized and normalised."""
    from torchvision.models.detection import RetinaNet

    body = build_backbone(setting.backbone, setting.weights)
    for m in body.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.requires_grad_(False)
    body.body[0].requires_grad_(False)  # stem to stride 8: never trained (trainable_backbone_layers=3)
    size = setting.data["image_size"]
    return RetinaNet(
        BodyWithFPN(body, channels), num_classes, min_size=size, max_size=size, image_mean=[0.0] * 3, image_std=[1.0] * 3,
        score_thresh=0.01, detections_per_img=100,  # as our evaluation: threshold 0.01, COCO's 100 per image
    )


def trainable_body(peer: nn.Module) -> list[nn.Parameter]:
    """The body's parameters that train after the frozen epochs: stages 2 and 3, BatchNorm left out."""
    stages = list(peer.backbone.body.body)[1:]
    return [p for s in stages for m in s.modules() if not isinstance(m, nn.modules.batchnorm._BatchNorm)
            for p in m.parameters(recurse=False)]


def schedule(name: str, peer: nn.Module, batch: int, steps_per_epoch: int, epochs: int):
    """(optimiser, scheduler stepped every step of epoch 0 or None, scheduler stepped every epoch or None)."""
    body = {id(p) for p in peer.backbone.body.parameters()}
    params = [p for p in peer.parameters() if id(p) not in body] + trainable_body(peer)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=1e-3, weight_decay=1e-4), None, None
    sgd = torch.optim.SGD(params, lr=0.01 * batch / 16, momentum=0.9, weight_decay=1e-4)
    warmup = max(1, min(1000, steps_per_epoch - 1))  # the reference: min(1000, len(data_loader) - 1) steps of epoch 0
    per_step = torch.optim.lr_scheduler.LinearLR(sgd, start_factor=1e-3, total_iters=warmup)
    milestones = sorted({max(1, round(epochs * 2 / 3)), max(1, round(epochs * 8 / 9))})
    return sgd, per_step, torch.optim.lr_scheduler.MultiStepLR(sgd, milestones, gamma=0.1)


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


def train_step(peer: nn.Module, batch: tuple[list[Tensor], list[dict[str, Tensor]]], optimizer, schedule_name: str) -> Tensor:
    """One step of the peer: its loss (focal + L1), backward, the schedule's clipping, the update.
    A non-finite loss is returned before any update."""
    loss = sum(peer(*batch).values())  # {"classification": focal loss, "bbox_regression": L1}
    if not torch.isfinite(loss):
        return loss.detach()
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if schedule_name in CLIP_NORM:
        torch.nn.utils.clip_grad_norm_([p for g in optimizer.param_groups for p in g["params"]], CLIP_NORM[schedule_name])
    optimizer.step()
    return loss.detach()


def run_peer(args: argparse.Namespace, setting: Setting, schedule_name: str) -> dict[str, Any]:
    torch.manual_seed(args.seed)
    dm = DetectionDataModule(**setting.data)
    dm.setup("fit")
    names = dm.class_names
    size = setting.data["image_size"]
    peer = build_peer(setting, len(names), args.fpn_channels)
    loader = dm.train_dataloader()
    optimizer, per_step, per_epoch = schedule(schedule_name, peer, dm.hparams.batch_size, len(loader), setting.epochs)
    best, best_map, seen, diverged = None, -1.0, 0, None
    body = trainable_body(peer)
    start = time.perf_counter()
    for epoch in range(setting.epochs):
        for p in body:  # the whole body frozen for the config's first stage's epochs, as ours
            p.requires_grad_(epoch >= setting.frozen_epochs)
        loader.sampler.set_epoch(epoch)
        peer.train()
        for batch in loader:
            if not len(batch["images"]):
                continue
            loss = train_step(peer, peer_batch(batch, size), optimizer, schedule_name)
            if not torch.isfinite(loss):  # diverged: what a user keeps is the best checkpoint before it
                diverged = f"loss {float(loss)} at epoch {epoch + 1}"
                break
            if per_step is not None and epoch == 0:
                per_step.step()
            seen += len(batch["images"])
        if diverged:
            print(f"peer {schedule_name}: diverged, {diverged}", file=sys.stderr, flush=True)
            break
        if per_epoch is not None:
            per_epoch.step()
        if (epoch + 1) % setting.val_every == 0 or epoch + 1 == setting.epochs:
            val = score(*peer_detections(peer, dm, "val", size), names) if dm.jsons["val"] else {setting.monitor: epoch}
            print(f"peer {schedule_name} epoch {epoch + 1}/{setting.epochs}: loss {loss.item():.3f}, val "
                  + ", ".join(f"{k} {val[k]:.3f}" for k in ("map_50", "map", "fitness") if k in val), file=sys.stderr, flush=True)
            val = val[setting.monitor]
            if val > best_map:
                best, best_map = copy.deepcopy(peer.state_dict()), val
    seconds = time.perf_counter() - start
    if best is None:
        raise FloatingPointError(f"peer ({schedule_name}) diverged before its first validation: {diverged}")
    peer.load_state_dict(best)
    dm.setup("test")
    result = score(*peer_detections(peer, dm, "test", size), names)
    result.update(name=f"peer RetinaNet+FPN{args.fpn_channels}, {schedule_name}", train_seconds=seconds, images_seen=seen, **{f"best_val_{setting.monitor}": best_map}, diverged=diverged)
    return result


# ----------------------------------------------------------------------------------------- the tables


def tables(rows: list[dict[str, Any]]) -> str:
    def f(x: float) -> str:
        return "  n/a" if x != x else f"{x:.3f}"

    lines = [
        "| model | mAP@0.5 | COCO mAP | mAP@0.75 | small | medium | large | train s | images seen |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        name = r["name"] + (f" (diverged: {r['diverged']}; its best checkpoint before)" if r.get("diverged") else "")
        lines.append(f"| {name} | " + " | ".join(f(r[k]) for k in KEYS) + f" | {'n/a' if r['train_seconds'] != r['train_seconds'] else round(r['train_seconds'])} | {r['images_seen']} |")
    names = list(rows[0]["per_class_ap_50"])
    lines += ["", "| AP@0.5 per class | " + " | ".join(r["name"] for r in rows) + " |", "|---" * (len(rows) + 1) + "|"]
    for n in names:
        lines.append(f"| {n} | " + " | ".join(f(r["per_class_ap_50"][n]) for r in rows) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, required=True, help="a training config (e.g. data/NAME/config.yaml)")
    parser.add_argument("--epochs", type=int, help="epochs of both sides (default: the config's recipe)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads of each side (default 2)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--schedules", nargs="+", choices=SCHEDULES, default=list(SCHEDULES), help="the peer's schedules")
    parser.add_argument("--fpn-channels", type=int, default=128, help="the peer's FPN and head width (default 128)")
    parser.add_argument("--skip-ours", action="store_true", help="train and score the peer only")
    parser.add_argument("--ours-run", type=Path, help="score this finished run folder (runs/NAME/vN) instead of training ours")
    parser.add_argument("--skip-peer", action="store_true", help="train and score ours only (an ablation row)")
    parser.add_argument("--ours-args", default="", help="more arguments for our `detector train fit` (one string)")
    parser.add_argument("--name", help="our run's name (default: <the config's folder>_bench)")
    parser.add_argument("--runs", type=Path, default=Path("runs"), help="the folder of our runs (default: runs)")
    args = parser.parse_args(argv)
    if args.skip_ours and args.skip_peer:
        parser.error("--skip-ours and --skip-peer leave nothing to run")
    args.runs = args.runs.resolve()
    args.name = args.name or f"{args.config.resolve().parent.name}_bench"
    torch.set_num_threads(args.threads)
    setting = resolve(args.config, args.epochs, args.seed)
    print(f"{args.config}: {setting.epochs} epochs ({setting.frozen_epochs} with the body frozen), "
          f"{setting.data['image_size']} px, validation every {setting.val_every} epochs", file=sys.stderr, flush=True)
    rows = []
    if not args.skip_ours:
        rows.append(run_ours(args, setting))
        print("row:", json.dumps(rows[-1]), file=sys.stderr, flush=True)  # kept should a later row fail
    for name in [] if args.skip_peer else args.schedules:
        rows.append(run_peer(args, setting, name))
        print("row:", json.dumps(rows[-1]), file=sys.stderr, flush=True)
    print(tables(rows))
    print(json.dumps({"config": str(args.config), "epochs": setting.epochs, "image_size": setting.data["image_size"],
                      "seed": args.seed, "threads": args.threads, "rows": rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
