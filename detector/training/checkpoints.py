"""Checkpoint I/O: checkpoints that a kill cannot truncate, reading one with a message that names
the file, refusing one that does not fit the model, and finding a run's last one.

A run keeps two checkpoints, each written by a plain Lightning ``ModelCheckpoint`` (the configs
list them): ``best.ckpt`` (the best ``val/map_50`` so far) and ``last.ckpt`` (``monitor: null``,
``filename: last``, ``save_on_train_epoch_end: true``: after every epoch, validated or not), which
``--ckpt_path last`` resumes. List the ``best`` callback first: ``--ckpt_path best`` reads the first.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.fabric.plugins import TorchCheckpointIO

from detector.errors import CheckpointError, CheckpointMismatchError

__all__ = [
    "AtomicCheckpointIO",
    "AtomicCheckpoints",
    "check_checkpoint_fits",
    "last_checkpoint_path",
    "read_checkpoint",
]


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """``torch.load`` a checkpoint onto the CPU (``weights_only``: tensors and plain data only).

    Raises:
        CheckpointError: the file is missing or is not a readable checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch reports a cut-short zip as a RuntimeError without the file's name
        raise CheckpointError(
            f"{path}: cannot be read as a checkpoint ({type(e).__name__}: {e}); it may be a copy cut short or "
            "not a checkpoint at all: use another one (training never leaves its own saves half-written)"
        ) from e


def last_checkpoint_path(trainer: L.Trainer) -> str:
    """The newest ``last.ckpt`` (or, without one, ``best.ckpt``) the trainer's checkpoint callbacks
    have written, for messages; ``"none written yet"``."""
    for callback in trainer.checkpoint_callbacks:
        path = getattr(callback, "last_model_path", "") or (
            getattr(callback, "best_model_path", "") if getattr(callback, "monitor", "") is None else ""
        )
        if path:
            return path
    return "none written yet"


def _plain(value: Any) -> str:
    """A hyperparameter as canonical JSON, so that tuples and lists, dicts in any order, compare equal."""
    return json.dumps(value, sort_keys=True, default=str)


def check_checkpoint_fits(module: L.LightningModule, checkpoint: dict[str, Any], source: str = "the checkpoint") -> None:
    """Refuse a checkpoint from another configuration with a message saying what differs, before
    Lightning's ``load_state_dict`` would fail on the first tensor of another shape (or, for the
    same number of classes under other names, silently load weights that mean something else).

    Raises:
        CheckpointMismatchError: tensors missing, unexpected or of another shape, or other class names.
    """
    saved = checkpoint.get("hyper_parameters", {})
    ours, theirs = module.state_dict(), checkpoint["state_dict"]
    reshaped = [k for k in ours.keys() & theirs.keys() if ours[k].shape != theirs[k].shape]
    missing, unexpected = sorted(ours.keys() - theirs.keys()), sorted(theirs.keys() - ours.keys())
    class_names = getattr(module, "class_names", None)
    renamed = saved.get("class_names") is not None and list(saved["class_names"]) != list(class_names or [])
    if not (reshaped or missing or unexpected or renamed):
        return
    problems = []
    if reshaped:
        k = sorted(reshaped)[0]
        problems.append(
            f"{len(reshaped)} tensor(s) of another shape (e.g. {k}: {tuple(theirs[k].shape)} in the checkpoint, "
            f"{tuple(ours[k].shape)} here)"
        )
    if missing:
        problems.append(f"{len(missing)} tensor(s) missing from the checkpoint (e.g. {missing[:2]})")
    if unexpected:
        problems.append(f"{len(unexpected)} tensor(s) this model does not have (e.g. {unexpected[:2]})")
    if renamed:
        problems.append(f"classes {list(saved['class_names'])} in the checkpoint, {class_names} here")
    hparams = module.hparams
    differ = [
        f"{k}: {saved[k]!r} in the checkpoint, {hparams[k]!r} here"
        for k in saved
        if k in hparams and k != "weights" and _plain(saved[k]) != _plain(hparams[k])
    ]
    raise CheckpointMismatchError(
        f"{source} does not fit this model ({type(module).__name__}): " + "; ".join(problems) + ". "
        + ("Settings that differ: " + "; ".join(differ) + ". " if differ else "")
        + "Use the configuration the checkpoint was trained with (training saves it as config.yaml in the "
        "run's log folder), or train afresh without --ckpt_path."
    )


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes a checkpoint so that a process killed at any moment leaves either the previous file or
    the new one, never a truncated one: ``torch.save`` into a temporary file in the checkpoint's own
    folder, ``fsync``, ``os.replace`` over the old file (atomic on POSIX and Windows), ``fsync`` the
    folder. The temporary file of a killed save (``.NAME.*.partial``) is removed by the next save
    of ``NAME``.

    Why not Lightning's own save (2.6, ``lightning.fabric.utilities.cloud_io``): it
    writes through an fsspec transaction whose local temporary file is made by
    ``tempfile.mkstemp()`` in the system temp folder and then ``shutil.move``d onto the checkpoint.
    When the temp folder is on another filesystem (a tmpfs ``/tmp``; checkpoints on a mounted
    volume), the move is a copy into the final path, which a kill truncates
    (``tests/training/test_checkpoints.py`` shows it); nothing is ``fsync``ed, so a power cut can leave an
    empty file; and a kill leaves a checkpoint-sized orphan in ``/tmp``. Remote paths
    (``s3://...``) still go through Lightning's save.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        if "://" in str(path):
            return super().save_checkpoint(checkpoint, path, storage_options)
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options, got {storage_options!r}")
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
        try:
            umask = os.umask(0)
            os.umask(umask)
            os.fchmod(fd, 0o666 & ~umask)  # as an ordinary new file (mkstemp makes it private)
            with os.fdopen(fd, "wb") as f:
                torch.save(checkpoint, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        if os.name == "posix":  # make the rename itself durable
            folder = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(folder)
            finally:
                os.close(folder)
        for stale in path.parent.glob(f".{path.name}.*.partial"):
            stale.unlink(missing_ok=True)


class AtomicCheckpoints(L.Callback):
    """Makes the trainer save checkpoints with :class:`AtomicCheckpointIO` when it would use
    Lightning's default ``TorchCheckpointIO``; a CheckpointIO plugin chosen in the config is left
    alone. A callback (returned by ``StagedModule.configure_callbacks``) rather than a Trainer
    plugin, so that every Trainer that fits the module gets it, ``detector train``'s or a hand-made one."""

    def setup(self, trainer: L.Trainer, pl_module: Any, stage: str) -> None:
        if type(trainer.strategy.checkpoint_io) is TorchCheckpointIO:
            trainer.strategy.checkpoint_io = AtomicCheckpointIO()
