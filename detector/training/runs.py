"""Named, versioned run folders: every run of ``detector train`` lives in ``ROOT/NAME/vN/`` (its
resolved config, checkpoints, logs, pictures and results), and nothing is ever overwritten.

A new ``fit`` takes the next version (``v1``, ``v2``, ...), reserved by creating its folder, so two
runs started at once never share one. The processes of one distributed run share the folder: those
Lightning starts itself inherit it (``DETECTOR_RUN`` in the environment); under torchrun or SLURM
(every process started at once) rank 0 reserves the version and the others read it from a marker
file named after the job. ``--ckpt_path last`` continues the newest version of the name
that has a ``last.ckpt`` (or the version asked for); ``best`` / ``last`` for the other subcommands
read the newest version that has that checkpoint.
"""

from __future__ import annotations

import csv
import os
import re
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from detector.errors import ConfigError

__all__ = [
    "INHERITED", "RunConfig", "RunFolder", "RunSummary", "find_run", "list_runs", "new_run", "run_of_checkpoint",
    "shared_new_run", "versions",
]

INHERITED = "DETECTOR_RUN"  # the run folder a process started by the run's own launcher continues

_VERSION = re.compile(r"v(\d+)")


@dataclass
class RunConfig:
    """Where a run's files go: ``root/name/vN``.

    Attributes:
        name: the run's name (default: the config file's name without ``.yaml``).
        root: the folder of every run.
        version: a version to continue or read (default: a new one for ``fit``, the newest for the
            other subcommands and for ``--ckpt_path last``).
    """

    name: str | None = None
    root: str = "runs"
    version: int | None = None


@dataclass(frozen=True)
class RunFolder:
    """One run's folder, ``root/name/v{version}``."""

    root: Path
    name: str
    version: int

    @property
    def path(self) -> Path:
        return self.root / self.name / f"v{self.version}"

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    def __str__(self) -> str:
        return str(self.path)


def versions(root: Path, name: str) -> list[int]:
    """The versions of run ``name`` under ``root`` that exist, ascending."""
    folder = Path(root) / name
    if not folder.is_dir():
        return []
    return sorted(int(m.group(1)) for p in folder.iterdir() if p.is_dir() and (m := _VERSION.fullmatch(p.name)))


def new_run(root: str | Path, name: str) -> RunFolder:
    """Reserve the next version of run ``name``: its folder is created here, by this process alone."""
    root = Path(root)
    (root / name).mkdir(parents=True, exist_ok=True)
    version = max(versions(root, name), default=0) + 1
    while True:
        try:
            (root / name / f"v{version}").mkdir()
            return RunFolder(root, name, version)
        except FileExistsError:  # another run took it between the listing and here
            version += 1


def _launch_id() -> str | None:
    """What every process of one launch shares, and no other launch: torchrun's run id (``none``
    unless ``--rdzv-id`` is given) with the port of the store its agent opened for this launch;
    SLURM's job id with the step (each ``srun`` in a batch script is a step of the same job)."""
    if os.environ.get("TORCHELASTIC_RUN_ID") is not None:
        return f"{os.environ['TORCHELASTIC_RUN_ID']}-{os.environ.get('MASTER_PORT', '')}"
    if os.environ.get("SLURM_JOB_ID") is not None:
        return f"{os.environ['SLURM_JOB_ID']}.{os.environ.get('SLURM_STEP_ID', '')}"
    return None


def shared_new_run(root: str | Path, name: str, timeout: float = 300.0) -> RunFolder:
    """:func:`new_run` for one process of a run: every process of a torchrun or SLURM launch gets
    the version that rank 0 reserved (a marker file ``ROOT/NAME/.job-ID`` passes it on, on the
    shared filesystem the checkpoints need anyway; the ID is the launch's, so a marker left by an
    earlier launch of the same job is never read); any other process reserves its own."""
    job = _launch_id()
    world = int(os.environ.get("WORLD_SIZE") or os.environ.get("SLURM_NTASKS") or 1)
    if job is None or world <= 1:
        return new_run(root, name)
    rank = int(os.environ.get("RANK") or os.environ.get("SLURM_PROCID") or 0)
    marker = Path(root) / name / f".job-{job}"
    if rank == 0:
        run = new_run(root, name)
        marker.write_text(str(run.version))
        return run
    deadline = time.monotonic() + timeout
    while not marker.is_file() or not marker.read_text().strip():
        if time.monotonic() > deadline:
            raise ConfigError(f"rank {rank}: rank 0 did not reserve a run folder within {timeout:.0f} s ({marker})")
        time.sleep(0.2)
    return RunFolder(Path(root), name, int(marker.read_text()))


