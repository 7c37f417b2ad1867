"""What ``detector train`` decides about distributed runs before any process starts: the DDP strategy
a freezing recipe needs, chosen when the strategy is left at ``auto`` (one command on one device or
many) and refused when plain DDP is named; and the run folder every process of one torchrun or
SLURM launch shares, never one an earlier launch left a marker for. The runs themselves are in
``tests/training/test_multinode.py`` and ``tests/training/test_ddp.py`` (slow)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from jsonargparse import Namespace

from detector.errors import ConfigError
from detector.training.plan import FIND_UNUSED, choose_strategy
from detector.training.runs import RunFolder, shared_new_run
from helpers import detector, tiny_config, tiny_shapes

FROZEN = [Namespace(epochs=1, freeze="body", lr_mult=1.0), Namespace(epochs=1, freeze="none", lr_mult=0.5)]
UNFROZEN = [Namespace(epochs=2, freeze="none", lr_mult=1.0)]


def config(strategy="auto", devices=1, num_nodes=1, accelerator="cpu", stages=FROZEN, **model) -> Namespace:
    trainer = Namespace(strategy=strategy, devices=devices, num_nodes=num_nodes, accelerator=accelerator)
    return Namespace(trainer=trainer, model=Namespace(init_args=Namespace(stages=stages, **model)))


@pytest.fixture(autouse=True)
def no_launcher(monkeypatch: pytest.MonkeyPatch):
    for name in ("WORLD_SIZE", "SLURM_NTASKS", "SLURM_JOB_ID", "SLURM_STEP_ID", "SLURM_PROCID", "TORCHELASTIC_RUN_ID",
                 "MASTER_PORT", "RANK"):
        monkeypatch.delenv(name, raising=False)


@pytest.mark.parametrize(
    "devices, num_nodes",
    [(2, 1), (-1, 2), ("2", 1), ("-1", 2), ([0, 1], 1), ("0,1", 1), (1, 2), ("auto", 2)],
)
def test_auto_on_several_processes_with_a_freezing_recipe_chooses_find_unused(devices, num_nodes):
    c = config(devices=devices, num_nodes=num_nodes)
    line = choose_strategy(c)
    assert c.trainer.strategy == FIND_UNUSED
    assert line == (f"trainer.strategy: {FIND_UNUSED} (model.init_args.stages[0] freezes layer groups, whose parameters "
                    "then get no gradient, which plain DDP refuses)")


def test_fixed_depthwise_kernels_need_it_too():
    c = config(devices=2, stages=UNFROZEN, train_depthwise=False)
    assert "train_depthwise: false leaves the body's depthwise kernels without a gradient" in choose_strategy(c)
    assert c.trainer.strategy == FIND_UNUSED


@pytest.mark.parametrize(
    "kw",
    [dict(devices=1), dict(devices="auto"), dict(devices="1"), dict(devices=[0]), dict(devices=2, stages=UNFROZEN),
     dict(devices=2, strategy=FIND_UNUSED), dict(devices=2, strategy="fsdp")],
    ids=["one", "auto-on-the-cpu", "one-str", "one-list", "no-freezing", "already", "not-ddp"],
)
def test_one_process_a_recipe_that_trains_everything_or_another_strategy_is_left_alone(kw):
    c = config(**kw)
    before = c.trainer.strategy
    assert choose_strategy(c) is None and c.trainer.strategy == before


@pytest.mark.parametrize("accelerator, devices, chosen", [("auto", "auto", True), ("gpu", -1, True), ("cpu", "auto", False)])
def test_auto_devices_count_the_machines_gpus(monkeypatch: pytest.MonkeyPatch, accelerator, devices, chosen):
    """The configs' ``accelerator: auto`` with ``devices: auto`` (or -1) on a 4-GPU machine is DDP."""
    monkeypatch.setattr("torch.cuda.device_count", lambda: 4)
    c = config(accelerator=accelerator, devices=devices)
    assert (choose_strategy(c) is not None) == chosen and (c.trainer.strategy == FIND_UNUSED) == chosen


def test_a_launcher_world_counts_as_several_processes(monkeypatch: pytest.MonkeyPatch):
    """torchrun --nproc-per-node 4 (or srun) with the config's devices: 1 still runs DDP."""
    monkeypatch.setenv("WORLD_SIZE", "4")
    c = config(devices=1)
    assert choose_strategy(c) and c.trainer.strategy == FIND_UNUSED


