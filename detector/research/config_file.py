"""What the research commands read from a training config's YAML and write back into one: the
name and root its runs get, the value its best checkpoint is chosen by, and a setting given by its
dotted key (``model.init_args.optimizer.lr``), as the command line names it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from detector.errors import ConfigError

__all__ = ["load_yaml", "monitored", "run_section", "set_key"]


def load_yaml(config: Path) -> dict[str, Any]:
    """The config file as a mapping (a file that is not one is a :class:`ConfigError`)."""
    try:
        raw = yaml.safe_load(Path(config).read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{config}: not valid YAML ({' '.join(str(e).split())})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{config}: expected a YAML mapping")
    return raw


def run_section(config: Path) -> tuple[str, Path]:
    """(run name, runs root) as ``detector train`` gives them: the config's ``run:`` section, else
    the file's name and ``runs``."""
    run = load_yaml(config).get("run") or {}
    return str(run.get("name") or Path(config).stem), Path(run.get("root") or "runs")


def monitored(config: Path) -> tuple[str, str]:
    """(the value ``best.ckpt`` keeps the best of, ``max`` or ``min``): the first ModelCheckpoint
    of ``trainer.callbacks`` that has a ``monitor``."""
    for callback in (load_yaml(config).get("trainer") or {}).get("callbacks") or []:
        init = (callback or {}).get("init_args") or {}
        if str(callback.get("class_path", "")).endswith("ModelCheckpoint") and init.get("monitor"):
            return str(init["monitor"]), str(init.get("mode", "min"))
    raise ConfigError(f"{config}: no ModelCheckpoint in trainer.callbacks has a monitor (e.g. val/map_50, mode max): nothing to optimise")


def set_key(config: dict[str, Any], key: str, value: Any) -> None:
    """Set ``config[a][b][c] = value`` for ``key`` ``a.b.c``, making the mappings on the way."""
    *parents, last = key.split(".")
    node = config
    for i, part in enumerate(parents):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"{key}: {'.'.join(parents[: i + 1])} is {child!r} in the config, not a mapping")
        node = child
    node[last] = value
