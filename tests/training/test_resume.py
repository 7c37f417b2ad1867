"""Resuming: a run killed (SIGKILL: nothing flushed) or crashed (an exception) in the middle of an
epoch, resumed with ``--ckpt_path last``, ends bit-identical to the uninterrupted run, with the same
CSV log; with an EMA of the weights too.

Every interruption happens at a point fixed by the code path (``tests/crash.py``), never by a timer.
The runs are tiny (conftest.py's ``shapes``: 16 + 7 shapes images at 64 px, ResNet-18 without
pretrained weights); the uninterrupted one is conftest.py's ``uninterrupted``. (These and the
checkpoint, bad-data, guard, configuration, DDP and evaluator tests were test_reliability.py.)
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from detector.training.checkpoints import read_checkpoint
from helpers import KILLED, assert_same_run, cli, run_path, tiny_config


@pytest.mark.parametrize("how, returncode", [("KillAt", KILLED), ("CrashAt", 1)])
def test_sigkill_or_crash_mid_epoch_then_resume_equals_uninterrupted_run(shapes: Path, uninterrupted: Path, tmp_path: Path, how: str, returncode: int):
    """SIGKILL (nothing flushed) or an exception (Lightning flushes the loggers, so the CSV holds
    rows from after the checkpoint, which the resumed run must replace, not repeat)."""
    config = tiny_config(tmp_path, shapes, epochs=2)
    kill = [f"--trainer.callbacks+=tests.crash.{how}", "--trainer.callbacks.init_args.epoch=1", "--trainer.callbacks.init_args.batch=2"]
    r = cli("fit", "--config", str(config), *kill, cwd=tmp_path)
    assert r.returncode == returncode, r.stderr[-3000:]
    assert read_checkpoint(run_path(tmp_path) / "checkpoints" / "last.ckpt")["epoch"] == 0  # epoch 1 was half done

    r = cli("fit", "--config", str(config), "--ckpt_path", "last", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert_same_run(uninterrupted, tmp_path)


def test_resume_with_ema_equals_uninterrupted_run(shapes: Path, tmp_path: Path):
    """With Lightning's EMAWeightAveraging (as configs/shapes.yaml): a crashed run resumed from
    last.ckpt continues both the raw weights and their average, bit for bit."""
    ema = ["--trainer.callbacks+=lightning.pytorch.callbacks.EMAWeightAveraging", "--trainer.callbacks.init_args.decay=0.5"]
    crash = ["--trainer.callbacks+=tests.crash.CrashAt", "--trainer.callbacks.init_args.epoch=1", "--trainer.callbacks.init_args.batch=2"]
    full, resumed = tmp_path / "full", tmp_path / "resumed"
    full.mkdir(), resumed.mkdir()
    r = cli("fit", "--config", str(tiny_config(full, shapes, epochs=2)), *ema, cwd=full)
    assert r.returncode == 0, r.stderr[-3000:]
    config = tiny_config(resumed, shapes, epochs=2)
    r = cli("fit", "--config", str(config), *ema, *crash, cwd=resumed)
    assert r.returncode == 1, r.stderr[-3000:]
    r = cli("fit", "--config", str(config), *ema, "--ckpt_path", "last", cwd=resumed)
    assert r.returncode == 0, r.stderr[-3000:]
    assert_same_run(full, resumed)  # the averages (the checkpoints' state_dict) and the logs
    raw = [read_checkpoint(run_path(root) / "checkpoints" / "last.ckpt")["current_model_state"] for root in (full, resumed)]
    assert all(torch.equal(raw[0][k], raw[1][k]) for k in raw[0])
    average = read_checkpoint(run_path(full) / "checkpoints" / "last.ckpt")["state_dict"]
    assert any(not torch.equal(average[k], raw[0][k]) for k in raw[0] if raw[0][k].is_floating_point())

