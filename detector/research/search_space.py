"""The settings ``detector tune`` searches: a YAML mapping each dotted config key to a distribution.

    model.init_args.optimizer.lr: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}
    model.init_args.head.dropout: {type: float, low: 0.0, high: 0.4}
    model.init_args.head.channels: {type: int, low: 64, high: 256, step: 64}
    data.train_augment: {type: categorical, choices: [lesson, strong]}
    model.init_args.anchors.zooms: [[1.0], [0.75, 1.0, 1.3]]     # a list: categorical choices

``float`` and ``int`` take ``low``, ``high`` and ``log`` or ``step`` (Optuna's ``suggest_float`` /
``suggest_int``); ``categorical`` takes ``choices``. A choice that is a list or a mapping is kept
in the study as its JSON text (Optuna's storages hold plain values only) and given to the config
as the value again. Each value reaches the trial's config as a command-line override
(``--model.init_args.optimizer.lr=0.003``), so any key ``detector train`` accepts can be searched.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import BaseTrial

from detector.errors import ConfigError, MissingFileError

__all__ = ["SearchSpace", "Setting", "describe", "override", "read_space"]

_KEYS = {"float": {"type", "low", "high", "log", "step"}, "int": {"type", "low", "high", "log", "step"}, "categorical": {"type", "choices"}}


@dataclass(frozen=True)
class Setting:
    """One searched key: its Optuna distribution; ``encoded``: its choices are kept as JSON text."""

    key: str
    distribution: BaseDistribution
    encoded: bool = False

    def decode(self, value: Any) -> Any:
        """The study's value -> the config's value."""
        return json.loads(value) if self.encoded else value


@dataclass(frozen=True)
class SearchSpace:
    """The searched settings, in the file's order."""

    settings: tuple[Setting, ...]
    source: str = "the search space"

    def suggest(self, trial: BaseTrial) -> dict[str, Any]:
        """Draw every setting for ``trial``; returns the config's values by key."""
        return {s.key: s.decode(_suggest(trial, s)) for s in self.settings}

    def values(self, params: dict[str, Any]) -> dict[str, Any]:
        """A finished trial's ``params`` -> the config's values by key."""
        return {s.key: s.decode(params[s.key]) for s in self.settings if s.key in params}

    def params_of(self, config: dict[str, Any]) -> dict[str, Any] | None:
        """The study's params for the values ``config`` (a YAML mapping) itself has, or ``None``
        when it lacks one or has one outside its distribution (it cannot be a trial then)."""
        params = {}
        for s in self.settings:
            node: Any = config
            for part in s.key.split("."):
                if not isinstance(node, dict) or part not in node:
                    return None
                node = node[part]
            value = json.dumps(node) if s.encoded else node
            if not _within(s.distribution, value):
                return None
            params[s.key] = value
        return params

    def overrides(self, values: dict[str, Any]) -> list[str]:
        """The values as ``detector train`` arguments."""
        return [override(key, value) for key, value in values.items()]


def _within(d: BaseDistribution, value: Any) -> bool:
    if isinstance(d, CategoricalDistribution):
        return value in d.choices
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not d.low <= value <= d.high:
        return False
    return d.step is None or abs((value - d.low) / d.step - round((value - d.low) / d.step)) < 1e-9


def _suggest(trial: BaseTrial, s: Setting) -> Any:
    d = s.distribution
    if isinstance(d, FloatDistribution):
        return trial.suggest_float(s.key, d.low, d.high, log=d.log, step=d.step)
    if isinstance(d, IntDistribution):
        return trial.suggest_int(s.key, d.low, d.high, log=d.log, step=d.step)
    return trial.suggest_categorical(s.key, d.choices)


def override(key: str, value: Any) -> str:
    """``--key=value`` as the command line takes it (text as it is, anything else as JSON)."""
    return f"--{key}={value if isinstance(value, str) else json.dumps(value)}"


def _number(where: str, spec: dict[str, Any], name: str, kind: type) -> Any:
    value = spec.get(name)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind is int and not isinstance(value, int)):
        raise ConfigError(f"{where}: {name} must be {'an integer' if kind is int else 'a number'}, got {value!r}")
    return kind(value)


def _setting(where: str, key: str, spec: Any) -> Setting:
    if isinstance(spec, list):
        spec = {"type": "categorical", "choices": spec}
    if not isinstance(spec, dict):
        raise ConfigError(f"{where}: expected {{type: float|int|categorical, ...}} or a list of choices, got {spec!r}")
    kind = spec.get("type")
    if kind not in _KEYS:
        raise ConfigError(f"{where}: type must be one of {', '.join(_KEYS)}, got {kind!r}")
    unknown = set(spec) - _KEYS[kind]
    if unknown:
        raise ConfigError(f"{where}: unknown keys {sorted(unknown)} for type {kind} (it takes {sorted(_KEYS[kind] - {'type'})})")
    if kind == "categorical":
        choices = spec.get("choices")
        if not isinstance(choices, list) or not choices:
            raise ConfigError(f"{where}: choices must be a non-empty list")
        encoded = any(isinstance(c, (list, dict)) for c in choices)
        return Setting(key, CategoricalDistribution([json.dumps(c) for c in choices] if encoded else choices), encoded)
    number = float if kind == "float" else int
    low, high = _number(where, spec, "low", number), _number(where, spec, "high", number)
    log, step = bool(spec.get("log", False)), spec.get("step")
    if step is not None:
        step = _number(where, spec, "step", number)
    try:
        if kind == "float":
            return Setting(key, FloatDistribution(low, high, log=log, step=step))
        return Setting(key, IntDistribution(low, high, log=log, step=1 if step is None else step))
    except ValueError as e:  # Optuna's own checks: low > high, log with low <= 0, log with step
        raise ConfigError(f"{where}: {e}") from None


def read_space(path: str | Path) -> SearchSpace:
    """The search space of a YAML file (module docstring).

    Raises:
        MissingFileError: no such file. ConfigError: a malformed entry, naming the file and key.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"{path}: no such search space file")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({' '.join(str(e).split())})") from None
    if not isinstance(raw, dict) or not raw:
        raise ConfigError(f"{path}: expected a mapping of dotted config keys to distributions")
    settings = []
    for key, spec in raw.items():
        if not isinstance(key, str) or not key or key.startswith("-") or " " in key:
            raise ConfigError(f"{path}: {key!r} is not a dotted config key (e.g. model.init_args.optimizer.lr)")
        settings.append(_setting(f"{path}: {key}", key, spec))
    return SearchSpace(tuple(settings), str(path))


def describe(values: dict[str, Any], keys: Sequence[str] | None = None) -> str:
    """``lr=0.0031, dropout=0.12``: each value by the last part of its key, floats to 3 figures."""
    parts = []
    for key, value in values.items():
        if keys is not None and key not in keys:
            continue
        shown = f"{value:.3g}" if isinstance(value, float) else json.dumps(value) if not isinstance(value, str) else value
        parts.append(f"{key.rsplit('.', 1)[-1]}={shown}")
    return ", ".join(parts)
