"""``detector tune``: search a config's settings with Optuna, each trial a run folder; several
workers started with the same command share one study (:mod:`detector.research.tune`)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from detector.cli import Parser

__all__ = ["main"]

DESCRIPTION = """Search a config's settings: Optuna's TPE sampler, median pruning, one run folder per trial.

  detector tune configs/raccoon.yaml --space configs/tune/space.yaml --trials 20
  detector tune configs/raccoon.yaml --space configs/tune/space.yaml --trials 20 --epochs 8   (shorter trials)

The trials are runs/tune/NAME/trial_K/vN; the study is runs/tune/NAME/study.db (SQLite): the same
command started again after a kill continues it. --trials is the study's total: every worker stops
when the study has that many. Several machines on one study, each started with the same command:
  --storage postgresql://user:password@host/db   (or mysql://...)
  --storage /shared/fs/study.log                 (Optuna's journal file, on a shared file system)
At the end: runs/tune/NAME/best.yaml (the config with the best values), history.png, importances.png.

The search space is a YAML of dotted config keys (configs/tune/space.yaml):
  model.init_args.optimizer.lr: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}
  data.train_augment: {type: categorical, choices: [lesson, strong]}"""


def main(argv: Sequence[str]) -> int:
    parser = Parser(prog="detector tune", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", type=Path, help="the training config to tune (YAML)")
    parser.add_argument("--space", type=Path, required=True, help="the search space (YAML: dotted key -> distribution)")
    parser.add_argument("--trials", type=int, required=True, help="the study's total number of trials, over every worker")
    parser.add_argument("--epochs", type=int, default=None, help="each trial's recipe length (default: the config's)")
    parser.add_argument("--storage", default=None, help="a database URL or a journal file path (default: runs/tune/NAME/study.db)")
    parser.add_argument("--study", default=None, help="the study's name and folder, runs/tune/STUDY (default: the config's run name)")
    parser.add_argument("--seed", type=int, default=None, help="the sampler's seed (one worker: a repeatable search)")
    args = parser.parse_args(argv)
    import optuna

    from detector.cli.train import train
    from detector.research.tune import tune

    def fit(train_argv: list[str], callbacks) -> object:
        return train(train_argv, callbacks, keep=(optuna.TrialPruned,)).run

    done = tune(args.config, args.space, args.trials, fit, args.storage, args.epochs, args.study, args.seed,
                echo=lambda line: print(line, flush=True))
    finished = [t for t in done.study.trials if t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)]
    print(f"study {done.study.study_name}: {len(finished)} trials finished ({len(done.ran)} by this worker)")
    baseline = next((t for t in finished if t.user_attrs.get("baseline")), None)
    if baseline is not None:
        value = f"{done.monitor} {baseline.value:.4f}" if baseline.value is not None else "pruned"
        print(f"the config's own values: trial {baseline.number}, {value}")
    if done.best is not None:
        print(f"best: trial {done.best.number}, {done.monitor} {done.best.value:.4f} ({done.best.user_attrs.get('run', '')})")
        print(f"wrote {done.best_config}" + "".join(f", {p}" for p in done.plots))
        print(f"next: detector train fit --config {done.best_config}")
    return 0
