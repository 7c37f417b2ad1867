"""``detector tune``: trials as run folders, the study shared by workers started at once, pruning
through optuna-integration's Lightning callback, a killed search continued, ``best.yaml``.
Trials are one epoch of the tiny shapes data, without the results folder each fit writes at its
end (conftest's ``no_results_folder``: half a trial's time here; tests/training tests it)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.storages import JournalStorage, RDBStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

from detector.cli.train import train
from detector.research.tune import open_storage, tune
from helpers import REPO, tiny_config

LR = "model.init_args.optimizer.lr"
SPACE = f"""
{LR}: {{type: float, low: 1.0e-3, high: 3.0e-2, log: true}}
model.init_args.head.dropout: {{type: float, low: 0.0, high: 0.5}}
"""
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
# ``detector tune ARGS`` in a worker process, its fits without the results folder (as
# no_results_folder), and its first trial ending only once the other worker is in a trial too: a
# worker that starts late on a busy CPU would otherwise find the study's trials all taken.
WORKER = """
import os, sys, time
from pathlib import Path
from detector.training.dashboard import ResultsFolder

started = Path(os.environ["TUNE_TEST_STARTED"])

def fit_start(self, trainer, pl_module):
    (started / str(os.getpid())).touch()

def fit_end(self, trainer, pl_module):
    deadline = time.monotonic() + 300
    while len(list(started.iterdir())) < 2 and time.monotonic() < deadline:
        time.sleep(0.2)

ResultsFolder.on_fit_start, ResultsFolder.on_fit_end = fit_start, fit_end
from detector.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _setup(tmp_path: Path, make_shapes: Callable[..., Path], epochs: int = 1) -> tuple[Path, Path]:
    """A tiny config on the shared shapes data at 8 train and 4 val images whose recipe is
    ``epochs`` epochs of one stage, and a search space."""
    config = tiny_config(tmp_path, make_shapes(n_train=8, n_val=4))
    raw = yaml.safe_load(config.read_text())
    raw["model"]["init_args"]["stages"] = [{"epochs": epochs, "freeze": "none"}]
    config.write_text(yaml.safe_dump(raw))
    space = tmp_path / "space.yaml"
    space.write_text(SPACE)
    return config, space


def _fit(argv, callbacks):
    return train(argv, callbacks, keep=(optuna.TrialPruned,)).run


def _worker(config: Path, space: Path, trials: int, *storage: str) -> subprocess.Popen:
    started = config.parent / "workers_started"
    started.mkdir(exist_ok=True)
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline", "TUNE_TEST_STARTED": str(started)}
    return subprocess.Popen(
        [sys.executable, "-c", WORKER, "tune", str(config), "--space", str(space), "--trials", str(trials), *storage],
        cwd=config.parent, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )


# sqlite: the default storage, whose tables the two workers race to create; the journal file (a
# shared file system's storage): the same sharing, slow on this 2-core CPU with the other tests
@pytest.mark.parametrize("kind", ["sqlite", pytest.param("journal", marks=pytest.mark.slow)])
def test_two_workers_share_one_study_and_never_run_a_trial_twice(tmp_path: Path, make_shapes: Callable[..., Path], kind: str):
    config, space = _setup(tmp_path, make_shapes)
    folder = tmp_path / "runs" / "tune" / "tiny"
    journal = tmp_path / "shared" / "study.log"
    storage = ["--storage", str(journal)] if kind == "journal" else []  # sqlite: the default, runs/tune/NAME/study.db
    workers = [_worker(config, space, 3, *storage) for _ in range(2)]
    outputs = [w.communicate(timeout=600)[0] for w in workers]
    for worker, out in zip(workers, outputs):
        assert worker.returncode == 0, out[-4000:]
        assert "study tiny in" in out and "trials finished" in out
    backend = JournalStorage(JournalFileBackend(str(journal))) if kind == "journal" else RDBStorage(f"sqlite:///{folder / 'study.db'}")
    study = optuna.load_study(study_name="tiny", storage=backend)
    finished = [t for t in study.trials if t.state in FINISHED]
    assert len(finished) == 3
    for t in study.trials:  # a trial created after the 4th was taken ends at once, untrained
        assert t.state in FINISHED or (t.state == TrialState.FAIL and t.user_attrs.get("surplus")), t
    assert len({t.user_attrs["worker"] for t in finished}) == 2, outputs
    assert len({t.params[LR] for t in finished}) == 3
    (baseline,) = [t for t in finished if t.user_attrs.get("baseline")]  # run once, though both workers opened a new study
    assert baseline.number == 0 and baseline.params[LR] == pytest.approx(0.01) and baseline.state in FINISHED
    folders = sorted(p.name for p in folder.iterdir() if p.name.startswith("trial_"))
    assert folders == sorted(f"trial_{t.number}" for t in finished)
    for t in finished:  # one run per trial, trained with the trial's values
        assert [p.name for p in (folder / f"trial_{t.number}").iterdir()] == ["v1"]
        run = yaml.safe_load((folder / f"trial_{t.number}" / "v1" / "config.yaml").read_text())
        assert run["model"]["init_args"]["optimizer"]["lr"] == pytest.approx(t.params[LR])
        assert t.user_attrs["run"].endswith(f"trial_{t.number}/v1")
    best = yaml.safe_load((folder / "best.yaml").read_text())
    assert best["model"]["init_args"]["optimizer"]["lr"] == pytest.approx(study.best_trial.params[LR])
    assert best["model"]["init_args"]["head"]["dropout"] == pytest.approx(study.best_trial.params["model.init_args.head.dropout"])
    assert best["run"]["name"] == "tiny_tuned" and best["data"] == yaml.safe_load(config.read_text())["data"]
    assert (folder / "history.png").stat().st_size > 1000


