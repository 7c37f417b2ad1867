"""Interruptions on purpose, at deterministic points, for the resume and checkpoint-safety tests.

* :class:`CrashAt`: an exception before a given training batch (a run that fails).
* :class:`KillAt`: ``SIGKILL`` before a given training batch (a run that is killed: no exception
  handler, no ``finally``, nothing flushed).
* :class:`KillDuringSave`: ``SIGKILL`` in the middle of writing the n-th save of a checkpoint.
* :func:`kill_while_writing_in`: the mechanism under it, for any code that writes files.
* :class:`PoisonAt`: NaN in a weight at a given training batch (a run that diverges).

No timing is involved anywhere: each kill happens at a point fixed by the code path.
"""

from __future__ import annotations

import builtins
import io
import os
import signal
from pathlib import Path
from typing import Any

import lightning as L
import torch


class CrashAt(L.Callback):
    """Raises ``RuntimeError("CrashAt ...")`` before training batch ``batch`` of epoch ``epoch``."""

    def __init__(self, epoch: int, batch: int) -> None:
        self.epoch, self.batch = epoch, batch

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.current_epoch == self.epoch and batch_idx == self.batch:
            raise RuntimeError(f"CrashAt epoch {self.epoch} batch {self.batch}: simulated interruption")


class KillAt(L.Callback):
    """Sends its own process ``SIGKILL`` before training batch ``batch`` of epoch ``epoch``."""

    def __init__(self, epoch: int, batch: int) -> None:
        self.epoch, self.batch = epoch, batch

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.current_epoch == self.epoch and batch_idx == self.batch:
            os.kill(os.getpid(), signal.SIGKILL)


class KillDuringSave(L.Callback):
    """Sends its own process ``SIGKILL`` in the middle of the ``nth`` save (1-based) of a checkpoint
    named ``name``, once ``after_bytes`` bytes have been written into its folder (see
    :func:`kill_while_writing_in`). Whatever writes the file, Lightning's ``TorchCheckpointIO`` or
    another plugin, is interrupted the same way."""

    def __init__(self, name: str = "last.ckpt", nth: int = 2, after_bytes: int = 1 << 20) -> None:
        self.name, self.nth, self.after_bytes = name, nth, after_bytes
        self.saves = 0

    def setup(self, trainer: L.Trainer, pl_module: Any, stage: str) -> None:
        save = trainer.save_checkpoint

        def save_checkpoint(filepath: Any, *args: Any, **kwargs: Any) -> None:
            if Path(filepath).name == self.name:
                self.saves += 1
                if self.saves == self.nth:
                    kill_while_writing_in(Path(filepath).parent, self.after_bytes)
            save(filepath, *args, **kwargs)

        trainer.save_checkpoint = save_checkpoint  # what ModelCheckpoint calls


class PoisonAt(L.Callback):
    """Fills the first parameter of the head (layer group 2) with NaN before (``when="start"``) or
    after (``"end"``) training batch ``batch`` of epoch ``epoch``, on process ``rank`` only (``None``:
    on every process); keeps the batch's image ids in ``image_ids``."""

    def __init__(self, epoch: int, batch: int, when: str = "start", rank: int | None = None) -> None:
        self.epoch, self.batch, self.when, self.rank = epoch, batch, when, rank
        self.image_ids: list[int] = []

    def _poison(self, trainer: L.Trainer, pl_module: Any, batch: Any, batch_idx: int) -> None:
        if (trainer.current_epoch, batch_idx) == (self.epoch, self.batch) and self.rank in (None, trainer.global_rank):
            self.image_ids = batch["image_ids"].tolist()
            with torch.no_grad():
                next(pl_module.model.layer_groups[2].parameters()).fill_(float("nan"))

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self.when == "start":
            self._poison(trainer, pl_module, batch, batch_idx)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.when == "end":
            self._poison(trainer, pl_module, batch, batch_idx)


def kill_while_writing_in(folder: Path, after_bytes: int) -> None:
    """From now on, a file opened for writing in ``folder`` (by ``open``, ``io.open`` or
    ``os.fdopen``) kills the process with ``SIGKILL``: after its first ``after_bytes`` bytes have
    been written and flushed to disk, or at once when the file's descriptor is asked for (how
    ``shutil.copyfile`` starts a kernel-side copy with ``sendfile``)."""
    folder = folder.resolve()
    real_open = io.open

    def open_(file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        f = real_open(file, mode, *args, **kwargs)
        path = Path(os.readlink(f"/proc/self/fd/{file}")) if isinstance(file, int) else Path(os.fsdecode(file)).resolve()
        if path.parent == folder and any(c in mode for c in "wax+"):
            return _KillingWriter(f, after_bytes)
        return f

    builtins.open = io.open = open_


def _die(f: Any) -> None:
    f.flush()
    os.fsync(f.fileno())
    os.kill(os.getpid(), signal.SIGKILL)


class _KillingWriter:
    """A binary file that kills the process part-way through its writes (see kill_while_writing_in)."""

    def __init__(self, f: Any, after_bytes: int) -> None:
        self._f, self._left = f, after_bytes

    def write(self, data: Any) -> int:
        data = memoryview(data).cast("B")
        if len(data) >= self._left:
            self._f.write(data[: self._left])
            _die(self._f)
        self._left -= len(data)
        return self._f.write(data)

    def fileno(self) -> int:
        _die(self._f)
        raise AssertionError("unreachable: the process is dead")

    def __getattr__(self, name: str) -> Any:
        return getattr(self._f, name)

    def __enter__(self) -> _KillingWriter:
        return self

    def __exit__(self, *exc: Any) -> None:
        self._f.close()


def save_twice_killed_in_second(io_class: str, path: str) -> None:
    """For a child process: save a checkpoint to ``path`` with ``io_class`` (``torch`` =
    Lightning's TorchCheckpointIO, ``atomic`` = detector's AtomicCheckpointIO), then save a newer one
    and get killed in the middle of it, with the system temp folder on "another filesystem":
    ``os.rename`` / ``os.replace`` between different folders fail with ``EXDEV``, as they do across
    filesystems (so ``shutil.move`` falls back to copying)."""
    import errno

    import torch
    from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

    from detector.training.checkpoints import AtomicCheckpointIO

    checkpoint_io = {"torch": TorchCheckpointIO, "atomic": AtomicCheckpointIO}[io_class]()
    checkpoint_io.save_checkpoint({"epoch": 0, "w": torch.zeros(500_000)}, path)

    def across(move: Any) -> Any:
        def guarded(src: Any, dst: Any, *args: Any, **kwargs: Any) -> Any:
            if Path(os.fsdecode(src)).resolve().parent != Path(os.fsdecode(dst)).resolve().parent:
                raise OSError(errno.EXDEV, "Invalid cross-device link", src)
            return move(src, dst, *args, **kwargs)

        return guarded

    os.rename, os.replace = across(os.rename), across(os.replace)
    kill_while_writing_in(Path(path).parent, after_bytes=1 << 20)
    checkpoint_io.save_checkpoint({"epoch": 1, "w": torch.ones(500_000)}, path)
    raise AssertionError("unreachable: the process was to be killed while saving")
