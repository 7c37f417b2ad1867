"""From a training config (one YAML per experiment) to the model and the data, one way for every
command: ``detector train`` (LightningCLI), ``eval --data``, ``inspect`` and the Python API all
parse the ``model:`` and ``data:`` sections with the same parser and the same links.

The links make the values that must agree agree: the data's classes -> the model's, the model's
image size -> the data's, the backbone's input statistics -> the data's normalisation (and, in
``detector train``, the recipe's length -> the trainer's ``max_epochs``). Values a link sets cannot
be given in the config. :func:`check_model_section` finds an anchor grid the head cannot make
before anything is built, naming the YAML keys.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from jsonargparse import ActionConfigFile, ArgumentError, Namespace
from lightning.pytorch.cli import LightningArgumentParser

from detector.core.anchors import LESSON_GRIDS
from detector.data.datamodule import DetectionDataModule
from detector.defaults import IMAGE_SIZE
from detector.errors import ConfigError, MissingFileError
from detector.model import backbone_stats
from detector.model.head import grid_problem
from detector.training.tasks.staged import StagedModule

__all__ = ["add_links", "backbone_mean", "backbone_std", "build", "check_model_section", "read_config"]


def backbone_mean(name: str) -> tuple[float, float, float]:
    """The input mean of backbone ``name`` (linked to ``data.mean``)."""
    return backbone_stats(name)[0]


def backbone_std(name: str) -> tuple[float, float, float]:
    """The input standard deviation of backbone ``name`` (linked to ``data.std``)."""
    return backbone_stats(name)[1]


def add_links(parser: LightningArgumentParser) -> None:
    """The links between a parser's ``model`` (any :class:`StagedModule`, by ``class_path``) and
    ``data`` (:class:`DetectionDataModule`) sections."""
    parser.link_arguments("data.num_classes", "model.init_args.num_classes", apply_on="instantiate")
    parser.link_arguments("data.class_names", "model.init_args.class_names", apply_on="instantiate")
    parser.link_arguments("model.init_args.image_size", "data.image_size")
    parser.link_arguments("model.init_args.backbone", "data.mean", compute_fn=backbone_mean)
    parser.link_arguments("model.init_args.backbone", "data.std", compute_fn=backbone_std)


def _parser() -> LightningArgumentParser:
    parser = LightningArgumentParser(exit_on_error=False)
    parser.add_argument("--config", action=ActionConfigFile)
    parser.add_lightning_class_args(StagedModule, "model", subclass_mode=True)
    parser.add_lightning_class_args(DetectionDataModule, "data")
    add_links(parser)
    return parser


def check_model_section(model: Mapping[str, Any]) -> list[str]:
    """Problems with a ``model:`` section (``{class_path, init_args}`` or plain init args), one
    message each, naming the keys; empty when none. Only detector configs (with ``anchors``)."""
    init = model.get("init_args", model)
    if "anchors" not in init or init.get("anchors") == "auto":  # auto: chosen among the grids the head makes
        return []
    grids = list((init.get("anchors") or {}).get("grids") or LESSON_GRIDS)
    problem = grid_problem(grids, init.get("image_size", IMAGE_SIZE))
    return [f"model.init_args.anchors.{problem}"] if problem else []


def read_config(path: str | Path, overrides: Sequence[str] = ()) -> Namespace:
    """The ``model:`` and ``data:`` sections of a training config, parsed and linked (other
    sections, ``trainer:`` and the like, are left out). ``overrides``: command-line style
    arguments applied after the file (``["--model.init_args.weights", "none"]``).

    Raises:
        MissingFileError: no such file. ConfigError: a section that does not parse, or a model
            section :func:`check_model_section` refuses.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"{path}: no such config file")
    try:
        config = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({' '.join(str(e).split())})") from None
    if not isinstance(config, dict) or "data" not in config:
        raise ConfigError(f"{path}: expected a YAML mapping with a data: section (and a model: section)")
    sections = {k: config[k] for k in ("model", "data") if k in config}
    problems = check_model_section(sections.get("model") or {})
    if problems:
        raise ConfigError(f"{path}: " + "; ".join(problems))
    parser = _parser()
    try:
        parsed = parser.parse_object(sections)
        return parser.parse_args(list(overrides), namespace=parsed) if overrides else parsed
    except ArgumentError as e:
        raise ConfigError(f"{path}: {' '.join(str(e).split())}") from None


def build(config: Namespace, data_only: bool = False) -> tuple[StagedModule | None, DetectionDataModule]:
    """The model (``None`` with ``data_only``: nothing of the model is built) and the data module
    of a :func:`read_config` result."""
    if data_only:
        return None, DetectionDataModule(**config.data.as_dict())
    init = _parser().instantiate_classes(config)
    return init.model, init.data
