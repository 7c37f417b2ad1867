"""``detector train``: LightningCLI over the tasks and the detection data module.

    detector train fit      --config configs/shapes.yaml                 # one GPU, or the CPU
    detector train fit      --config configs/shapes.yaml --trainer.devices -1   # every GPU (DDP)
    detector train fit      --config configs/shapes.yaml --ckpt_path last   # resume
    detector train validate --config configs/shapes.yaml --ckpt_path best
    detector train lr_find  --config configs/shapes.yaml                 # lr_find.png + a suggestion

The config links the values that must agree (:func:`detector.training.config.add_links`, plus the recipe's
length -> ``trainer.max_epochs``). Before anything is built, the model section is checked and the
checkpoint given with ``--ckpt_path`` is read; with ``fit --ckpt_path`` the loggers continue the
interrupted run's versions.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import shutil
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from jsonargparse import ArgumentError, DefaultHelpFormatter
from lightning.pytorch import Callback, Trainer
from lightning.pytorch.cli import LightningCLI, SaveConfigCallback
from lightning.pytorch.utilities import rank_zero_info

from detector.autoanchor.choice import resolve_auto_anchors
from detector.cli.private_apis import ConfigDecidesModel
from detector.data.datamodule import DetectionDataModule
from detector.errors import CheckpointError, ConfigError
from detector.training.checkpoints import read_checkpoint
from detector.training.config import add_links, check_model_section
from detector.training.lr_finder import lr_range_test
from detector.training.plan import choose_strategy, place_run, size_recipe, summary
from detector.training.runs import INHERITED, RunConfig, RunFolder
from detector.training.tasks.staged import StagedModule

__all__ = ["DetectorCLI", "DetectorTrainer", "main", "train"]

DESCRIPTION = """Train, validate or test with a config, or find a learning rate.

  detector train fit --config configs/shapes.yaml                       (a new run: runs/shapes/vN)
  detector train fit --config configs/shapes.yaml --epochs 5 --name try (the recipe scaled to 5 epochs)
  detector train fit --config configs/shapes.yaml --ckpt_path last      (resume the newest run)
  detector train validate --config configs/shapes.yaml --ckpt_path best
  detector train lr_find --config configs/shapes.yaml

--name NAME is --run.name NAME and --epochs N is --trainer.max_epochs N. Any value of the config
can be changed on the command line, e.g. --data.batch_size 16. Run "detector train fit --help" for
every option."""

# The short flags a user of ultralytics or mmdetection reaches for first, and the options they stand for.
ALIASES = {"--name": "--run.name", "--epochs": "--trainer.max_epochs"}


class _HelpFormatter(DefaultHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """jsonargparse's help, with the description's lines kept as written and the reStructuredText
    of the docstrings the options' help comes from made plain (``x`` -> x, :class:`a.b.C` -> C)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = super()._get_help_string(action)
        if not text:
            return text
        text = re.sub(r":[a-z]+:`~?(?:[\w.]+\.)?(\w+)`", r"\1", text)
        return text.replace("``", "")


class DetectorTrainer(Trainer):
    """Lightning's Trainer plus the ``lr_find`` subcommand."""

    def lr_find(
        self,
        model: StagedModule,
        datamodule: DetectionDataModule,
        min_lr: float = 1e-5,
        max_lr: float = 1.0,
        num_steps: int = 100,
        out: str = "lr_find.png",
    ) -> float:
        """Run the LR range test on the recipe's first stage; save the plot; print the suggestion."""
        datamodule.prepare_data()
        datamodule.setup("fit")
        device = "cuda" if torch.cuda.is_available() and self.accelerator.__class__.__name__ == "CUDAAccelerator" else "cpu"
        result = lr_range_test(model, datamodule.train_dataloader(), min_lr, max_lr, num_steps, device=device)
        path = result.plot(out)
        print(f"lr_find: suggested head learning rate {result.suggestion:.3g} (plot: {path})")
        return result.suggestion


class RunConfigFile(SaveConfigCallback):
    """Saves the resolved config as ``config.yaml`` at the top of the run's folder."""

    def save_config(self, trainer: Trainer, pl_module: Any, stage: str) -> None:
        if trainer.is_global_zero:
            path = Path(trainer.default_root_dir) / self.config_filename
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(self.parser.dump(self.config, skip_none=False))


class DetectorCLI(ConfigDecidesModel, LightningCLI):
    """LightningCLI with the links of :func:`detector.training.config.add_links`, ``lr_find``, run folders
    (:mod:`detector.training.plan`), the checks before instantiation, and loggers that continue a
    resumed run. ``predict`` is ``detector predict``'s job."""

    run: RunFolder | None = None
    run_is_new = False

    @staticmethod
    def subcommands() -> dict[str, set[str]]:
        commands = {**LightningCLI.subcommands(), "lr_find": {"model", "datamodule"}}
        commands.pop("predict")
        return commands

    def add_arguments_to_parser(self, parser: Any) -> None:
        parser.add_class_arguments(RunConfig, "run")
        add_links(parser)

    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand]
        problems = check_model_section(config.model.as_dict()) if config.get("model") else []
        if problems:
            raise ConfigError("; ".join(problems))
        resolve_auto_anchors(config)  # anchors: auto -> concrete values, in the config the run saves
        size_recipe(config)
        if self.subcommand == "fit":  # validate/test compute no gradients: plain DDP is fine there
            chosen = choose_strategy(config)
            if chosen:
                rank_zero_info(chosen)
        files = [str(f) for f in config.get("config") or []]
        DetectorCLI.run, DetectorCLI.run_is_new = self.run, self.run_is_new = place_run(config, self.subcommand, files)
        if not config.get("ckpt_path"):
            return
        try:
            checkpoint = read_checkpoint(config.ckpt_path)
        except CheckpointError as e:
            raise CheckpointError(f"--ckpt_path {e}") from None
        if self.subcommand == "fit":
            continue_logger_runs(config, checkpoint)


