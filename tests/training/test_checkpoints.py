"""Checkpoints (``detector.training.checkpoints``): ``last.ckpt`` is written atomically (a kill while
it is written keeps the previous one, on any filesystem) and after every epoch, improved or not; a
checkpoint of another configuration is refused in one line, in ``fit``, ``validate`` and
``detector eval``.

Every interruption happens at a point fixed by the code path (``tests/crash.py``), never by a timer.
The runs are tiny (conftest.py's ``shapes``: 16 + 7 shapes images at 64 px, ResNet-18 without
pretrained weights). (Were test_reliability.py's.)
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from coco_files import write_json
from detector.errors import CheckpointError
from detector.training.checkpoints import read_checkpoint
from detector.training.recipe import Stage
from helpers import KILLED, REPO, assert_same_run, cli, datamodule, detector, last_checkpoint, module, run_path, tiny_config, trainer


def test_sigkill_while_writing_last_ckpt_keeps_the_previous_one(shapes: Path, uninterrupted: Path, tmp_path: Path):
    """Killed 1 MiB into writing epoch 1's last.ckpt: epoch 0's stays whole, and resuming from it
    gives the uninterrupted run; the half-written temporary file is cleared by the next save."""
    config = tiny_config(tmp_path, shapes, epochs=2)
    kill = ["--trainer.callbacks+=tests.crash.KillDuringSave", "--trainer.callbacks.init_args.nth=2"]
    r = cli("fit", "--config", str(config), *kill, cwd=tmp_path)
    assert r.returncode == KILLED, r.stderr[-3000:]
    folder = run_path(tmp_path) / "checkpoints"
    last = folder / "last.ckpt"
    partial = list(folder.glob(".last.ckpt.*.partial"))
    assert len(partial) == 1 and partial[0].stat().st_size == 1 << 20  # killed 1 MiB into the write
    assert read_checkpoint(last)["epoch"] == 0

    r = cli("fit", "--config", str(config), "--ckpt_path", "last", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert_same_run(uninterrupted, tmp_path)
    assert not list(folder.glob("*.partial"))


@pytest.mark.parametrize("io_class, survives", [("torch", False), ("atomic", True)])
def test_kill_during_save_with_temp_folder_on_another_filesystem(tmp_path: Path, io_class: str, survives: bool):
    """Why detector saves with AtomicCheckpointIO: Lightning 2.6's save stages the file in the
    system temp folder and moves it; across filesystems the move is a copy into the checkpoint,
    and a kill during it leaves the checkpoint truncated. Ours keeps the previous one."""
    path = tmp_path / "ckpt" / "last.ckpt"
    code = f"from tests.crash import save_twice_killed_in_second; save_twice_killed_in_second({io_class!r}, {str(path)!r})"
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True, timeout=300)
    assert r.returncode == KILLED, r.stderr[-3000:]
    if survives:
        assert read_checkpoint(path)["epoch"] == 0
    else:
        with pytest.raises(CheckpointError, match="cannot be read as a checkpoint"):
            read_checkpoint(path)


def test_last_ckpt_is_written_after_every_epoch_even_without_improvement(shapes: Path, tmp_path: Path):
    """The configs' two checkpoint callbacks: with ``save_top_k=0`` on the best one, no epoch ever
    "improves"; ``save_last=True`` there (Lightning 2.6.6) would then write no last.ckpt until
    training ends, and a kill in epoch 2 would lose both epochs. The monitor-less ``last`` one
    writes it after every epoch."""
    seen: dict[int, int | None] = {}

    class LastEpoch(L.Callback):
        def on_train_epoch_start(self, trainer, pl_module):
            last = tmp_path / "ckpt" / "last.ckpt"
            seen[trainer.current_epoch] = read_checkpoint(last)["epoch"] if last.exists() else None

    stages = [Stage(3, "none")]
    best = ModelCheckpoint(dirpath=tmp_path / "ckpt", monitor="val/map_50", mode="max", save_top_k=0)
    callbacks = [best, last_checkpoint(tmp_path / "ckpt"), LastEpoch()]
    trainer(tmp_path, stages, callbacks=callbacks, enable_checkpointing=True).fit(module(stages), datamodule(shapes))
    assert seen == {0: None, 1: 0, 2: 1}


def renamed_classes(root: Path, tmp_path: Path) -> Path:
    """The val split with the same number of classes under other names."""
    data = json.loads((root / "shapes_val.json").read_text())
    for c in data["categories"]:
        c["name"] = f"other_{c['name']}"
    return write_json(tmp_path / "renamed_val.json", data)


def test_checkpoint_of_another_configuration_is_refused_clearly(shapes: Path, uninterrupted: Path, tmp_path: Path, in_process_cli):
    """In fit and validate (other anchors, other class names), and in detector eval (other classes in
    the data, another task, hparams that do not describe the weights, a file cut short): one line,
    exit status 2."""
    ckpt = run_path(uninterrupted) / "checkpoints" / "last.ckpt"
    config = tiny_config(tmp_path, shapes, epochs=2)  # the checkpoint's configuration, but for what each case changes

    code, err = in_process_cli(["fit", "--config", str(config), "--ckpt_path", str(ckpt), "--model.init_args.anchors.grids=[4,2,1]"])
    assert code == 2 and f"detector train: checkpoint {ckpt} does not fit this model (DetectorModule): " in err, err[-3000:]
    assert "tensor(s) missing from the checkpoint (e.g. ['model.head." in err, err[-3000:]
    assert "Settings that differ: anchors: {'grids': [2, 1], " in err and "Use the configuration" in err, err[-3000:]

    renamed = renamed_classes(shapes, tmp_path)
    code, err = in_process_cli(["validate", "--config", str(config), "--ckpt_path", str(ckpt), "--data.train_json=null", f"--data.val_json={renamed}"])
    assert code == 2 and re.search(r"classes \['circle', .*\] in the checkpoint, \['other_circle', .*\] here", err), err[-3000:]

    out = str(tmp_path / "eval")

    def refused(*args: str) -> str:
        code, err = detector("eval", *args, "--out", out)
        assert code == 2 and len(err.splitlines()) == 1, err[-3000:]
        return err

    err = refused("--checkpoint", str(ckpt), "--json", str(renamed), "--image-dir", str(shapes / "JPEGImages"))
    assert re.search(r"detector eval: the data's classes \['other_circle', .*\] differ from the checkpoint's \['circle'", err), err

    checkpoint = read_checkpoint(ckpt)
    small = {k: checkpoint[k] for k in ("state_dict", "hyper_parameters", "pytorch-lightning_version")}
    task = tmp_path / "task.ckpt"
    torch.save({**small, "task_class": "detector.training.tasks.largest.LargestObjectClassifier"}, task)
    assert f"detector eval: {task} holds a LargestObjectClassifier, not the SSD (DetectorModule)" in refused("--checkpoint", str(task))
    alien = tmp_path / "alien.ckpt"
    anchors = {**small["hyper_parameters"]["anchors"], "grids": [4, 2, 1]}  # hparams that do not describe its weights
    torch.save({**small, "hyper_parameters": {**small["hyper_parameters"], "anchors": anchors}}, alien)
    err = refused("--checkpoint", str(alien))
    assert re.search(rf"detector eval: {alien}: the checkpoint does not fit this model \(DetectorModule\): .*11 tensor\(s\) missing", err), err

    cut = tmp_path / "cut.ckpt"
    cut.write_bytes(ckpt.read_bytes()[: 1 << 20])  # a copy cut short
    assert f"detector eval: {cut}: cannot be read as a checkpoint" in refused("--checkpoint", str(cut))
    with pytest.raises(CheckpointError, match=rf"{cut}: cannot be read as a checkpoint"):
        read_checkpoint(cut)
    code, err = in_process_cli(["fit", "--config", str(config), "--ckpt_path", str(cut)])
    assert code == 2 and f"detector train: --ckpt_path {cut}: cannot be read as a checkpoint" in err, err[-3000:]

