"""The runs of one config at several seeds: each an ordinary run folder of ``detector train fit``,
found again when it is already finished and trained (one at a time) when it is not.

Seed ``S`` is ``--seed_everything S --data.seed S``: the first seeds the network's initialisation
and dropout, the second the order of the training images and every augmentation
(:mod:`detector.data.samplers`), which ``seed_everything`` leaves at the config's ``data.seed``;
both, so that the seeds sample every random choice of a training run, not the initialisation
alone. A config trained with seed ``S`` lives in ``ROOT/NAME_sS/vN`` (NAME: the config file's name without
``.yaml``; for a file named ``config.yaml``, as ``detector data import`` writes them, its folder's
name). When its training has finished, the folder gets ``source.json``: the config file's path and
SHA-256, the seed and ``--epochs``. A folder is reused for (config, seed, epochs) only when its
``source.json`` says exactly these (the same bytes of the config file, whatever its path), its
resolved ``config.yaml`` says the same seed (``seed_everything`` and ``data.seed``), and it holds the checkpoint that ``detector eval``
reads (``best.ckpt``; ``last.ckpt`` when the config validates nothing). A run that failed or was
killed has no ``source.json`` and is never reused; editing the config trains anew.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from detector.errors import ConfigError, UserError
from detector.training.runs import RunFolder, new_run, versions

__all__ = ["SOURCE_FILE", "SeedRun", "file_sha256", "evaluated_checkpoint", "find_finished", "run_name", "train_seed"]

SOURCE_FILE = "source.json"
"""What a finished run was trained from, in its folder (module docstring)."""

_SEED_SUFFIX = re.compile(r"_s\d+$")


def file_sha256(path: str | Path) -> str:
    """The SHA-256 of a file's bytes (a config, a checkpoint, a split's JSON)."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def run_name(name: str, seed: int) -> str:
    """The run name of ``name`` at ``seed``: ``NAME_sSEED`` (a trailing ``_sN`` of ``name`` replaced)."""
    return f"{_SEED_SUFFIX.sub('', name)}_s{seed}"


def evaluated_checkpoint(run: RunFolder) -> Path | None:
    """The checkpoint ``detector eval`` reads of a run: ``best.ckpt``, else ``last.ckpt`` (a config
    without validation keeps no best), else ``None``."""
    for name in ("best.ckpt", "last.ckpt"):
        if (run.checkpoints / name).is_file():
            return run.checkpoints / name
    return None


def read_yaml(path: Path) -> dict[str, Any]:
    """A YAML mapping, or a :class:`ConfigError` naming the file."""
    import yaml

    try:
        loaded = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise ConfigError(f"{path}: cannot be read as YAML ({' '.join(str(e).split())})") from None
    if not isinstance(loaded, dict):
        raise ConfigError(f"{path}: not a config (a YAML mapping of sections)")
    return loaded


@dataclass
class SeedRun:
    """One seed of one side: where it is (or will be) and what it was trained from.

    Attributes:
        name: the run's name (``NAME_sS``, or a given run's own).
        seed: ``seed_everything`` and ``data.seed``.
        config: the config file it is trained from.
        sha256: that file's SHA-256.
        epochs: ``--epochs`` (``None``: the config's length).
        run: its finished folder, or ``None`` while it is still to train.
        given: the run was named on the command line (used as it is).
    """

    name: str
    seed: int
    config: Path
    sha256: str
    epochs: int | None
    run: RunFolder | None = None
    given: bool = False

    @property
    def checkpoint(self) -> Path | None:
        return evaluated_checkpoint(self.run) if self.run is not None else None

    def command(self, root: str | Path, version: int | None = None) -> list[str]:
        """``detector train fit`` for this seed (into ``ROOT/NAME/vVERSION`` when given)."""
        args = ["detector", "train", "fit", "--config", str(self.config), "--seed_everything", str(self.seed),
                "--data.seed", str(self.seed), "--name", self.name, "--run.root", str(root)]
        if version is not None:
            args += ["--run.version", str(version)]
        return args + (["--epochs", str(self.epochs)] if self.epochs is not None else [])

    def source(self, command: Sequence[str]) -> dict[str, Any]:
        return {"config": str(self.config.resolve()), "sha256": self.sha256, "seed": self.seed, "epochs": self.epochs,
                "command": list(command)}


def find_finished(seed_run: SeedRun, root: str | Path) -> RunFolder | None:
    """The newest finished run of ``seed_run`` under ``root`` (module docstring), or ``None``."""
    root = Path(root)
    for version in reversed(versions(root, seed_run.name)):
        run = RunFolder(root, seed_run.name, version)
        source_file, config_file = run.path / SOURCE_FILE, run.path / "config.yaml"
        if not (source_file.is_file() and config_file.is_file()) or evaluated_checkpoint(run) is None:
            continue
        try:
            source = json.loads(source_file.read_text())
            config = read_yaml(config_file)
        except (OSError, ValueError):
            continue  # unreadable: not a run to trust
        wanted = {"sha256": seed_run.sha256, "seed": seed_run.seed, "epochs": seed_run.epochs}
        seeds = (config.get("seed_everything"), (config.get("data") or {}).get("seed"))
        if {k: source.get(k) for k in wanted} == wanted and seeds == (seed_run.seed, seed_run.seed):
            return run
    return None


def train_seed(seed_run: SeedRun, root: str | Path, say: Callable[[str], None] = print) -> RunFolder:
    """Train ``seed_run`` with ``detector train fit`` in a process of its own (its output goes to
    this process's), into a version reserved here; write ``source.json`` when it has finished.

    Raises:
        UserError: the training failed (its folder is removed when it wrote no checkpoint, as
            ``detector train`` does; one that did is kept, without ``source.json``).
    """
    run = new_run(root, seed_run.name)
    command = seed_run.command(root, run.version)
    say("$ " + " ".join(command))
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    try:
        code = subprocess.run([sys.executable, "-m", "detector", *command[1:]], env=env).returncode
    finally:  # failed or interrupted: as detector train, a run that wrote no checkpoint leaves no folder
        if not any(run.checkpoints.glob("*.ckpt")):
            shutil.rmtree(run.path, ignore_errors=True)
    if code != 0 or evaluated_checkpoint(run) is None:
        why = f"failed (exit status {code}; its output is above)" if code else "wrote no best.ckpt or last.ckpt (its config has no ModelCheckpoint)"
        raise UserError(f"training {run.path} {why}: the runs finished so far are kept, and the next detector compare reuses them")
    (run.path / SOURCE_FILE).write_text(json.dumps(seed_run.source(command), indent=1) + "\n")
    return run