def continue_logger_runs(config: Any, checkpoint: dict[str, Any]) -> None:
    """Before the loggers are built for ``fit --ckpt_path``: give each logger the run id (version)
    that :class:`detector.training.loggers.RunIdentity` saved in the checkpoint, so the resumed run
    writes to the same TensorBoard/CSV version and the same wandb run."""
    loggers = config.trainer.get("logger")
    if not isinstance(loggers, list):
        return
    state = checkpoint.get("callbacks", {})
    saved = next((v["loggers"] for k, v in state.items() if k.startswith("RunIdentity")), [])
    for logger, run in zip(loggers, saved):
        if not str(logger.get("class_path", "")).endswith(run["type"]) or run["version"] is None:
            continue
        if run["type"] == "WandbLogger":
            logger.init_args.update({"id": run["version"], "resume": "allow"})
        else:
            logger.init_args["version"] = run["version"]


def cli(args: Sequence[str] | None = None, **kwargs: Any) -> DetectorCLI:
    """Run the training CLI on ``args``; returns it (``cli.model``, ``cli.trainer``, ...).

    The run's folder is handed to the processes its DDP launcher starts in the environment
    (``DETECTOR_RUN``); it is removed when the run ends, so a second run in this process is a new run."""
    try:
        return _cli(args, **kwargs)
    finally:
        os.environ.pop(INHERITED, None)


def _cli(args: Sequence[str] | None, **kwargs: Any) -> DetectorCLI:
    return DetectorCLI(
        StagedModule,  # the task: DetectorModule, or a stepping stone of the lessons (YAML class_path)
        DetectionDataModule,
        subclass_mode_model=True,
        trainer_class=DetectorTrainer,
        save_config_callback=RunConfigFile,
        save_config_kwargs={"overwrite": True, "save_to_log_dir": False},
        auto_configure_optimizers=False,  # the module's discriminative groups + recipe schedule
        parser_kwargs={
            "description": DESCRIPTION,
            "prog": "detector train",
            "formatter_class": _HelpFormatter,
            "exit_on_error": False,  # main() prints a mistake on one line
            **{name: {"exit_on_error": False} for name in DetectorCLI.subcommands()},
        },
        args=list(args) if args is not None else None,
        **kwargs,
    )


class _NoAdvert(logging.Filter):
    """Lightning 2.6 logs a tip advertising its hosted logger (litlogger) at every fit: left out."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "litlogger" not in record.getMessage()


def main(argv: Sequence[str]) -> int:
    """``detector train ARGS``: a configuration mistake is one line and status 2; a run that stops
    before it wrote a checkpoint leaves no folder behind; the end says what was written.

    ``sys.argv`` is left as it is: Lightning's DDP launcher starts the other processes with it
    (``detector train ...``, ``python train.py ...``), so LightningCLI gets ``argv`` explicitly."""
    if argv and argv[0] == "predict":
        raise ConfigError("predicting is detector predict --checkpoint CKPT --images PATH --out DIR (pictures and detections.json)")
    done = train(argv)
    if done.run is not None and done.trainer.is_global_zero and done.subcommand != "lr_find":
        split = "test" if done.datamodule.jsons.get("test") else "val"
        print(summary(done.run, done.trainer, done.subcommand, split))
    return 0


def train(argv: Sequence[str], callbacks: Sequence[Callback] = (), keep: tuple[type[BaseException], ...] = ()) -> DetectorCLI:
    """``detector train ARGV`` in this process, with ``callbacks`` added to the config's (what
    ``detector tune`` and ``detector data audit`` train with); returns the CLI (its ``run``,
    ``trainer``, ``model``). A configuration mistake is a :class:`ConfigError`; a run that stops
    with an exception before it wrote a checkpoint leaves no folder behind, unless the exception is
    one of ``keep`` (a pruned trial keeps its logs)."""
    argv = [_alias(a) for a in argv]
    DetectorCLI.run = None
    logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(_NoAdvert())  # where rank_zero_info writes
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="LightningCLI's args parameter is intended to run from within Python")
            # Lightning 2.6's own pytree helper builds torch's deprecated LeafSpec: not ours to fix, nor to show.
            warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")
            try:
                return cli(argv, trainer_defaults={"callbacks": list(callbacks)} if callbacks else None)
            except ArgumentError as e:
                raise ConfigError(_readable(e)) from None
    except BaseException as e:
        run = DetectorCLI.run
        if run is not None and DetectorCLI.run_is_new and not isinstance(e, keep) and not any(run.checkpoints.glob("*.ckpt")):
            shutil.rmtree(run.path, ignore_errors=True)
        raise
    finally:
        os.environ.pop(INHERITED, None)


def _alias(arg: str) -> str:
    """``--epochs 5`` / ``--epochs=5`` -> ``--trainer.max_epochs ...``; other arguments unchanged."""
    flag, eq, value = arg.partition("=")
    return ALIASES[flag] + eq + value if flag in ALIASES else arg


def _readable(error: ArgumentError) -> str:
    """jsonargparse's message about a ``class_path`` section (the model, a logger, a callback), which
    lists every type the value failed to be, cut to the problem with the class the config names."""
    message = " ".join(str(error).split())
    found = re.search(r"Problem with given class_path '([^']+)': (.*?)(?: - Expected a <class '[^']+'>.*)?$", message)
    return f"{found.group(1)}: {found.group(2)}" if found else message
