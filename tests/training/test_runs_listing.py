"""``detector runs``: every run folder, its progress, best value and files, read from the folder alone."""

from __future__ import annotations

from pathlib import Path

import pytest

from detector.cli import main
from detector.training.runs import list_runs

CONFIG = """trainer:
  max_epochs: 6
  callbacks:
    - class_path: lightning.pytorch.callbacks.ModelCheckpoint
      init_args: {filename: best, monitor: val/fitness, mode: max}
    - class_path: lightning.pytorch.callbacks.ModelCheckpoint
      init_args: {filename: last}
"""


def fake_run(root: Path, name: str, version: int, log: str | None, checkpoints=("best", "last"), results=()) -> Path:
    run = root / name / f"v{version}"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.yaml").write_text(CONFIG)
    for c in checkpoints:
        (run / "checkpoints" / f"{c}.ckpt").write_bytes(b"")
    for r in results:
        (run / "results" / r).mkdir(parents=True)
    if log is not None:
        (run / "csv").mkdir()
        (run / "csv" / "metrics.csv").write_text(log)
    return run


LOG = "epoch,step,train/loss,val/fitness\n0,9,1.0,\n0,9,,0.20\n1,19,0.8,\n1,19,,0.35\n2,29,0.7,\n2,29,,0.31\n"


def test_list_runs_reads_progress_best_value_and_files(tmp_path: Path):
    fake_run(tmp_path, "bccd", 1, LOG, results=("test", "val"))
    fake_run(tmp_path, "bccd", 2, None, checkpoints=())
    fake_run(tmp_path, "alpha", 1, "epoch,step,val/fitness\n")
    runs = list_runs(tmp_path)
    assert [(r.run.name, r.run.version) for r in runs] == [("alpha", 1), ("bccd", 1), ("bccd", 2)]
    alpha, done, fresh = runs
    assert done.epochs == (3, 6) and done.monitor == "val/fitness" and done.best == (0.35, 1)
    assert done.checkpoints == ["best", "last"] and done.results == ["test", "val"]
    assert fresh.epochs == (0, 6) and fresh.best is None and fresh.checkpoints == [] and fresh.results == []
    assert alpha.best is None and alpha.started is not None
    assert [r.run.version for r in list_runs(tmp_path, "bccd")] == [1, 2]


def test_detector_runs_prints_a_line_per_run(tmp_path: Path, capsys: pytest.CaptureFixture):
    fake_run(tmp_path, "bccd", 1, LOG, results=("test",))
    fake_run(tmp_path, "bccd", 2, None, checkpoints=())
    assert main(["runs", "--root", str(tmp_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "| run | started | epochs | best | checkpoints | results |"
    assert lines[2].startswith("| bccd/v1 |") and "| 3/6 | val/fitness 0.3500 (epoch 1) | best, last | test |" in lines[2]
    assert lines[3].startswith("| bccd/v2 |") and "| 0/6 | val/fitness: not yet | - | - |" in lines[3]


def test_detector_runs_without_runs_says_so_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture):
    assert main(["runs", "--root", str(tmp_path / "none")]) == 2
    assert capsys.readouterr().err.strip() == (
        f"detector runs: no run folders in {tmp_path / 'none'}: train one with detector train fit --config CONFIG"
    )
