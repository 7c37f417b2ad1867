"""Reliability: nothing lost on a kill, bad data and bad configurations rejected by name, non-finite
losses caught, distributed metrics over every image exactly once, checkpoints that travel.

Every interruption here happens at a point fixed by the code path (``tests/crash.py``), never by a
timer. The runs are tiny (16 + 7 shapes images at 64 px, ResNet-18 without pretrained weights).
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from crash import PoisonAt
from detector.data.dataset import SkippedSample, collate_detections
from detector.data.records import BadRecordError
from detector.data.samplers import EpochSampler
from detector.errors import CheckpointError
from detector.training.tasks.detection import DetectorModule
from detector.training.recipe import Stage
from detector.training.checkpoints import read_checkpoint
from detector.evaluation.evaluator import evaluate, format_table
from detector.training.guards import NonFiniteLossError, NonFiniteWeightsError
from helpers import REPO, cli, datamodule, detector, final_weights, last_checkpoint, module, run_path, tiny_config, tiny_shapes, trainer
from helpers import evaluate as eval_cli

KILLED = -signal.SIGKILL  # subprocess's returncode for a child that died of SIGKILL


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_shapes(tmp_path_factory.mktemp("shapes"))


@pytest.fixture
def tiny_copy(tiny: Path, tmp_path: Path) -> Path:
    """A private copy of the tiny data, for tests that damage it."""
    return Path(shutil.copytree(tiny, tmp_path / "data"))


@pytest.fixture(scope="module")
def uninterrupted(tiny: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The reference: 2 epochs of ``train.py fit`` on the tiny config, never interrupted."""
    root = tmp_path_factory.mktemp("uninterrupted")
    r = cli("fit", "--config", str(tiny_config(root, tiny, epochs=2)), cwd=root)
    assert r.returncode == 0, r.stderr[-3000:]
    return root


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


# --------------------------------------------------------------------------- 1. kill and resume


