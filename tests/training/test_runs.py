"""Run folders and run length: every ``fit`` a new ``runs/NAME/vN`` that nothing overwrites, resume
in the newest, ``--trainer.max_epochs`` scaling the recipe, nothing left by a run that fails before
it starts, and a summary that names files that exist."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pytest
import torch
import yaml
from PIL import Image

from detector.training.checkpoints import read_checkpoint
from detector.training.recipe import OneCycle, Stage, scale_stages
from helpers import detector, run_path, tiny_config


@pytest.fixture
def train(monkeypatch: pytest.MonkeyPatch):
    """``detector train ARGS`` in this process: (exit status, stderr), stdout captured by capsys."""
    for name in ("PL_GLOBAL_SEED", "PL_SEED_WORKERS", "CUBLAS_WORKSPACE_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    deterministic = torch.are_deterministic_algorithms_enabled()
    yield lambda *args: detector("train", *args)
    torch.use_deterministic_algorithms(deterministic)


def digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.glob("*.ckpt"))}


def test_each_fit_takes_a_new_version_and_resume_continues_the_newest(shapes, tmp_path, train, capsys):
    config = str(tiny_config(tmp_path, shapes, epochs=2))
    assert train("fit", "--config", config)[0] == 0
    first = digest(run_path(tmp_path, 1) / "checkpoints")
    assert set(first) == {"best.ckpt", "last.ckpt"} and (run_path(tmp_path, 1) / "config.yaml").is_file()
    results = run_path(tmp_path, 1) / "results" / "val"  # the last validation's, written at the end of the fit
    pictures = ["F1_curve", "PR_curve", "confusion_matrix", "confusion_matrix_normalized", "per_class_ap", "results"]
    pictures += ["errors", "worst_images"]  # the error analysis: worst_images from the val split's files
    assert sorted(p.name for p in results.iterdir()) == sorted([f"{n}.png" for n in pictures] + ["errors_per_image.csv", "metrics.json"])
    rows = (results / "errors_per_image.csv").read_text().splitlines()
    assert len(rows) == 1 + 7 and all(row.split(",")[1].startswith("val_") for row in rows[1:])  # the 7 val images, named
    assert "errors" in json.loads((results / "metrics.json").read_text())
    for name in pictures:
        with Image.open(results / f"{name}.png") as image:
            assert image.format == "PNG" and image.size[0] > 500, name
    code, err = train("fit", "--config", config, "--trainer.limit_train_batches", "1")
    assert code == 0, err[-3000:]
    assert digest(run_path(tmp_path, 1) / "checkpoints") == first  # v1 untouched by v2
    assert read_checkpoint(run_path(tmp_path, 2) / "checkpoints" / "last.ckpt")["epoch"] == 1
    assert (run_path(tmp_path, 2) / "csv" / "metrics.csv").is_file()
    capsys.readouterr()
    code, err = train("fit", "--config", config, "--ckpt_path", "last", "--trainer.max_epochs", "3", "--trainer.limit_train_batches", "1")
    assert code == 0, err[-3000:]
    out = capsys.readouterr().out
    assert sorted(p.name for p in (tmp_path / "runs" / "tiny").iterdir()) == ["v1", "v2"]  # resumed v2, made no v3
    assert read_checkpoint(run_path(tmp_path, 2) / "checkpoints" / "last.ckpt")["epoch"] == 2  # one epoch more
    assert f"run: {run_path(tmp_path, 2)}" in out
    for path in re.findall(r"checkpoint: (\S+)", out):  # the summary names files that exist
        assert Path(path).is_file(), out
    assert "detector eval --checkpoint" in out and "--split val" in out and f"results: {run_path(tmp_path, 2)}" in out


def test_a_run_that_fails_before_its_first_step_leaves_nothing(shapes, tmp_path, train):
    config = str(tiny_config(tmp_path, shapes, epochs=2))
    code, err = train("fit", "--config", config, "--data.batch_size", "99")
    assert code == 2 and "data.batch_size 99 is larger than the train split" in err
    assert not any((tmp_path / "runs" / "tiny").iterdir())
    code, err = train("fit", "--config", config, "--ckpt_path", "last")
    assert code == 2 and "no last.ckpt in any version of" in err, err


@pytest.mark.parametrize("epochs, lengths", [(5, [1, 4]), (2, [1, 1]), (9, [2, 7])])
def test_max_epochs_scales_every_stage_and_the_schedule_follows(shapes, tmp_path, train, epochs, lengths):
    """--trainer.max_epochs N on the tiny recipe (1 + 3 epochs): each stage keeps its share; the
    resolved config shows the stages; the learning rate's course is a native N-epoch recipe's.
    With 2 epochs, the short flags: --epochs N and --name NAME."""
    recipe = [Stage(1, "body"), Stage(3, "none", 0.5)]
    assert [s.epochs for s in scale_stages(recipe, epochs)] == lengths
    config = tiny_config(tmp_path, shapes, epochs=4)
    length = ["--epochs", str(epochs), "--name", "short"] if epochs == 2 else ["--trainer.max_epochs", str(epochs)]
    code, err = train("fit", "--config", str(config), *length, "--data.batch_size", "8", "--trainer.limit_val_batches", "0")
    assert code == 0, err[-3000:]
    run = tmp_path / "runs" / "short" / "v1" if epochs == 2 else run_path(tmp_path)
    assert sorted(p.name for p in run.parent.parent.iterdir()) == [run.parent.name]
    resolved = yaml.safe_load((run / "config.yaml").read_text())
    assert [s["epochs"] for s in resolved["model"]["init_args"]["stages"]] == lengths
    assert resolved["trainer"]["max_epochs"] == epochs
    assert read_checkpoint(run / "checkpoints" / "last.ckpt")["epoch"] == epochs - 1
    native = OneCycle(tuple(Stage(n, s.freeze, s.lr_mult) for n, s in zip(lengths, recipe)), steps_per_epoch=2)
    scaled = OneCycle(tuple(scale_stages(recipe, epochs)), steps_per_epoch=2)
    assert [scaled(i) for i in range(2 * epochs + 1)] == [native(i) for i in range(2 * epochs + 1)]


def test_predict_points_to_detector_predict(train):
    code, err = train("predict", "--config", "x.yaml")
    assert code == 2 and err.startswith("detector train: predicting is detector predict --checkpoint")