@pytest.mark.parametrize("strategy", ["ddp", "ddp_spawn", "ddp_find_unused_parameters_false",
                                      Namespace(class_path="lightning.pytorch.strategies.DDPStrategy", init_args=Namespace())])
def test_plain_ddp_named_explicitly_is_refused(strategy):
    with pytest.raises(ConfigError, match=re.escape(
            f"model.init_args.stages[0] freezes layer groups, whose parameters then get no gradient, which DDP refuses: "
            f"set trainer.strategy to {FIND_UNUSED} (or leave it at auto: detector train then chooses it)")):
        choose_strategy(config(strategy=strategy, devices=2))


def test_ddp_strategy_class_that_finds_unused_parameters_is_accepted():
    strategy = Namespace(class_path="lightning.pytorch.strategies.DDPStrategy", init_args=Namespace(find_unused_parameters=True))
    c = config(strategy=strategy, devices=2)
    assert choose_strategy(c) is None and c.trainer.strategy is strategy


def test_plain_ddp_is_refused_by_detector_train_before_anything_starts(tmp_path: Path):
    cfg = tiny_config(tmp_path, tiny_shapes(tmp_path / "data"))
    code, err = detector("train", "fit", "--config", str(cfg), "--trainer.devices=2", "--trainer.strategy=ddp")
    assert code == 2 and "detector train: model.init_args.stages[0] freezes layer groups" in err, err[-3000:]
    assert f"set trainer.strategy to {FIND_UNUSED} (or leave it at auto" in err and "Traceback" not in err
    assert not (tmp_path / "runs" / "tiny").exists() or not any((tmp_path / "runs" / "tiny").iterdir())


# ----------------------------------------------------------------------------------- run folders


def as_rank(monkeypatch: pytest.MonkeyPatch, rank: int, **ids: str) -> None:
    """This process as process ``rank`` of 2 of a launch with ``ids``: SLURM's variables (srun sets
    no RANK) or torchrun's."""
    world = {"SLURM_NTASKS": "2", "SLURM_PROCID": str(rank)} if "SLURM_JOB_ID" in ids else {"WORLD_SIZE": "2", "RANK": str(rank)}
    for name, value in {**world, **ids}.items():
        monkeypatch.setenv(name, value)


def test_every_process_of_a_slurm_step_shares_the_version_rank_0_reserved(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    (tmp_path / "tiny" / "v1").mkdir(parents=True)  # an earlier run
    as_rank(monkeypatch, 0, SLURM_JOB_ID="4711", SLURM_STEP_ID="0")
    assert shared_new_run(tmp_path, "tiny") == RunFolder(tmp_path, "tiny", 2)
    as_rank(monkeypatch, 1, SLURM_JOB_ID="4711", SLURM_STEP_ID="0")
    assert shared_new_run(tmp_path, "tiny") == RunFolder(tmp_path, "tiny", 2)


@pytest.mark.parametrize("first, second", [
    (dict(SLURM_JOB_ID="4711", SLURM_STEP_ID="0"), dict(SLURM_JOB_ID="4711", SLURM_STEP_ID="1")),  # two srun in one job
    (dict(TORCHELASTIC_RUN_ID="none", MASTER_PORT="41000"), dict(TORCHELASTIC_RUN_ID="none", MASTER_PORT="42000")),  # no --rdzv-id
], ids=["slurm-steps", "torchrun-default-id"])
def test_a_marker_left_by_an_earlier_launch_is_never_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, first, second):
    """Rank 1 of a second launch that starts before its rank 0 has reserved a version waits for
    that launch's marker instead of taking the first launch's version."""
    as_rank(monkeypatch, 0, **first)
    assert shared_new_run(tmp_path, "tiny").version == 1
    as_rank(monkeypatch, 1, **second)
    with pytest.raises(ConfigError, match=r"rank 1: rank 0 did not reserve a run folder within 0 s"):
        shared_new_run(tmp_path, "tiny", timeout=0.3)
    as_rank(monkeypatch, 0, **second)
    assert shared_new_run(tmp_path, "tiny").version == 2
    as_rank(monkeypatch, 1, **second)
    assert shared_new_run(tmp_path, "tiny").version == 2