@pytest.mark.parametrize("how, returncode", [("KillAt", KILLED), ("CrashAt", 1)])
def test_sigkill_or_crash_mid_epoch_then_resume_equals_uninterrupted_run(tiny: Path, uninterrupted: Path, tmp_path: Path, how: str, returncode: int):
    """SIGKILL (nothing flushed) or an exception (Lightning flushes the loggers, so the CSV holds
    rows from after the checkpoint, which the resumed run must replace, not repeat)."""
    config = tiny_config(tmp_path, tiny, epochs=2)
    kill = [f"--trainer.callbacks+=tests.crash.{how}", "--trainer.callbacks.init_args.epoch=1", "--trainer.callbacks.init_args.batch=2"]
    r = cli("fit", "--config", str(config), *kill, cwd=tmp_path)
    assert r.returncode == returncode, r.stderr[-3000:]
    assert read_checkpoint(run_path(tmp_path) / "checkpoints" / "last.ckpt")["epoch"] == 0  # epoch 1 was half done

    r = cli("fit", "--config", str(config), "--ckpt_path", "last", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert_same_run(uninterrupted, tmp_path)


def test_resume_with_ema_equals_uninterrupted_run(tiny: Path, tmp_path: Path):
    """With Lightning's EMAWeightAveraging (as configs/shapes.yaml): a crashed run resumed from
    last.ckpt continues both the raw weights and their average, bit for bit."""
    ema = ["--trainer.callbacks+=lightning.pytorch.callbacks.EMAWeightAveraging", "--trainer.callbacks.init_args.decay=0.5"]
    crash = ["--trainer.callbacks+=tests.crash.CrashAt", "--trainer.callbacks.init_args.epoch=1", "--trainer.callbacks.init_args.batch=2"]
    full, resumed = tmp_path / "full", tmp_path / "resumed"
    full.mkdir(), resumed.mkdir()
    r = cli("fit", "--config", str(tiny_config(full, tiny, epochs=2)), *ema, cwd=full)
    assert r.returncode == 0, r.stderr[-3000:]
    config = tiny_config(resumed, tiny, epochs=2)
    r = cli("fit", "--config", str(config), *ema, *crash, cwd=resumed)
    assert r.returncode == 1, r.stderr[-3000:]
    r = cli("fit", "--config", str(config), *ema, "--ckpt_path", "last", cwd=resumed)
    assert r.returncode == 0, r.stderr[-3000:]
    assert_same_run(full, resumed)  # the averages (the checkpoints' state_dict) and the logs
    raw = [read_checkpoint(run_path(root) / "checkpoints" / "last.ckpt")["current_model_state"] for root in (full, resumed)]
    assert all(torch.equal(raw[0][k], raw[1][k]) for k in raw[0])
    average = read_checkpoint(run_path(full) / "checkpoints" / "last.ckpt")["state_dict"]
    assert any(not torch.equal(average[k], raw[0][k]) for k in raw[0] if raw[0][k].is_floating_point())


def test_sigkill_while_writing_last_ckpt_keeps_the_previous_one(tiny: Path, uninterrupted: Path, tmp_path: Path):
    """Killed 1 MiB into writing epoch 1's last.ckpt: epoch 0's stays whole, and resuming from it
    gives the uninterrupted run; the half-written temporary file is cleared by the next save."""
    config = tiny_config(tmp_path, tiny, epochs=2)
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


# ------------------------------------------------------------------------------------ 2. bad data


def _write_json(path: Path, data: dict) -> Path:
    path.write_text(json.dumps(data))  # json writes float("nan") and float("inf") as NaN and Infinity
    return path


@pytest.mark.parametrize(
    "damage, message",
    [
        ("nan_box", r"shapes_train\.json: annotation id \d+ \(image id 3, train_00002\.jpg\): bbox has a NaN or infinite value: \[nan"),
        ("inf_box", r"shapes_train\.json: annotation id \d+ \(image id 3, train_00002\.jpg\): bbox has a NaN or infinite value: \[.*inf"),
        ("not_utf8", r"shapes_train\.json: not UTF-8 text \(byte 0"),
        ("truncated", r"shapes_train\.json: invalid or truncated JSON at line 1 column \d+"),
    ],
    ids=["nan_box", "inf_box", "not_utf8", "truncated"],
)
def test_bad_json_is_named_or_skipped(tiny_copy: Path, damage: str, message: str, caplog: pytest.LogCaptureFixture):
    """A box with NaN or inf fails by file and record, or under skip drops its image with a logged
    line; a file that is not UTF-8 or is cut short can hold no trustworthy record: it fails either way."""
    path = tiny_copy / "shapes_train.json"
    data = json.loads(path.read_text())
    if damage in ("nan_box", "inf_box"):
        ann = next(a for a in data["annotations"] if a["image_id"] == 3)
        if damage == "nan_box":
            ann["bbox"][0] = float("nan")
        else:
            ann["bbox"][2] = float("inf")
        _write_json(path, data)
    elif damage == "not_utf8":
        path.write_bytes(b"\xff\xfe" + path.read_bytes())
    else:
        path.write_bytes(path.read_bytes()[:-200])

    with pytest.raises(BadRecordError, match=message):
        datamodule(tiny_copy).setup("fit")
    if damage in ("not_utf8", "truncated"):
        with pytest.raises(BadRecordError, match=message):
            datamodule(tiny_copy, on_bad_record="skip").setup("fit")
        return
    with pytest.raises(BadRecordError, match=r"would skip 1 of 16 images \(6\.2%\)"):  # above max_skipped_fraction
        datamodule(tiny_copy, on_bad_record="skip").setup("fit")
    dm = datamodule(tiny_copy, on_bad_record="skip", max_skipped_fraction=0.1)
    with caplog.at_level(logging.WARNING):
        dm.setup("fit")
    assert 3 not in {r.image_id for r in dm.splits["train"].records}
    assert len(dm.splits["train"].records) == 15
    assert any(m.startswith("skipped: ") and re.search(message, m) for m in caplog.messages), caplog.messages


def test_collate_leaves_out_skipped_samples():
    sample = {
        "image": torch.rand(3, 8, 8), "boxes": torch.rand(2, 4), "labels": torch.tensor([0, 1]),
        "difficult": torch.tensor([False, True]), "image_id": 5, "size": (20, 30),
    }
    batch = collate_detections([SkippedSample(4, 8), sample, SkippedSample(6, 8)])
    assert batch["image_ids"].tolist() == [5] and batch["skipped_ids"].tolist() == [4, 6]
    assert batch["images"].shape == (1, 3, 8, 8) and batch["labels"].tolist() == [[0, 1]]
    empty = collate_detections([SkippedSample(4, 8), SkippedSample(6, 8)])
    assert empty["skipped_ids"].tolist() == [4, 6]
    shapes = {k: tuple(v.shape) for k, v in empty.items() if k != "skipped_ids"}
    assert shapes == {"images": (0, 3, 8, 8), "boxes": (0, 0, 4), "labels": (0, 0), "difficult": (0, 0), "image_ids": (0,), "sizes": (0, 2)}
    assert (empty["labels"].dtype, empty["difficult"].dtype) == (torch.int64, torch.bool)


class Damage(L.Callback):
    """At the start of the first epoch, damages the image files of the given train (and val) record
    indices: ``deleted``, ``truncated`` (its first 200 bytes kept: the header still reads) or
    ``resized`` (replaced by a valid JPEG of another size).

    No race with the loader: at that point Lightning has made the epoch's loader iterator and
    fetched its first batch; a worker (``prefetch_factor`` 2) has been asked for batches 0 to 2 at
    most. So a damaged image in the last batch (or, without workers, in any batch but the first)
    is read after the damage. Validation reads its images later still.
    """

    def __init__(self, indices: list[int], how: str, val_indices: tuple[int, ...] = ()) -> None:
        self.indices, self.how, self.val_indices = indices, how, val_indices

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.current_epoch != 0:
            return
        splits = trainer.datamodule.splits
        paths = [splits["train"].records[i].path for i in self.indices]
        paths += [splits["val"].records[i].path for i in self.val_indices]
        for path in paths:
            if self.how == "deleted":
                path.unlink()
            elif self.how == "truncated":
                path.write_bytes(path.read_bytes()[:200])
            else:
                from PIL import Image

                Image.new("RGB", (50, 40)).save(path)


def epoch_order(epoch: int = 0, seed: int = 0, length: int = 16) -> list[int]:
    """The train record indices in the order the loader of ``epoch`` takes them."""
    sampler = EpochSampler(length, seed=seed)
    sampler.set_epoch(epoch)
    return [i for _, i in sampler]


@pytest.mark.parametrize(
    "how, workers, message",
    [
        ("deleted", 0, r"file not found"),
        ("truncated", 0, r"cannot be decoded"),
        ("resized", 0, r"decoded as 50 x 40 \(width x height\), the JSON says \d+ x \d+"),
        ("truncated", 1, r"cannot be decoded"),  # raised in a worker process, re-raised in the main one
    ],
    ids=["deleted", "truncated", "resized", "truncated-in-worker"],
)
def test_image_going_bad_mid_run_stops_training_naming_it(tiny_copy: Path, tmp_path: Path, how: str, workers: int, message: str):
    victim = epoch_order()[13]  # in the last of 4 batches
    dm = datamodule(tiny_copy, num_workers=workers)
    dm.setup("fit")
    record = dm.splits["train"].records[victim]
    stages = [Stage(1, "none")]
    t = trainer(tmp_path, stages, callbacks=[Damage([victim], how)], limit_val_batches=0)
    with pytest.raises(BadRecordError) as info:
        t.fit(module(stages), dm)
    text = str(info.value)
    assert f"shapes_train.json: image id {record.image_id}" in text and record.path.name in text, text
    assert re.search(message, text) and "set data.on_bad_record: skip to drop it" in text, text
    assert t.global_step == 3  # stopped before the last batch, by name


class BatchLog(L.Callback):
    """Per training batch: its size, and whether the step changed any parameter."""

    def __init__(self) -> None:
        self.sizes: list[int] = []
        self.changed: list[bool] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._before = [p.detach().clone() for p in pl_module.parameters()]

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.sizes.append(len(batch["images"]))
        self.changed.append(any(not torch.equal(a, p) for a, p in zip(self._before, pl_module.parameters())))


def test_skip_mode_trains_on_past_images_that_go_bad_mid_run(tiny_copy: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture):
    """Under on_bad_record: skip, images deleted in the middle of a run are logged by name, dropped
    from their batches and counted; a batch left with no image (or one: BatchNorm) is skipped
    without touching the weights; training and validation finish."""
    order = epoch_order()  # batches of 4: order[0:4], order[4:8], ...
    gone = [order[4], order[8], order[9], order[10], order[11], order[12], order[13], order[14]]  # leaves 4, 3, 0, 1
    dm = datamodule(tiny_copy, on_bad_record="skip")
    dm.setup("fit")
    names = {dm.splits["train"].records[i].image_id: dm.splits["train"].records[i].path.name for i in gone}
    stages = [Stage(1, "none")]
    log = BatchLog()
    t = trainer(tmp_path, stages, callbacks=[Damage(gone, "deleted", val_indices=(0,)), log], num_sanity_val_steps=0)
    with caplog.at_level(logging.WARNING, logger="detector.data.datamodule"):
        t.fit(module(stages), dm)
    assert t.current_epoch == 1 and t.global_step == 4  # finished; the skipped steps still count
    assert log.sizes == [4, 3, 0, 1] and log.changed == [True, True, False, False]
    metrics = {k: float(v) for k, v in t.callback_metrics.items()}
    assert metrics["train/skipped_images"] == 8 and metrics["val/skipped_images"] == 1 and metrics["val/images"] == 6
    assert math.isfinite(metrics["val/map_50"])
    skipped = [m for m in caplog.messages if m.startswith("skipped at run time: ")]
    for image_id, name in names.items():
        assert any(f"shapes_train.json: image id {image_id}: " in m and name in m and "file not found" in m for m in skipped)


def test_eval_py_leaves_out_and_lists_images_gone_bad_under_skip(tiny_copy: Path, uninterrupted: Path):
    model = DetectorModule.load_from_checkpoint(run_path(uninterrupted) / "checkpoints" / "last.ckpt", map_location="cpu")
    dm = datamodule(tiny_copy, train_json=None, batch_size=2, on_bad_record="skip")
    dm.setup("validate")
    gone = dm.splits["val"].records[2:4]  # the whole second batch
    for record in gone:
        record.path.unlink()
    metrics = evaluate(model, dm, "val", torch.device("cpu")).summary
    assert metrics["skipped_images"] == [r.image_id for r in gone] and metrics["images"] == 5
    assert "5 images" in format_table(metrics) and "2 skipped as unreadable" in format_table(metrics)


def test_last_ckpt_is_written_after_every_epoch_even_without_improvement(tiny: Path, tmp_path: Path):
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
    trainer(tmp_path, stages, callbacks=callbacks, enable_checkpointing=True).fit(module(stages), datamodule(tiny))
    assert seen == {0: None, 1: 0, 2: 1}


# ------------------------------------------------------------------------------ 3. non-finite loss


def fit_poisoned(tmp_path: Path, poison: PoisonAt, **trainer_kw) -> tuple[L.Trainer, Path]:
    """A trainer for 3 epochs of 2 steps with ``poison``, saving ``last.ckpt`` every epoch."""
    stages = [Stage(3, "none")]
    folder = run_path(tmp_path) / "checkpoints"
    checkpoints = last_checkpoint(folder)
    t = trainer(
        tmp_path, stages, callbacks=[poison, checkpoints], enable_checkpointing=True, num_sanity_val_steps=0,
        limit_train_batches=2, **trainer_kw,
    )
    return t, folder / "last.ckpt"


def assert_last_good(last: Path, epoch: int) -> None:
    checkpoint = read_checkpoint(last)
    assert checkpoint["epoch"] == epoch
    assert all(torch.isfinite(v).all() for v in checkpoint["state_dict"].values() if v.is_floating_point())
    DetectorModule.load_from_checkpoint(last, map_location="cpu")  # and it loads as a model


def test_nan_loss_stops_naming_step_and_images_and_keeps_last_checkpoint(tiny: Path, tmp_path: Path):
    poison = PoisonAt(epoch=1, batch=1, when="start")
    t, last = fit_poisoned(tmp_path, poison, limit_val_batches=0)
    with pytest.raises(NonFiniteLossError) as info:
        t.fit(module([Stage(3, "none")]), datamodule(tiny))
    text = str(info.value)
    assert "non-finite training loss at global step 3 (epoch 1, batch 1)" in text, text
    assert f"image ids in the batch: {poison.image_ids}" in text and len(poison.image_ids) == 4, text
    assert f"last: {last}" in text
    assert_last_good(last, epoch=0)


@pytest.mark.parametrize("validate, doing", [(True, "validating"), (False, "saving a checkpoint")])
def test_nan_weights_after_an_epochs_last_step_are_never_validated_or_saved(tiny: Path, tmp_path: Path, validate: bool, doing: str):
    """No loss sees weights that turn NaN in the last step of an epoch before validation and the
    epoch's checkpoint: those refuse them, so last.ckpt stays the previous epoch's."""
    poison = PoisonAt(epoch=1, batch=1, when="end")
    t, last = fit_poisoned(tmp_path, poison, **({} if validate else {"limit_val_batches": 0}))
    with pytest.raises(NonFiniteWeightsError, match=rf"not finite at global step 4 \(epoch 1\), stopping before {doing}: 1 tensor"):
        t.fit(module([Stage(3, "none")]), datamodule(tiny))
    assert_last_good(last, epoch=0)


# ------------------------------------------------------------------------------ 4. configuration


@pytest.fixture
def in_process_cli(monkeypatch: pytest.MonkeyPatch):
    """``detector train ARGS`` run in this process, returning (exit status, stderr): undo the
    global state a run sets (seed variables, deterministic algorithms, the command line)."""
    for name in ("PL_GLOBAL_SEED", "PL_SEED_WORKERS", "CUBLAS_WORKSPACE_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(sys, "argv", list(sys.argv))
    deterministic = torch.are_deterministic_algorithms_enabled()
    yield lambda args: detector("train", *args)
    torch.use_deterministic_algorithms(deterministic)


@pytest.mark.parametrize(
    "override, message",
    [
        ("--model.init_args.backbone=resnet99", r"unknown backbone 'resnet99'; known backbones: resnet18, resnet34"),
        ("--model.init_args.anchors.grids=[5,1]",
         r"model\.init_args\.anchors\.grids \[5, 1\]: the SSD head cannot make a 5x5 grid from 64 px images .*\[8, 4, 2, 1\]"),
        ("--model.init_args.stages=[{epochs: 1, freeze: head}]",
         r"Parser key \"freeze\": Expected a typing\.Literal\['body', 'groups_0', 'none'\]\. Got value: head"),
        ("--data.batch_size=17",
         r"data\.batch_size 17 is larger than the train split \(16 images in .*shapes_train\.json\): set data\.batch_size to at most 16"),
        ("--data.image_dir=/no/such/folder", r"data\.image_dir: /no/such/folder is not a folder"),
        ("--data.train_json=/no/such.json", r"data\.train_json: /no/such\.json does not exist"),
    ],
    ids=["backbone", "grids", "freeze", "batch_size", "image_dir", "train_json"],
)
def test_bad_configuration_is_refused_before_training_in_one_line(tiny: Path, tmp_path: Path, in_process_cli, override: str, message: str):
    """Each mistake ends the command with exit status 2 and one line naming the key: no traceback."""
    config = tiny_config(tmp_path, tiny)
    code, err = in_process_cli(["fit", "--config", str(config), override])
    assert code == 2, err[-3000:]
    lines = [line for line in err.splitlines() if line.startswith("detector train: ")]
    assert len(lines) == 1 and re.search(message, lines[0]), err[-3000:]
    assert "Traceback" not in err
    assert not (tmp_path / "runs" / "tiny").exists() or not any((tmp_path / "runs" / "tiny").iterdir())  # nothing left


def test_recipe_naming_a_missing_group_is_refused_in_python_too():
    """Outside the CLI (a Stage built in Python, a checkpoint's hparams) no Literal check runs."""
    with pytest.raises(ValueError, match=r"stages\[1\]\.freeze = 'head' names no frozen layer groups: use one of body, groups_0, none"):
        module([Stage(1, "body"), Stage(1, "head")])


# ------------------------------------------------------- 5 + 6. distributed runs, portable checkpoints


def last_val(root: Path, name: str) -> dict[str, str]:
    """The last val/* row a ``validate`` of the run logged with a CSV logger called ``name``."""
    rows = list(csv.DictReader(open(run_path(root) / "validate" / name / "metrics.csv")))
    return {k: v for k, v in rows[-1].items() if k.startswith("val/")}


@pytest.mark.slow
def test_ddp_checkpoint_evaluates_every_image_once_in_one_or_two_processes_and_in_eval_py(tiny: Path, tmp_path: Path):
    """Train with 2 CPU processes (refused with plain DDP named: the recipe freezes groups; with no
    strategy flag, detector train chooses the one it needs); from that checkpoint, validate with 1
    and with 2 processes over 7 images (a padding sampler would evaluate 8), load it in this process
    and in eval.py."""
    config = tiny_config(tmp_path, tiny, epochs=2)
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


def test_non_finite_loss_on_one_ddp_process_stops_every_process_at_that_step(tiny: Path, tmp_path: Path):
    """A NaN on process 1 only: process 0 stops at the same step, naming it and saying the loss was
    another process's, rather than waiting for process 1's gradients. (Process 1's own message may
    not get printed: process 0, the launcher, kills it as it stops.)"""
    config = tiny_config(tmp_path, tiny, epochs=2)
    poison = [
        "--trainer.callbacks+=tests.crash.PoisonAt", "--trainer.callbacks.init_args.epoch=1",
        "--trainer.callbacks.init_args.batch=0", "--trainer.callbacks.init_args.rank=1",
    ]
    r = cli("fit", "--config", str(config), "--trainer.devices=2", "--trainer.strategy=ddp_find_unused_parameters_true", *poison, cwd=tmp_path)
    assert r.returncode != 0
    step = "non-finite training loss at global step 2 (epoch 1, batch 0)"
    assert f"{step} on process 0 of 2 (another process's loss was non-finite; this one's was finite)" in r.stderr, r.stderr[-3000:]
    assert_last_good(run_path(tmp_path) / "checkpoints" / "last.ckpt", epoch=0)


def test_eval_py_post_processing_can_be_overridden_and_is_recorded(uninterrupted: Path, tmp_path: Path):
    ckpt = str(run_path(uninterrupted) / "checkpoints" / "last.ckpt")
    common = ["--checkpoint", ckpt, "--batch-size", "4", "--workers", "0"]
    base = eval_cli(*common, "--out", str(tmp_path / "base"))
    strict = eval_cli(*common, "--out", str(tmp_path / "strict"), "--nms-iou", "0.1", "--score-threshold", "0.5")
    assert base["postprocess"]["iou_threshold"] == 0.4 and base["postprocess"]["score_threshold"] == 0.01
    written = {p.name for p in (tmp_path / "base").iterdir()}  # the results folder, beside the numbers
    assert {"PR_curve.png", "F1_curve.png", "confusion_matrix.png", "predictions.png", "detections.json"} <= written
    assert strict["postprocess"]["iou_threshold"] == 0.1 and strict["postprocess"]["score_threshold"] == 0.5
    counted = {name: json.loads((tmp_path / name / "detections.json").read_text()) for name in ("base", "strict")}
    assert len(counted["base"]) > len(counted["strict"]) and min(d["score"] for d in counted["base"]) >= 0.01
    assert all(d["score"] >= 0.5 for d in counted["strict"])
    code, err = detector("eval", *common, "--out", str(tmp_path / "bad"), "--nms-iou", "1.5")
    assert code == 2 and err.startswith("detector eval: --nms-iou must be in [0, 1]; got 1.5"), err


def renamed_classes(root: Path, tmp_path: Path) -> Path:
    """The val split with the same number of classes under other names."""
    data = json.loads((root / "shapes_val.json").read_text())
    for c in data["categories"]:
        c["name"] = f"other_{c['name']}"
    return _write_json(tmp_path / "renamed_val.json", data)


def test_checkpoint_of_another_configuration_is_refused_clearly(tiny: Path, uninterrupted: Path, tmp_path: Path, in_process_cli):
    """In fit and validate (other anchors, other class names), and in detector eval (other classes in
    the data, another task, hparams that do not describe the weights, a file cut short): one line,
    exit status 2."""
    ckpt = run_path(uninterrupted) / "checkpoints" / "last.ckpt"
    config = tiny_config(tmp_path, tiny, epochs=2)  # the checkpoint's configuration, but for what each case changes

    code, err = in_process_cli(["fit", "--config", str(config), "--ckpt_path", str(ckpt), "--model.init_args.anchors.grids=[4,2,1]"])
    assert code == 2 and f"detector train: checkpoint {ckpt} does not fit this model (DetectorModule): " in err, err[-3000:]
    assert "tensor(s) missing from the checkpoint (e.g. ['model.head." in err, err[-3000:]
    assert "Settings that differ: anchors: {'grids': [2, 1], " in err and "Use the configuration" in err, err[-3000:]

    renamed = renamed_classes(tiny, tmp_path)
    code, err = in_process_cli(["validate", "--config", str(config), "--ckpt_path", str(ckpt), "--data.train_json=null", f"--data.val_json={renamed}"])
    assert code == 2 and re.search(r"classes \['circle', .*\] in the checkpoint, \['other_circle', .*\] here", err), err[-3000:]

    out = str(tmp_path / "eval")

    def refused(*args: str) -> str:
        code, err = detector("eval", *args, "--out", out)
        assert code == 2 and len(err.splitlines()) == 1, err[-3000:]
        return err

    err = refused("--checkpoint", str(ckpt), "--json", str(renamed), "--image-dir", str(tiny / "JPEGImages"))
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