def test_a_baseline_enqueued_twice_by_workers_opening_the_study_at_once_runs_once(tmp_path: Path, make_shapes: Callable[..., Path]):
    """Optuna's enqueue is not atomic: two workers opening a new study at the same moment can both
    enqueue the config's own values. The copy ends at once, untrained, as a surplus trial, and the
    study still gets its trials (the fits here stop as pruned at once: no training)."""
    config, space = _setup(tmp_path, make_shapes)
    backend, _ = open_storage(None, tmp_path / "runs" / "tune" / "tiny")
    raced = optuna.create_study(study_name="tiny", storage=backend, direction="maximize")
    for _ in range(2):
        raced.enqueue_trial({LR: 0.01, "model.init_args.head.dropout": 0.3}, user_attrs={"baseline": True})
    fitted: list[str] = []

    def fit(argv, callbacks):
        fitted.append(argv[argv.index("--run.name") + 1])
        raise optuna.TrialPruned("stopped before training")

    result = tune(config, space, 2, fit, echo=lambda _: None)
    assert fitted == ["trial_0", "trial_2"] and result.ran == [0, 2]
    states = {t.number: t.state for t in result.study.trials}
    assert states == {0: TrialState.PRUNED, 1: TrialState.FAIL, 2: TrialState.PRUNED}
    assert result.study.trials[1].user_attrs["surplus"] and result.study.trials[0].params[LR] == pytest.approx(0.01)


@pytest.mark.usefixtures("one_thread", "no_results_folder")
def test_a_pruned_trial_stops_after_the_epoch_it_was_pruned_at_and_keeps_its_logs(tmp_path: Path, make_shapes: Callable[..., Path]):
    """optuna-integration's PyTorchLightningPruningCallback with Lightning 2.6, through detector
    train: a pruner that prunes every value stops a 2-epoch trial after its first validation."""
    config, space = _setup(tmp_path, make_shapes, epochs=2)
    lines: list[str] = []
    result = tune(config, space, 1, _fit, storage=str(tmp_path / "study.log"),
                  pruner=optuna.pruners.ThresholdPruner(lower=2.0), echo=lines.append)
    (trial,) = result.study.trials
    assert trial.state == TrialState.PRUNED and list(trial.intermediate_values) == [0]
    log = Path(trial.user_attrs["run"]) / "csv" / "metrics.csv"
    rows = [r for r in log.read_text().splitlines()[1:] if r]
    assert log.is_file() and rows
    assert any("pruned at epoch 0" in line for line in lines), lines
    assert result.best is None and not (result.folder / "best.yaml").exists()


@pytest.mark.usefixtures("one_thread", "no_results_folder")
def test_a_killed_search_started_again_continues_its_study(tmp_path: Path, make_shapes: Callable[..., Path]):
    config, space = _setup(tmp_path, make_shapes)
    first = tune(config, space, 1, _fit, echo=lambda _: None)
    assert first.ran == [0] and (first.folder / "study.db").is_file()
    # a worker killed in the middle of trial 1: the trial stays running, its process is gone
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True).stdout.strip()
    orphan = first.study.ask()
    orphan.set_user_attr("worker", f"{socket.gethostname()}:{dead}")
    lines: list[str] = []
    again = tune(config, space, 2, _fit, echo=lines.append)
    assert any("failed trials [1]" in line for line in lines), lines
    assert again.ran == [2]
    states = {t.number: t.state for t in again.study.trials}
    assert states == {0: TrialState.COMPLETE, 1: TrialState.FAIL, 2: TrialState.COMPLETE}
    done = tune(config, space, 2, _fit, echo=lambda _: None)  # the study is complete: nothing more runs
    assert done.ran == [] and (done.folder / "best.yaml").is_file()
    assert done.best is not None and done.best.number in (0, 2)
