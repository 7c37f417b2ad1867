"""From a checkpoint file to the trained module, whichever task wrote it, on the device asked for.

Every command that reads a checkpoint (``detector eval``, ``predict``, ``inspect``, ``export``) and
the Python API load it here: the file read with a message that names it when it cannot be
(:func:`~detector.training.checkpoints.read_checkpoint`), the class that wrote it looked up among
the known tasks (a checkpoint cannot make this import other code), its weights from the file
(``weights="none"``: no pretrained download), in eval mode.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from detector.errors import CheckpointError, CheckpointMismatchError, ConfigError
from detector.training.checkpoints import read_checkpoint
from detector.training.tasks import LargestBoxRegressor, LargestObjectClassifier, MultiLabelClassifier, SingleObjectDetector
from detector.training.tasks.detection import DetectorModule
from detector.training.tasks.staged import CHECKPOINT_TASK_KEY, StagedModule

__all__ = ["TASKS", "checkpoint_task", "load_detector", "load_model", "resolve_device"]

# The LightningModules a checkpoint may hold, by class name. A checkpoint names its class (see
# checkpoint_task); only these are ever built from one.
TASKS: dict[str, type[StagedModule]] = {
    cls.__name__: cls
    for cls in (DetectorModule, LargestObjectClassifier, LargestBoxRegressor, SingleObjectDetector, MultiLabelClassifier)
}


def resolve_device(name: str | torch.device) -> torch.device:
    """``auto`` -> ``cuda`` when a GPU is visible, else ``cpu``; anything else as ``torch.device``."""
    if str(name) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as e:
        raise ConfigError(f"--device {name!r}: {e}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device {name!r} asked for, but torch sees no CUDA GPU: use --device cpu")
    return device


def checkpoint_task(checkpoint: dict[str, Any], source: str | Path = "the checkpoint") -> type[StagedModule]:
    """The LightningModule class that wrote ``checkpoint`` (a loaded checkpoint dict).

    Named by the ``task_class`` entry every task writes (:class:`~detector.training.tasks.staged.StagedModule`);
    a checkpoint without it is the SSD's (older versions wrote it for the stepping stones only).
    """
    path = checkpoint.get(CHECKPOINT_TASK_KEY) or "detector.training.DetectorModule"
    name = str(path).rsplit(".", 1)[-1]
    if name not in TASKS:
        raise CheckpointError(f"{source} was written by {path!r}, which is none of the known tasks: {', '.join(TASKS)}")
    return TASKS[name]


def load_model(path: str | Path, device: str | torch.device = "cpu", task: type[StagedModule] | None = None) -> StagedModule:
    """The module a checkpoint holds (any task: :func:`checkpoint_task`), in eval mode on ``device``;
    with ``task``, only a checkpoint of that task is accepted.

    Raises:
        CheckpointError: the file is missing, unreadable, of an unknown or another task, or does
            not fit the task's model as this version of the code builds it.
    """
    device = resolve_device(device)
    cls = checkpoint_task(read_checkpoint(path), path)
    if task is not None and not issubclass(cls, task):
        raise CheckpointError(
            f"{path} holds a {cls.__name__}, not the {task.__name__ if task is not DetectorModule else 'SSD (DetectorModule)'}: "
            "evaluate it with detector train validate --ckpt_path, predict with detector predict"
        )
    try:
        model = cls.load_from_checkpoint(path, map_location="cpu", weights="none")
    except CheckpointMismatchError as e:  # hyperparameters that do not describe the weights
        raise CheckpointMismatchError(f"{path}: {e}") from None
    except (KeyError, TypeError) as e:  # hyperparameters this version of the code does not take
        raise CheckpointError(f"{path}: not a checkpoint this version of the code can rebuild ({type(e).__name__}: {e})") from None
    return model.eval().to(device)


def load_detector(path: str | Path, device: str | torch.device = "cpu") -> DetectorModule:
    """:func:`load_model` for an SSD checkpoint; another task's checkpoint is refused by name."""
    return load_model(path, device, task=DetectorModule)
