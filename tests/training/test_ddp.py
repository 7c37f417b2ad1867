"""Distributed runs (2 CPU processes): plain DDP is refused for a recipe that freezes groups;
validation over an odd number of images evaluates each exactly once, the same mAP in one process,
in two and in ``detector eval``; a non-finite loss on one process stops every process at that step.

The runs are tiny (conftest.py's ``shapes``: 16 + 7 shapes images at 64 px, 7 an odd count;
ResNet-18 without pretrained weights). (Were test_reliability.py's.)
"""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch

from detector.training.checkpoints import read_checkpoint
from detector.training.tasks.detection import DetectorModule
from helpers import assert_last_good, cli, run_path, tiny_config
from helpers import evaluate as eval_cli


def last_val(root: Path, name: str) -> dict[str, str]:
    """The last val/* row a ``validate`` of the run logged with a CSV logger called ``name``."""
    rows = list(csv.DictReader(open(run_path(root) / "validate" / name / "metrics.csv")))
    return {k: v for k, v in rows[-1].items() if k.startswith("val/")}


@pytest.mark.slow
def test_ddp_checkpoint_evaluates_every_image_once_in_one_or_two_processes_and_in_eval_py(shapes: Path, tmp_path: Path):
    """Train with 2 CPU processes (refused with plain DDP named: the recipe freezes groups; with no
    strategy flag, detector train chooses the one it needs); from that checkpoint, validate with 1
    and with 2 processes over 7 images (a padding sampler would evaluate 8), load it in this process
    and in eval.py."""
    config = tiny_config(tmp_path, shapes, epochs=2)
    ddp = ["--trainer.devices=2", "--trainer.strategy=ddp"]
    r = cli("fit", "--config", str(config), *ddp, cwd=tmp_path)  # the recipe freezes the body in stage 0
    assert r.returncode != 0 and "stages[0] freezes layer groups" in r.stderr, r.stderr[-3000:]
    assert "set trainer.strategy to ddp_find_unused_parameters_true" in r.stderr
    assert "Initializing distributed" not in r.stderr  # refused before any process started
    assert not (tmp_path / "runs" / "tiny").exists() or not any((tmp_path / "runs" / "tiny").iterdir())
    r = cli("fit", "--config", str(config), "--trainer.devices=2", cwd=tmp_path)  # the one command, as on one device
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stderr.count("trainer.strategy: ddp_find_unused_parameters_true (model.init_args.stages[0] freezes") == 1
    assert "sync_dist=True)` when logging on epoch level" not in r.stderr + r.stdout
    ckpt = run_path(tmp_path) / "checkpoints" / "last.ckpt"
    results = {}
    for devices in (1, 2):
        args = ["validate", "--config", str(config), "--ckpt_path", str(ckpt), f"--trainer.logger.init_args.name=validate{devices}"]
        r = cli(*args, *(ddp if devices == 2 else ["--trainer.devices=1"]), cwd=tmp_path)
        assert r.returncode == 0, r.stderr[-3000:]
        results[devices] = last_val(tmp_path, f"validate{devices}")
    assert results[1]["val/images"] == results[2]["val/images"] == "7.0"
    assert results[1]["val/skipped_images"] == "0.0" and results[1]["val/map_50"] != ""
    loss = {d: float(results[d].pop("val/loss")) for d in (1, 2)}
    assert results[1] == results[2]  # every mAP bit-identical: each image evaluated exactly once
    assert loss[1] == pytest.approx(loss[2], rel=1e-6)  # summed in another order across processes

    model = DetectorModule.load_from_checkpoint(ckpt, map_location="cpu")
    state = read_checkpoint(ckpt)["state_dict"]
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    metrics = eval_cli("--checkpoint", str(ckpt), "--out", str(tmp_path / "eval"), "--batch-size", "4", "--workers", "0")
    assert metrics["images"] == 7 and metrics["skipped_images"] == []
    assert metrics["map_50"] == pytest.approx(float(results[1]["val/map_50"]), rel=1e-6)
    assert metrics["map_50"] > 0  # two zeros would be equal too (a model or an evaluation that finds nothing)


def test_non_finite_loss_on_one_ddp_process_stops_every_process_at_that_step(shapes: Path, tmp_path: Path):
    """A NaN on process 1 only: process 0 stops at the same step, naming it and saying the loss was
    another process's, rather than waiting for process 1's gradients. (Process 1's own message may
    not get printed: process 0, the launcher, kills it as it stops.)"""
    config = tiny_config(tmp_path, shapes, epochs=2)
    poison = [
        "--trainer.callbacks+=tests.crash.PoisonAt", "--trainer.callbacks.init_args.epoch=1",
        "--trainer.callbacks.init_args.batch=0", "--trainer.callbacks.init_args.rank=1",
    ]
    r = cli("fit", "--config", str(config), "--trainer.devices=2", "--trainer.strategy=ddp_find_unused_parameters_true", *poison, cwd=tmp_path)
    assert r.returncode != 0
    step = "non-finite training loss at global step 2 (epoch 1, batch 0)"
    assert f"{step} on process 0 of 2 (another process's loss was non-finite; this one's was finite)" in r.stderr, r.stderr[-3000:]
    assert_last_good(run_path(tmp_path) / "checkpoints" / "last.ckpt", epoch=0)

