"""Every shipped config parses with ``detector train``'s parser and passes the model checks, so a typo in a
YAML (a renamed option, an impossible grid) fails here and not an hour into someone's run."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import yaml

from detector.cli.train import cli
from detector.training.config import check_model_section
from helpers import REPO

CONFIGS = sorted((REPO / "configs").glob("*.yaml"))


def test_every_config_is_tested():
    names = {c.stem for c in CONFIGS}
    assert {"shapes", "debug", "lesson9_ssd", "lesson9_ssd_4x4", "bccd", "raccoon"} <= names, names


@pytest.mark.parametrize("config", CONFIGS, ids=[c.stem for c in CONFIGS])
def test_config_parses_and_passes_the_model_checks(config: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(sys, "argv", ["detector train"])  # the CLI reads its arguments from `args` only
    with pytest.raises(SystemExit) as info:
        cli(["fit", "--config", str(config), "--print_config"])
    assert info.value.code in (0, None), capsys.readouterr().err[-3000:]
    resolved = yaml.safe_load(capsys.readouterr().out)
    model = resolved["model"]
    assert model["class_path"].startswith("detector.")
    assert model["init_args"]["stages"], "a recipe needs at least one stage"
    assert check_model_section(yaml.safe_load(config.read_text())["model"]) == []
