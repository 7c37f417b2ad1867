"""What the tests that train share: tiny shapes data (conftest.py's fixtures generate it), a module,
a DataModule and a Trainer for it, the same run through ``detector train`` (a YAML config, a
subprocess), the ``detector`` command run in this process, and the checks the resume, checkpoint,
guard and DDP tests make of a run's folder."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import lightning as L
import torch
import yaml
from lightning.pytorch.callbacks import ModelCheckpoint

from detector.data.datamodule import DetectionDataModule
from detector.data.shapes import generate_shapes
from detector.training.checkpoints import read_checkpoint
from detector.training.recipe import OptimizerConfig, Stage
from detector.training.tasks.detection import AnchorConfig, DetectorModule, HeadConfig

REPO = Path(__file__).resolve().parents[1]
KILLED = -signal.SIGKILL  # subprocess's returncode for a child that died of SIGKILL


def tiny_shapes(root: Path, n_train: int = 16, n_val: int = 7, image_size: int = 64) -> Path:
    """16 train and 7 val shapes images at about 64 px (7: an odd count, for the DDP tests), or
    another count or size; always seed 1. Tests take these from conftest's session fixtures
    (``shapes``, ``shapes_copy``, ``make_shapes``), which generate each size once."""
    generate_shapes(root, n_train=n_train, n_val=n_val, image_size=image_size, seed=1, workers=1)
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


def detector(*args: str) -> tuple[int, str]:
    """``detector ARGS`` run in this process: (exit status, what the command printed on stderr)."""
    from detector.cli import main

    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        try:
            code = main(list(args))
        except SystemExit as e:  # --help, or argparse before a subcommand runs
            code = e.code
    return code, err.getvalue()


def evaluate(*args: str) -> dict[str, Any]:
    """``detector eval ARGS`` (with ``--out``) in this process; returns the metrics.json it wrote."""
    code, err = detector("eval", *args)
    assert code == 0, err[-3000:]
    return json.loads((Path(args[list(args).index("--out") + 1]) / "metrics.json").read_text())


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "WANDB_MODE": "offline"}
    return subprocess.run([sys.executable, str(REPO / "train.py"), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def tiny_config(tmp_path: Path, root: Path, epochs: int = 2, extra_model: str = "", extra_data: str = "") -> Path:
    """A debug-style YAML on the tiny data, its runs in ``tmp_path/runs/tiny/vN`` (:func:`run_path`);
    ``extra_model`` and ``extra_data`` are YAML lines added to ``model.init_args`` and ``data``."""
    config = tmp_path / "tiny.yaml"
    config.write_text(
        f"""
seed_everything: 3
run: {{root: {tmp_path}/runs, name: tiny}}
trainer:
  accelerator: cpu
  devices: 1
  default_root_dir: {tmp_path}
  log_every_n_steps: 1
  enable_progress_bar: false
  enable_model_summary: false
  deterministic: true
  logger:
    - class_path: detector.training.CSVLogger
      init_args: {{save_dir: {tmp_path}, name: csv}}
  callbacks:
    - class_path: lightning.pytorch.callbacks.ModelCheckpoint
      init_args: {{dirpath: {tmp_path}/checkpoints, filename: best, monitor: val/map_50, mode: max, enable_version_counter: false}}
    - class_path: lightning.pytorch.callbacks.ModelCheckpoint
      init_args: {{dirpath: {tmp_path}/checkpoints, filename: last, save_on_train_epoch_end: true, enable_version_counter: false}}
model:
  class_path: detector.training.DetectorModule
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
{extra_data}
"""
    )
    return config


def run_path(root: Path, version: int = 1) -> Path:
    """The run folder a :func:`tiny_config` written into ``root`` trains into: ``root/runs/tiny/vN``."""
    return root / "runs" / "tiny" / f"v{version}"


def last_checkpoint(folder: Path) -> ModelCheckpoint:
    """The configs' ``last.ckpt`` callback: Lightning's, without a monitor, after every epoch."""
    return ModelCheckpoint(dirpath=folder, filename="last", save_on_train_epoch_end=True, enable_version_counter=False)


def final_weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]


def csv_rows(root: Path) -> list[dict[str, str]]:
    """Every row of the run's (only) CSV log: a resumed run writes on in the same run folder."""
    assert [p.name for p in (root / "runs" / "tiny").iterdir()] == ["v1"]
    return list(csv.DictReader(open(run_path(root) / "csv" / "metrics.csv")))


def assert_same_run(full: Path, resumed: Path) -> None:
    """Bit-identical final weights, and the same CSV log: every row the full run logged (train
    losses per step, val metrics per epoch), those from before the interruption included."""
    wa, wb = final_weights(run_path(full) / "checkpoints" / "last.ckpt"), final_weights(run_path(resumed) / "checkpoints" / "last.ckpt")
    assert wa.keys() == wb.keys()
    assert all(torch.equal(wa[k], wb[k]) for k in wa), [k for k in wa if not torch.equal(wa[k], wb[k])][:5]
    a, b = csv_rows(full), csv_rows(resumed)
    assert sorted(r["epoch"] for r in a if r.get("val/map_50")) == ["0", "1"]
    assert a == b


def assert_last_good(last: Path, epoch: int) -> None:
    checkpoint = read_checkpoint(last)
    assert checkpoint["epoch"] == epoch
    assert all(torch.isfinite(v).all() for v in checkpoint["state_dict"].values() if v.is_floating_point())
    DetectorModule.load_from_checkpoint(last, map_location="cpu")  # and it loads as a model


def small_debug_config(root: Path, n_val: int) -> Path:
    """``root/debug.yaml``: configs/debug.yaml with its (generated) data in ``root/shapes``, fewer and
    smaller images (6 train, ``n_val`` val, 64 px) and batch 4."""
    cfg = yaml.safe_load((REPO / "configs" / "debug.yaml").read_text())
    data = root / "shapes"
    cfg["data"].update(
        train_json=str(data / "shapes_train.json"),
        val_json=str(data / "shapes_val.json"),
        image_dir=str(data / "JPEGImages"),
        generate={"n_train": 6, "n_val": n_val, "image_size": 64},
        batch_size=4,
    )
    path = root / "debug.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path
