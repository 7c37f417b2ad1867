"""The search space file of ``detector tune`` (detector.research.search_space) and the config keys
the research commands read and write (detector.research.config_file)."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
import yaml

from detector.errors import ConfigError, MissingFileError
from detector.research.config_file import monitored, run_section, set_key
from detector.research.search_space import describe, override, read_space
from detector.research.tune import tune_folder
from helpers import REPO


def _space(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "space.yaml"
    path.write_text(text)
    return path


def test_each_kind_of_distribution_is_drawn_within_its_bounds(tmp_path: Path):
    space = read_space(_space(tmp_path, """
model.init_args.optimizer.lr: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}
model.init_args.head.dropout: {type: float, low: 0.0, high: 0.4, step: 0.1}
model.init_args.head.channels: {type: int, low: 64, high: 256, step: 64}
data.train_augment: {type: categorical, choices: [lesson, strong]}
model.init_args.anchors.zooms: [[1.0], [0.75, 1.0, 1.3]]
"""))
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen = []
    for _ in range(30):
        trial = study.ask()
        values = space.suggest(trial)
        study.tell(trial, 0.0)
        assert 1e-4 <= values["model.init_args.optimizer.lr"] <= 1e-2
        assert round(values["model.init_args.head.dropout"] * 10, 6) in (0, 1, 2, 3, 4)
        assert values["model.init_args.head.channels"] in (64, 128, 192, 256)
        assert values["data.train_augment"] in ("lesson", "strong")
        assert values["model.init_args.anchors.zooms"] in ([1.0], [0.75, 1.0, 1.3])  # a list again, not its JSON
        seen.append(values)
    assert len({v["model.init_args.optimizer.lr"] for v in seen}) == 30
    assert space.values(study.trials[0].params) == seen[0]
    assert space.overrides(seen[0])[4].startswith("--model.init_args.anchors.zooms=[")
    assert override("data.train_augment", "strong") == "--data.train_augment=strong"
    assert override("model.init_args.head.channels", 128) == "--model.init_args.head.channels=128"
    assert describe({"model.init_args.optimizer.lr": 0.0031234, "data.train_augment": "strong"}) == "lr=0.00312, train_augment=strong"


def test_the_example_space_reads():
    space = read_space(REPO / "configs" / "tune" / "space.yaml")
    assert {s.key.split(".")[0] for s in space.settings} <= {"model", "data"}
    assert len(space.settings) >= 3


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a.b: {type: normal, low: 0, high: 1}", "a.b: type must be one of float, int, categorical"),
        ("a.b: {type: float, low: 1, high: 0}", "a.b: .*low"),
        ("a.b: {type: float, low: 0, high: 1, log: true}", "a.b: .*log"),
        ("a.b: {type: float, low: 0, hgih: 1}", r"a.b: unknown keys \['hgih'\]"),
        ("a.b: {type: int, low: 0.5, high: 3}", "a.b: low must be an integer"),
        ("a.b: {type: categorical, choices: []}", "a.b: choices must be a non-empty list"),
        ("a.b: 0.3", "a.b: expected"),
        ("- a", "expected a mapping"),
        ("--lr: [1, 2]", "not a dotted config key"),
    ],
)
def test_a_bad_entry_is_one_line_naming_the_file_and_key(tmp_path: Path, text: str, message: str):
    path = _space(tmp_path, text)
    with pytest.raises(ConfigError, match=message) as error:
        read_space(path)
    assert str(path) in str(error.value) and "\n" not in str(error.value)


def test_a_missing_space_file_is_named(tmp_path: Path):
    with pytest.raises(MissingFileError, match="nowhere.yaml"):
        read_space(tmp_path / "nowhere.yaml")


def test_the_config_keys_research_reads_and_writes(tmp_path: Path):
    config = tmp_path / "exp.yaml"
    config.write_text(yaml.safe_dump({
        "trainer": {"callbacks": [
            {"class_path": "lightning.pytorch.callbacks.LearningRateMonitor"},
            {"class_path": "lightning.pytorch.callbacks.ModelCheckpoint", "init_args": {"filename": "last"}},
            {"class_path": "lightning.pytorch.callbacks.ModelCheckpoint", "init_args": {"monitor": "val/fitness", "mode": "max"}},
        ]},
        "model": {"init_args": {"head": {"dropout": 0.1}}},
    }))
    assert monitored(config) == ("val/fitness", "max")
    assert run_section(config) == ("exp", Path("runs"))
    raw = yaml.safe_load(config.read_text())
    set_key(raw, "model.init_args.head.dropout", 0.3)
    set_key(raw, "model.init_args.optimizer.lr", 0.01)
    assert raw["model"]["init_args"] == {"head": {"dropout": 0.3}, "optimizer": {"lr": 0.01}}
    with pytest.raises(ConfigError, match="model.init_args.head.dropout is 0.3"):
        set_key(raw, "model.init_args.head.dropout.low", 1)
    config.write_text("trainer: {}\nrun: {name: other, root: elsewhere}\n")
    assert run_section(config) == ("other", Path("elsewhere"))
    assert tune_folder(config) == Path("elsewhere/tune/other")  # each study its own folder: --study moves it
    assert tune_folder(config, "wide") == Path("elsewhere/tune/wide")
    with pytest.raises(ConfigError, match="no ModelCheckpoint"):
        monitored(config)


def test_the_configs_own_values_are_a_trial_when_it_has_them_all(tmp_path: Path):
    space = read_space(_space(tmp_path, """
model.init_args.optimizer.lr: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}
model.init_args.head.dropout: {type: float, low: 0.0, high: 0.4, step: 0.1}
model.init_args.anchors.zooms: [[1.0], [0.75, 1.0, 1.3]]
"""))
    config = {"model": {"init_args": {"optimizer": {"lr": 0.003}, "head": {"dropout": 0.2}, "anchors": {"zooms": [0.75, 1.0, 1.3]}}}}
    params = space.params_of(config)
    assert params == {"model.init_args.optimizer.lr": 0.003, "model.init_args.head.dropout": 0.2,
                      "model.init_args.anchors.zooms": "[0.75, 1.0, 1.3]"}
    assert space.values(params)["model.init_args.anchors.zooms"] == [0.75, 1.0, 1.3]
    for key, value in (("optimizer", {"lr": 0.05}), ("head", {"dropout": 0.25}), ("anchors", {"zooms": [0.5]}), ("head", {})):
        assert space.params_of({"model": {"init_args": {**config["model"]["init_args"], key: value}}}) is None, (key, value)
