"""What ``detector train`` does to a parsed config before anything is built: it places the run in
its folder (:mod:`detector.training.runs`), sizes the recipe to ``trainer.max_epochs``, and
chooses the DDP strategy a recipe that freezes needs (or refuses plain DDP named explicitly), all
before a process is spawned or data is read.

Every path of a run comes from its folder: ``trainer.default_root_dir``, each checkpoint callback's
``dirpath`` (``vN/checkpoints``), each logger's ``save_dir`` (``vN/tb``, ``vN/csv``: the version is
the run's, not the logger's), wandb's run name (``NAME/vN``). Paths the config gives for these are
replaced.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any

from jsonargparse import Namespace

from detector.errors import ConfigError
from detector.training.recipe import FREEZE, Stage, lesson_stages, scale_stages, total_epochs
from detector.training.runs import INHERITED, RunFolder, find_run, run_of_checkpoint, shared_new_run

__all__ = ["FIND_UNUSED", "choose_strategy", "place_run", "recipe_stages", "size_recipe", "summary"]


def _class_name(section: Any) -> str:
    return str(section.get("class_path", "")).rsplit(".", 1)[-1] if isinstance(section, (dict, Namespace)) else ""


def recipe_stages(config: Namespace) -> list[Stage]:
    """The parsed config's stages (a stage's missing keys take :class:`Stage`'s defaults), or the
    lesson's when it gives none."""
    init = config.model.init_args
    given = init.get("stages")
    if not given:
        return lesson_stages()
    return [Stage(**(s if isinstance(s, dict) else s.as_dict())) for s in given]


def size_recipe(config: Namespace) -> None:
    """``trainer.max_epochs`` absent: the recipe's total. Given and different: every stage keeps its
    share of the run (:func:`detector.training.recipe.scale_stages`), and validation every ``n`` epochs and
    an EMA updated every ``n`` steps scale with it."""
    stages = recipe_stages(config)
    total, wanted = total_epochs(stages), config.trainer.get("max_epochs")
    if wanted is None or wanted == -1:
        config.trainer.max_epochs = total
        return
    if wanted == total:
        return
    scaled = scale_stages(stages, wanted)
    config.model.init_args.stages = [Namespace(epochs=s.epochs, freeze=s.freeze, lr_mult=s.lr_mult) for s in scaled]
    every = config.trainer.get("check_val_every_n_epoch")
    if every and every > 1:
        config.trainer.check_val_every_n_epoch = max(1, round(every * wanted / total))
    for callback in config.trainer.get("callbacks") or []:
        init = callback.get("init_args")
        if _class_name(callback) == "EMAWeightAveraging" and init is not None and init.get("update_every_n_steps", 1) > 1:
            init.update_every_n_steps = max(1, round(init.update_every_n_steps * wanted / total))


# The DDP strategy that looks for parameters without a gradient each step (Lightning's registry name).
FIND_UNUSED = "ddp_find_unused_parameters_true"


def _processes(trainer: Namespace) -> int:
    """How many processes the trainer section asks for: devices x nodes, ``devices: auto`` and
    ``-1`` counted on this machine (every GPU unless the accelerator is the CPU), and at least the
    world a launcher (torchrun, srun) started, which is already in the environment."""
    devices, nodes = trainer.get("devices"), trainer.get("num_nodes") or 1
    accelerator = str(trainer.get("accelerator") or "auto").lower()
    if isinstance(devices, str):
        text = devices.strip().strip(",")
        devices = text.split(",") if "," in text else text
        if isinstance(devices, str):
            devices = int(devices) if devices.lstrip("-").isdigit() else devices
    if isinstance(devices, (list, tuple)):
        count = len(devices)
    elif devices == -1 or devices in ("auto", None):
        count = 1 if accelerator == "cpu" else _gpus(accelerator) or 1
    else:
        count = int(devices)
    launched = int(os.environ.get("WORLD_SIZE") or os.environ.get("SLURM_NTASKS") or 1)
    return max(count * nodes, launched)


