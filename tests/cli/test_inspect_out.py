"""``detector inspect`` without ``--out`` writes beside the runs, as the other commands do."""

from __future__ import annotations

from pathlib import Path

import pytest

from detector.cli.inspect import default_out, main
from helpers import REPO


def test_without_out_the_pictures_go_to_runs_inspect_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    named = tmp_path / "config.yaml"
    named.write_text("run: {name: bccd}\nmodel: {}\n")
    plain = tmp_path / "debug.yaml"
    plain.write_text("model: {}\n")
    assert default_out(str(named), None) == Path("runs/inspect/bccd")  # what detector data import writes
    assert default_out(str(plain), None) == Path("runs/inspect/debug")
    checkpoint = tmp_path / "runs" / "bccd" / "v3" / "checkpoints" / "best.ckpt"
    assert default_out(str(named), str(checkpoint)) == tmp_path / "runs" / "bccd" / "v3" / "inspect"
    assert default_out(str(named), str(tmp_path / "loose.ckpt")) == Path("runs/inspect/bccd")


def test_inspect_anchors_without_out(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    repo = REPO
    monkeypatch.chdir(tmp_path)
    assert main(["anchors", "--config", str(repo / "configs" / "lesson9_ssd.yaml")]) == 0
    assert sorted(p.name for p in (tmp_path / "runs" / "inspect" / "lesson9_ssd").iterdir()) == ["anchors.png"]
