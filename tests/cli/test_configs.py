"""Every shipped config parses with ``detector train``'s parser and passes the model checks, so a typo in a
YAML (a renamed option, an impossible grid) fails here and not an hour into someone's run."""

from __future__ import annotations

import sys
from dataclasses import asdict
from pathlib import Path

import pytest
import torch
import yaml

from detector.cli.train import cli
from detector.core.anchors import make_anchors
from detector.core.loss import LossConfig, SSDLoss
from detector.training.config import check_model_section
from helpers import REPO
from reference import random_targets, ssd_loss

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


def _resolved_model(config: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> dict:
    monkeypatch.setattr(sys, "argv", ["detector train"])
    with pytest.raises(SystemExit):
        cli(["fit", "--config", str(config), "--print_config"])
    return yaml.safe_load(capsys.readouterr().out)["model"]["init_args"]


@pytest.mark.parametrize("name", ["lesson9_ssd", "lesson9_ssd_4x4"])
def test_lesson_configs_train_the_lessons_loss(name: str, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch):
    """A config that names none of the tighter-box options (loss.box, quality, matching) resolves to
    their defaults and trains the lesson's loss exactly: the lesson's per-image loop, float64."""
    model = _resolved_model(REPO / "configs" / f"{name}.yaml", capsys, monkeypatch)
    loss = model["loss"]
    assert (loss["box"], loss["quality"], loss["matching"]) == ("coder", "none", "fixed")
    criterion = SSDLoss(**asdict(LossConfig(**loss)))  # as DetectorModule builds it
    anchors = make_anchors(**model["anchors"])
    gen = torch.Generator().manual_seed(0)
    boxes, labels = random_targets([3, 0, 7], 20, gen, torch.float64)
    cls_logits = torch.randn(3, len(anchors), 20, generator=gen, dtype=torch.float64) - 2
    box_deltas = torch.randn(3, len(anchors), 4, generator=gen, dtype=torch.float64)
    got = criterion(cls_logits, box_deltas, anchors, boxes, labels)
    want = ssd_loss(cls_logits, box_deltas, boxes, labels, anchors, reduction=loss["reduction"],
                    threshold=loss["iou_threshold"], focal=loss["focal"], alpha=loss["alpha"], gamma=loss["gamma"])
    for key in ("loc", "cls", "loss"):
        torch.testing.assert_close(got[key], want[key], rtol=1e-9, atol=1e-12)
