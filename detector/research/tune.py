"""``detector tune CONFIG --space space.yaml --trials N``: a search of a config's settings with
Optuna, each trial a normal run folder.

- The study: TPE (``constant_liar``, so that workers running at once do not draw the same point)
  and median pruning (a trial whose monitored value after an epoch is below the median of the
  earlier trials' at that epoch stops; not before :data:`WARMUP_EPOCHS`, nor within the first
  :data:`STARTUP_TRIALS` trials) through ``optuna-integration``'s ``PyTorchLightningPruningCallback``,
  which imports ``lightning.pytorch`` and works with Lightning 2.6 as it is.
- The objective: the best value of what the config's ``best.ckpt`` monitors (``val/map_50``,
  ``val/fitness``), read from the trial's CSV log, maximised or minimised as its ``mode`` says.
- A trial is ``RUNS/tune/STUDY/trial_K/vN``: ``detector train fit`` with the trial's values as
  command-line overrides (:mod:`detector.research.search_space`), ``--epochs`` if given. The
  study's name (``--study``) is the config's run name unless given.
- The storage: a SQLite file ``RUNS/tune/STUDY/study.db`` by default, so that a killed search
  started again continues the same study; ``--storage URL`` (PostgreSQL, MySQL) or a file path
  (Optuna's journal file, for a shared file system) lets workers on several machines, each started
  with the same command, share one study.
- ``--trials N`` is the study's total: a worker starts a trial only while fewer than N trials are
  finished or running, and a trial that finds N trials ahead of it when it starts (two workers
  asked for the last one at the same moment) ends at once as failed, marked ``surplus``, without
  training. So the study ends with exactly N finished trials, none run twice. A trial left
  running by a killed worker is failed when a worker starts again: by Optuna's heartbeat on a
  database storage, or, on any storage, when the worker that ran it was on this machine and its
  process is gone.
- A new study's first trial is the config's own values (when it has every searched key, within
  its distribution), marked ``baseline``: the search starts from a known point, and its result
  says whether it beat the config at the same recipe length. Two workers opening a new study at
  the same moment can both enqueue it (Optuna's enqueue is not atomic): the later copy ends at
  once as failed, marked ``surplus``, without training.
- At the end of each worker, the best trial is written as a config (``best.yaml``: the base
  config with the best values set) and Optuna's matplotlib plots of the search beside it
  (``history.png``, ``importances.png``).

Training goes through ``fit`` (``detector train fit ARGS`` in this process with extra callbacks,
handed in by the command: the training command lives above this room).
"""

from __future__ import annotations

import os
import random
import socket
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import optuna
import yaml
from lightning.pytorch import Callback
from optuna.storages import JournalStorage, RDBStorage, fail_stale_trials
from optuna.storages.journal import JournalFileBackend
from optuna.trial import FrozenTrial, Trial, TrialState
from optuna_integration import PyTorchLightningPruningCallback
from sqlalchemy.exc import SQLAlchemyError

from detector.errors import ConfigError
from detector.research.config_file import load_yaml, monitored, run_section, set_key
from detector.research.search_space import SearchSpace, describe, read_space
from detector.training.guards import NonFiniteLossError, NonFiniteWeightsError
from detector.training.runs import RunFolder, summarize_run, versions

__all__ = ["HEARTBEAT_S", "STARTUP_TRIALS", "WARMUP_EPOCHS", "Surplus", "TuneResult", "open_storage", "tune", "tune_folder"]

STARTUP_TRIALS = 5  # median pruning starts once this many trials have finished (Optuna's default)
WARMUP_EPOCHS = 2  # ... and never stops a trial before its third epoch: the head-only stage is noisy
HEARTBEAT_S = 60  # a database storage hears from a running trial this often; one silent for 3x as long is failed

Fit = Callable[[list[str], Sequence[Callback]], RunFolder]  # ``detector train ARGS`` with callbacks -> the run's folder

TAKEN = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING, TrialState.WAITING)
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


class Surplus(Exception):
    """A trial created after the study already had its N trials: it ends without training."""


@dataclass
class TuneResult:
    """Where a search stands after this worker."""

    study: optuna.Study
    folder: Path
    storage: str
    monitor: str
    ran: list[int] = field(default_factory=list)  # the trials this worker ran
    best: FrozenTrial | None = None
    best_config: Path | None = None
    plots: list[Path] = field(default_factory=list)


def tune_folder(config: str | Path, study_name: str | None = None) -> Path:
    """``RUNS/tune/STUDY`` for a config's study: ``RUNS`` and the default study name from its
    ``run:`` section (else ``runs`` and the file's name). Each study its own folder: two studies of
    one config never share trial folders nor ``best.yaml``."""
    name, root = run_section(Path(config))
    return root / "tune" / (study_name or name)


