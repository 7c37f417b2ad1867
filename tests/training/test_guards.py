"""Non-finite losses and weights (``detector.training.guards``): a NaN loss stops training at that
step, naming the step and the images; weights that turn NaN in an epoch's last step are never
validated or saved; ``last.ckpt`` stays the last good one.

The poison is put in at a point fixed by the code path (``tests/crash.py``). The runs are tiny
(conftest.py's ``shapes``: 16 + 7 shapes images at 64 px, ResNet-18 without pretrained weights).
(Were test_reliability.py's.)
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest

from crash import PoisonAt
from detector.training.guards import NonFiniteLossError, NonFiniteWeightsError
from detector.training.recipe import Stage
from helpers import assert_last_good, datamodule, last_checkpoint, module, run_path, trainer


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


def test_nan_loss_stops_naming_step_and_images_and_keeps_last_checkpoint(shapes: Path, tmp_path: Path):
    poison = PoisonAt(epoch=1, batch=1, when="start")
    t, last = fit_poisoned(tmp_path, poison, limit_val_batches=0)
    with pytest.raises(NonFiniteLossError) as info:
        t.fit(module([Stage(3, "none")]), datamodule(shapes))
    text = str(info.value)
    assert "non-finite training loss at global step 3 (epoch 1, batch 1)" in text, text
    assert f"image ids in the batch: {poison.image_ids}" in text and len(poison.image_ids) == 4, text
    assert f"last: {last}" in text
    assert_last_good(last, epoch=0)


@pytest.mark.parametrize("validate, doing", [(True, "validating"), (False, "saving a checkpoint")])
def test_nan_weights_after_an_epochs_last_step_are_never_validated_or_saved(shapes: Path, tmp_path: Path, validate: bool, doing: str):
    """No loss sees weights that turn NaN in the last step of an epoch before validation and the
    epoch's checkpoint: those refuse them, so last.ckpt stays the previous epoch's."""
    poison = PoisonAt(epoch=1, batch=1, when="end")
    t, last = fit_poisoned(tmp_path, poison, **({} if validate else {"limit_val_batches": 0}))
    with pytest.raises(NonFiniteWeightsError, match=rf"not finite at global step 4 \(epoch 1\), stopping before {doing}: 1 tensor"):
        t.fit(module([Stage(3, "none")]), datamodule(shapes))
    assert_last_good(last, epoch=0)