def _gpus(accelerator: str) -> int:
    """The CUDA devices an ``auto``/``gpu``/``cuda`` accelerator would use (0 for another accelerator)."""
    if accelerator not in ("auto", "gpu", "cuda"):
        return 0
    import torch

    return torch.cuda.device_count()


def _needs_unused(config: Namespace) -> str | None:
    """Why the recipe leaves parameters without a gradient in some step (frozen groups, fixed
    depthwise kernels), as the start of a sentence, or ``None``."""
    freezing = [i for i, s in enumerate(recipe_stages(config)) if FREEZE[s.freeze]]
    if freezing:
        return f"model.init_args.stages[{freezing[0]}] freezes layer groups, whose parameters then get no gradient"
    if config.model.init_args.get("train_depthwise") is False:
        return "model.init_args.train_depthwise: false leaves the body's depthwise kernels without a gradient"
    return None


def choose_strategy(config: Namespace) -> str | None:
    """The one command is the same on one device and on many: with ``trainer.strategy`` left at
    ``auto`` and several processes (devices x nodes, or a torchrun/srun world), a recipe that leaves
    parameters without a gradient gets ``ddp_find_unused_parameters_true``, and the line saying so
    is returned (``None`` when nothing was chosen). Plain DDP named explicitly (``ddp``,
    ``ddp_spawn``, ``DDPStrategy`` without ``find_unused_parameters: true``) cannot train such a
    recipe: refused here, before any process starts.

    Raises:
        ConfigError: plain DDP with a recipe that freezes groups or fixes depthwise kernels.
    """
    trainer = config.trainer
    strategy = trainer.get("strategy")
    if isinstance(strategy, str) or strategy is None:
        name, finds_unused = str(strategy or "auto"), "find_unused_parameters_true" in str(strategy)
    else:
        name = _class_name(strategy)
        init = strategy.get("init_args") or Namespace()
        finds_unused = bool(init.get("find_unused_parameters"))
    if finds_unused:
        return None
    if name.lower() == "auto":
        if _processes(trainer) <= 1:
            return None
        why = _needs_unused(config)
        if why is None:
            return None
        trainer.strategy = FIND_UNUSED
        return f"trainer.strategy: {FIND_UNUSED} ({why}, which plain DDP refuses)"
    if "ddp" not in name.lower():
        return None
    why = _needs_unused(config)
    if why is not None:
        raise ConfigError(
            f"{why}, which DDP refuses: set trainer.strategy to {FIND_UNUSED} "
            f"(or leave it at auto: detector train then chooses it)"
        )
    return None


def place_run(config: Namespace, subcommand: str, config_files: list[str]) -> tuple[RunFolder, bool]:
    """Choose the run's folder and point every path of the config into it; returns the folder and
    whether it was made now (a new version: removed again if the run fails before its first step).

    ``fit``: a new version, or with ``--ckpt_path last`` the newest version with a ``last.ckpt``
    (or ``run.version``), or the run a checkpoint file lies in. Other subcommands: the run the
    checkpoint belongs to (``best`` / ``last``: the newest version that has it), else a new one.
    """
    run_cfg = config.get("run") or Namespace()
    name = run_cfg.get("name") or (Path(config_files[-1]).stem if config_files else "run")
    root = Path(run_cfg.get("root") or "runs")
    ckpt = config.get("ckpt_path")
    created = False
    if os.environ.get(INHERITED) and os.environ.get("LOCAL_RANK", "0") != "0":  # started by the run's DDP launcher
        path = Path(os.environ[INHERITED])
        run = RunFolder(path.parent.parent, path.parent.name, int(path.name[1:]))
        if ckpt in ("last", "best"):
            config.ckpt_path = str(run.checkpoints / f"{ckpt}.ckpt")
    elif ckpt in ("last", "best"):
        run = find_run(root, name, f"{ckpt}.ckpt", run_cfg.get("version"))
        config.ckpt_path = str(run.checkpoints / f"{ckpt}.ckpt")
    elif ckpt and run_of_checkpoint(Path(ckpt)) is not None:
        run = run_of_checkpoint(Path(ckpt))
    elif run_cfg.get("version") is not None:
        run = RunFolder(root, name, run_cfg.version)
        if not run.path.is_dir():
            raise ConfigError(f"--run.version {run_cfg.version}: {run.path} does not exist")
    else:
        run, created = shared_new_run(root, name), True
    _point_into(config, run, subcommand)
    os.environ[INHERITED] = str(run.path.resolve())  # for the processes Lightning's launcher starts
    return run, created