def open_storage(storage: str | None, folder: Path) -> tuple[optuna.storages.BaseStorage, str]:
    """(the storage, how to name it): ``None`` -> ``folder/study.db`` (SQLite); a URL
    (``sqlite:///``, ``postgresql://``, ``mysql://``) -> a database; anything else -> the path
    of an Optuna journal file. Databases keep a heartbeat of running trials (:data:`HEARTBEAT_S`)."""
    if storage is None:
        folder.mkdir(parents=True, exist_ok=True)
        storage = f"sqlite:///{(folder / 'study.db').resolve()}"
    if "://" in storage:
        return _database(storage), storage
    path = Path(storage)
    path.parent.mkdir(parents=True, exist_ok=True)
    return JournalStorage(JournalFileBackend(str(path))), f"journal file {path}"


def _database(url: str, tries: int = 8) -> RDBStorage:
    """Optuna's database storage of ``url``. Workers started at once on a new database race to
    create its tables ("table ... already exists"): the loser waits a moment and opens the tables
    the winner made (Optuna has no lock for this)."""
    engine = {"connect_args": {"timeout": 120}} if url.startswith("sqlite") else None  # workers wait for SQLite's write lock
    for attempt in range(tries):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # the heartbeat's
                return RDBStorage(url, engine_kwargs=engine, heartbeat_interval=HEARTBEAT_S, grace_period=3 * HEARTBEAT_S)
        except SQLAlchemyError:
            if attempt == tries - 1:
                raise
            time.sleep(0.5 + random.random())
    raise AssertionError("unreachable")


