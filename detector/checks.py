"""Checks that run before anything is built or trained, each failing with a message that names what
is wrong and says what to change.

* :func:`check_model_config`: a ``train.py`` model section whose anchors the head cannot produce.
  The model would refuse it too, but only once instantiated, where jsonargparse buries the message
  under its own; here it names the YAML keys.
* :func:`read_checkpoint`: a checkpoint file that is missing or cannot be read (a copy cut short,
  not a checkpoint at all), named, instead of ``PytorchStreamReader failed reading zip archive``.

The other configuration mistakes are caught where the knowledge is: an unknown backbone and a freeze
setting outside ``body | groups_0 | none`` by jsonargparse while parsing (the backbone's name is
looked up to link its statistics to the data; ``Stage.freeze`` is a ``Literal``); missing data paths
and a batch larger than the train split by ``DetectionDataModule.setup``, before the first step; a
checkpoint of another configuration by ``StagedModule.on_load_checkpoint``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import torch

from detector.model.head import head_grid_sizes

__all__ = ["CheckpointError", "check_model_config", "read_checkpoint"]

# The lesson's grids, what DetectorModule uses when the config names no anchors.
_DEFAULT_GRIDS = [4, 2, 1]


class CheckpointError(ValueError):
    """A checkpoint file that cannot be read; the message names the file."""


def check_model_config(model: Mapping[str, Any]) -> list[str]:
    """Problems with a ``model:`` section (``{class_path, init_args}`` or plain init args), one
    message each; empty when none. Only detector configs (those with ``anchors``) are checked."""
    init = model.get("init_args", model)
    if "anchors" not in init:
        return []
    image_size = init.get("image_size", 224)
    grids = list((init.get("anchors") or {}).get("grids") or _DEFAULT_GRIDS)
    try:
        sizes = list(head_grid_sizes(image_size))
    except ValueError as e:
        return [f"model.init_args.image_size: {e}"]
    wrong = [g for g in grids if g not in sizes]
    if wrong:
        return [
            f"model.init_args.anchors.grids {grids}: the SSD head cannot make a {wrong[0]}x{wrong[0]} grid from "
            f"{image_size} px images (its grids are ceil(S / 8), then halved down to 1: {sizes}); choose the "
            "grids among those, finest first, or change model.init_args.image_size"
        ]
    if any(a <= b for a, b in zip(grids, grids[1:])):
        return [
            f"model.init_args.anchors.grids {grids}: list each grid once, finest first "
            f"(e.g. {sorted(set(grids), reverse=True)}): the anchors and the head's outputs are concatenated in that order"
        ]
    return []


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
            "not a checkpoint at all: use another one (train.py's own saves are never left half-written)"
        ) from e