def _point_into(config: Namespace, run: RunFolder, subcommand: str) -> None:
    """Rewrite the config's paths into ``run`` (module docstring). Logs of ``validate``/``test`` go
    to ``vN/<subcommand>/`` beside the training's."""
    trainer = config.trainer
    trainer.default_root_dir = str(run.path)
    logs = run.path if subcommand == "fit" else run.path / subcommand
    for callback in trainer.get("callbacks") or []:
        if _class_name(callback) == "ModelCheckpoint":
            callback.init_args.dirpath = str(run.checkpoints)
    loggers = trainer.get("logger")
    for logger in loggers if isinstance(loggers, list) else []:
        init, kind = logger.init_args, _class_name(logger)
        if kind == "WandbLogger":
            init.save_dir, init.name = str(logs), f"{run.name}/v{run.version}" + ("" if subcommand == "fit" else f"/{subcommand}")
        elif "save_dir" in init or kind in ("TensorBoardLogger", "CSVLogger"):
            init.save_dir, init.version = str(logs), ""
            init.name = init.get("name") or kind.replace("Logger", "").lower()


def _best_row(metrics_csv: Path, monitor: str, mode: str) -> dict[str, str] | None:
    """The CSV log's row where ``monitor`` was best (``mode``: max or min)."""
    if not metrics_csv.is_file():
        return None
    with metrics_csv.open(newline="") as f:
        rows = [r for r in csv.DictReader(f) if r.get(monitor)]
    if not rows:
        return None
    pick = max if mode == "max" else min
    return pick(rows, key=lambda r: float(r[monitor]))


def _show(path: str | Path) -> str:
    """``path`` relative to the current folder when it lies below it."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def summary(run: RunFolder, trainer: Any, subcommand: str, eval_split: str = "test") -> str:
    """What a run wrote and what to run next, for the end of ``detector train``; ``eval_split`` is
    the split the suggested ``detector eval`` uses."""
    lines = [f"run: {run.path}"]
    best = last = None
    for callback in trainer.checkpoint_callbacks:
        if getattr(callback, "monitor", None) and callback.best_model_path:
            best = callback
        elif callback.monitor is None and getattr(callback, "best_model_path", ""):
            last = callback.best_model_path
    logs = run.path if subcommand == "fit" else run.path / subcommand
    if best is not None:
        row = _best_row(logs / "csv" / "metrics.csv", best.monitor, best.mode)
        note = f"{best.monitor} {float(best.best_model_score):.4f}" if best.best_model_score is not None else ""
        if row is not None:
            note = f"epoch {int(float(row['epoch']))}, " + note + (f", val/map {float(row['val/map']):.4f}" if row.get("val/map") else "")
        lines.append(f"  best checkpoint: {_show(best.best_model_path)} ({note})")
    if last:
        lines.append(f"  last checkpoint: {_show(last)}")
    if logs.is_dir():
        lines.append(f"  logs: {logs} (tensorboard --logdir {logs})")
    results = run.path / "results" / "val"
    if subcommand == "fit" and results.is_dir():
        lines.append(f"  results: {results} (PR and F1 curves, confusion matrix, per-class AP, training curves, error analysis)")
    checkpoint = _show(best.best_model_path if best is not None else last) if (best or last) else None
    if subcommand == "fit" and checkpoint:
        lines += [
            "next:",
            f"  detector eval --checkpoint {checkpoint} --split {eval_split}",
            f"  detector predict --checkpoint {checkpoint} --images PATH --out {run.path / 'predictions'}",
            f"  detector export --checkpoint {checkpoint} --onnx {run.path / 'model.onnx'}",
        ]
    return "\n".join(lines)