def _worker() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _fail_orphans(study: optuna.Study) -> list[int]:
    """Fail the running trials whose worker ran on this machine and is gone (a killed search);
    a database's heartbeat fails those of other machines too."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # the heartbeat's, as in _database
        fail_stale_trials(study)  # a no-op without a heartbeat (the journal file has none)
    host, failed = socket.gethostname(), []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        worker = str(trial.user_attrs.get("worker", ""))
        name, _, pid = worker.rpartition(":")
        if name != host or not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            try:
                study.tell(trial.number, state=TrialState.FAIL)
                failed.append(trial.number)
            except (ValueError, RuntimeError, optuna.exceptions.UpdateFinishedTrialError):  # another worker got there first
                pass
        except PermissionError:  # alive, another user's
            pass
    return failed


def _first_baseline(study: optuna.Study) -> int | None:
    """The number of the study's first trial marked ``baseline`` (the config's own values)."""
    return min((t.number for t in study.get_trials(deepcopy=False) if t.user_attrs.get("baseline")), default=None)


def _count(study: optuna.Study, states: Sequence[TrialState]) -> int:
    return len(study.get_trials(deepcopy=False, states=tuple(states)))


def _full(study: optuna.Study, trials: int) -> bool:
    """The study has its ``trials`` finished or running, and no enqueued trial waits: an enqueued
    baseline counts as taken but still has to be run (or, a copy, ended as surplus)."""
    return _count(study, TAKEN) >= trials and not _count(study, (TrialState.WAITING,))


def tune(
    config: str | Path,
    space: str | Path | SearchSpace,
    trials: int,
    fit: Fit,
    storage: str | None = None,
    epochs: int | None = None,
    study_name: str | None = None,
    seed: int | None = None,
    pruner: optuna.pruners.BasePruner | None = None,
    echo: Callable[[str], None] = print,
) -> TuneResult:
    """Run trials of ``config``'s study until it has ``trials`` (module docstring); returns where
    the study stands, with ``best.yaml`` and the plots written.

    Args:
        space: the search space or its YAML file (:func:`detector.research.search_space.read_space`).
        fit: ``detector train ARGS`` in this process with extra callbacks, returning the run's
            folder; a trial it stops with ``optuna.TrialPruned`` keeps its folder.
        storage: see :func:`open_storage`.
        epochs: each trial's recipe length (default: the config's).
        study_name: default: the config's run name; the study's folder is ``RUNS/tune/STUDY``.
        seed: the TPE sampler's (one worker: a repeatable search; give each worker its own).
        pruner: instead of the median pruner.
    """
    config = Path(config)
    if trials < 1:
        raise ConfigError(f"--trials {trials}: give the study's total number of trials, at least 1")
    space = space if isinstance(space, SearchSpace) else read_space(space)
    monitor, mode = monitored(config)
    name, _ = run_section(config)
    folder = tune_folder(config, study_name)
    backend, shown = open_storage(storage, folder)
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # this module says what the study and each trial did
    study = optuna.create_study(
        study_name=study_name or name,
        storage=backend,
        sampler=optuna.samplers.TPESampler(seed=seed, constant_liar=True),
        pruner=pruner or optuna.pruners.MedianPruner(n_startup_trials=STARTUP_TRIALS, n_warmup_steps=WARMUP_EPOCHS),
        direction="maximize" if mode == "max" else "minimize",
        load_if_exists=True,
    )
    result = TuneResult(study, folder, shown, monitor)
    baseline = space.params_of(load_yaml(config))
    if baseline is not None and not study.trials:  # two workers opening a new study at once may both enqueue it: see objective
        study.enqueue_trial(baseline, user_attrs={"baseline": True}, skip_if_exists=True)
    orphans = _fail_orphans(study)
    if orphans:
        echo(f"failed trials {orphans}: their worker on this machine is gone (a killed search)")
    echo(f"study {study.study_name} in {shown}: {_count(study, FINISHED)} of {trials} trials finished, "
         f"{_count(study, (TrialState.RUNNING,))} running; optimising {monitor} ({mode})")

    def objective(trial: Trial) -> float:
        ahead = [t for t in study.get_trials(deepcopy=False, states=TAKEN) if t.number < trial.number]
        if len(ahead) >= trials:
            trial.set_user_attr("surplus", True)
            raise Surplus(f"trial {trial.number} not run: the study already has its {trials} trials (another worker took the last)")
        first = _first_baseline(study)
        if trial.user_attrs.get("baseline") and first is not None and first < trial.number:
            trial.set_user_attr("surplus", True)
            raise Surplus(f"trial {trial.number} not run: a copy of the baseline, trial {first} (two workers opened the new study at once)")
        trial.set_user_attr("worker", _worker())
        values = space.suggest(trial)
        argv = ["fit", "--config", str(config), "--run.root", str(folder), "--run.name", f"trial_{trial.number}", *space.overrides(values)]
        if epochs is not None:
            argv += ["--trainer.max_epochs", str(epochs)]
        echo(f"trial {trial.number}: {describe(values)}" + (" (the config's own values)" if trial.user_attrs.get("baseline") else ""))
        start = time.perf_counter()
        try:
            run = fit(argv, [PyTorchLightningPruningCallback(trial, monitor=monitor)])
        except optuna.TrialPruned as e:
            kept = versions(folder, f"trial_{trial.number}")
            where = str(RunFolder(folder, f"trial_{trial.number}", kept[-1]).path) if kept else "no run folder"
            trial.set_user_attr("run", where)
            result.ran.append(trial.number)
            echo(f"trial {trial.number}: {str(e).rstrip('.').lower()}, after {_took(start)}: {where}")
            raise
        trial.set_user_attr("run", str(run.path))
        result.ran.append(trial.number)
        best = summarize_run(run).best
        if best is None:
            raise ConfigError(f"trial {trial.number}: {run.path} logged no {monitor}: the trial must validate (trainer.check_val_every_n_epoch)")
        echo(f"trial {trial.number}: {monitor} {best[0]:.4f} (epoch {best[1]}) in {_took(start)}: {run.path}")
        return best[0]

    def stop_when_full(study: optuna.Study, _: FrozenTrial) -> None:
        if _full(study, trials):
            study.stop()

    if not _full(study, trials):
        study.optimize(objective, callbacks=[stop_when_full], catch=(Surplus, NonFiniteLossError, NonFiniteWeightsError),
                       gc_after_trial=True)
    _write_outputs(config, space, result, echo)
    return result


def _took(start: float) -> str:
    seconds = time.perf_counter() - start
    return f"{seconds:.1f}s" if seconds < 60 else f"{int(seconds // 60)}m{round(seconds % 60):02d}s"


def _write_outputs(config: Path, space: SearchSpace, result: TuneResult, echo: Callable[[str], None]) -> None:
    """``best.yaml`` and the plots, from the study as it stands (every worker writes them at its
    end; the last to finish has seen every trial)."""
    study = result.study
    if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        echo("no trial has finished: no best.yaml yet")
        return
    best = result.best = study.best_trial
    raw = load_yaml(config)
    for key, value in space.values(best.params).items():
        set_key(raw, key, value)
    set_key(raw, "run.name", f"{result.folder.name}_tuned")
    header = (f"# detector tune: the best of {len(study.trials)} trials of study {study.study_name} (trial {best.number}, "
              f"{result.monitor} {best.value:.4f}; {best.user_attrs.get('run', '')}):\n"
              f"# {config} with {describe(space.values(best.params))}. Its recipe is the config's, whatever --epochs the trials had.\n")
    result.best_config = _write_atomically(result.folder / "best.yaml", header + yaml.safe_dump(raw, sort_keys=False))
    result.plots = _plots(study, result.folder, result.monitor, echo)


def _write_atomically(path: Path, text: str) -> Path:
    """Write ``text`` through a temporary file: a worker reading ``path`` never sees half of it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}")
    temporary.write_text(text)
    os.replace(temporary, path)
    return path


def _plots(study: optuna.Study, folder: Path, monitor: str, echo: Callable[[str], None]) -> list[Path]:
    """Optuna's own matplotlib plots: the optimisation history and the settings' importances
    (fANOVA; it needs two finished trials that differ)."""
    from optuna.visualization.matplotlib import plot_optimization_history, plot_param_importances

    from detector.pictures.draw import save_figure  # selects matplotlib's file-only backend first

    written = []
    for filename, plot in (("history.png", plot_optimization_history), ("importances.png", plot_param_importances)):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            try:
                ax = plot(study, target_name=monitor)
            except (ValueError, RuntimeError) as e:
                echo(f"no {filename}: {' '.join(str(e).split())}")
                continue
        figure = ax.figure
        figure.set_size_inches(8, 5)
        figure.tight_layout()
        temporary = folder / f".{filename}.{os.getpid()}.png"
        save_figure(figure, temporary, dpi=100)
        os.replace(temporary, folder / filename)
        written.append(folder / filename)
    return written