def run_of_checkpoint(path: Path) -> RunFolder | None:
    """The run folder a checkpoint file lies in (``ROOT/NAME/vN/checkpoints/FILE``), if it does."""
    parts = Path(path).resolve().parts
    if len(parts) < 5 or parts[-2] != "checkpoints" or not parts[-3][1:].isdigit() or parts[-3][0] != "v":
        return None
    return RunFolder(Path(*parts[:-4]), parts[-4], int(parts[-3][1:]))


def find_run(root: str | Path, name: str, needs: str, version: int | None = None) -> RunFolder:
    """The newest version of run ``name`` (or ``version``) that holds ``checkpoints/{needs}``.

    Raises:
        ConfigError: no such version, naming where it looked.
    """
    root = Path(root)
    candidates = [version] if version is not None else sorted(versions(root, name), reverse=True)
    for v in candidates:
        run = RunFolder(root, name, v)
        if (run.checkpoints / needs).is_file():
            return run
    where = f"{root / name / f'v{version}'}" if version is not None else f"any version of {root / name}"
    raise ConfigError(
        f"no {needs} in {where}: train the run first (detector train fit), give --run.name or --run.version, "
        "or give --ckpt_path a checkpoint file"
    )


@dataclass
class RunSummary:
    """What ``detector runs`` shows of one run folder, read from its files alone (no torch).

    Attributes:
        run: the folder.
        started: when its resolved ``config.yaml`` was written (the run's start), or ``None``.
        epochs: epochs logged so far (the CSV log's last epoch + 1), and the run's length when the
            config gives it (``trainer.max_epochs``), else ``None``.
        monitor: what ``best.ckpt`` keeps the best of (``val/fitness``, ``val/map_50``, ...), and its best
            value and epoch in the CSV log (``None`` when nothing was logged yet).
        checkpoints: the checkpoint files' stems (``best``, ``last``).
        results: the splits of its results folder (``val``, ``test``).
    """

    run: RunFolder
    started: datetime | None
    epochs: tuple[int, int | None]
    monitor: str | None
    best: tuple[float, int] | None
    checkpoints: list[str]
    results: list[str]


def _monitor(config: dict[str, Any]) -> tuple[str | None, str]:
    """(what the first monitored ModelCheckpoint watches, its mode) in a resolved config."""
    for callback in (config.get("trainer") or {}).get("callbacks") or []:
        init = (callback or {}).get("init_args") or {}
        if str(callback.get("class_path", "")).endswith("ModelCheckpoint") and init.get("monitor"):
            return init["monitor"], init.get("mode", "min")
    return None, "max"


def summarize_run(run: RunFolder) -> RunSummary:
    """The :class:`RunSummary` of ``run``; files a run has not written yet are left out, not errors."""
    import yaml

    config_file = run.path / "config.yaml"
    config = yaml.safe_load(config_file.read_text()) if config_file.is_file() else {}
    config = config if isinstance(config, dict) else {}
    monitor, mode = _monitor(config)
    rows: list[dict[str, str]] = []
    log = run.path / "csv" / "metrics.csv"
    if log.is_file():
        with log.open(newline="") as f:
            rows = list(csv.DictReader(f))
    done = max((int(float(r["epoch"])) + 1 for r in rows if r.get("epoch")), default=0)
    best = None
    scored = [(float(r[monitor]), int(float(r["epoch"]))) for r in rows if monitor and r.get(monitor) and r.get("epoch")]
    if scored:
        best = (max if mode == "max" else min)(scored, key=lambda v: v[0])
    total = (config.get("trainer") or {}).get("max_epochs")
    return RunSummary(
        run,
        datetime.fromtimestamp(config_file.stat().st_mtime) if config_file.is_file() else None,
        (done, int(total) if isinstance(total, int) and total > 0 else None),
        monitor,
        best,
        sorted(p.stem for p in run.checkpoints.glob("*.ckpt")) if run.checkpoints.is_dir() else [],
        sorted(p.name for p in (run.path / "results").iterdir() if p.is_dir()) if (run.path / "results").is_dir() else [],
    )


def list_runs(root: str | Path, name: str | None = None) -> list[RunSummary]:
    """Every run folder under ``root`` (or every version of run ``name``), by name then version."""
    root = Path(root)
    names = [name] if name else sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
    return [summarize_run(RunFolder(root, n, v)) for n in names for v in versions(root, n)]
