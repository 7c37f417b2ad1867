"""Loggers that survive resumption and need no network: a CSV logger that appends to a resumed
run's ``metrics.csv``, and a wandb logger that is offline unless the user has configured wandb."""

from __future__ import annotations

import csv
import netrc
import os
from typing import Any

from lightning.pytorch.loggers import CSVLogger as _LightningCSVLogger
from lightning.pytorch.loggers import WandbLogger as _LightningWandbLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.loggers.logger import rank_zero_experiment

__all__ = ["CSVLogger", "WandbLogger", "wandb_configured"]


class _AppendingWriter(ExperimentWriter):
    """Lightning's CSV writer, except that an existing ``metrics.csv`` is kept and appended to
    (Lightning 2.6 deletes it, so a resumed run loses every row logged before the interruption)."""

    def _check_log_dir_exists(self) -> None:
        if self._fs.isfile(self.metrics_file_path):  # continue with its columns
            with self._fs.open(self.metrics_file_path, "r", newline="") as f:
                self.metrics_keys = list(csv.DictReader(f).fieldnames or [])

    def drop_rows_from(self, step: int) -> None:
        """Remove the rows logged at ``step`` or later: what a killed run wrote after the checkpoint
        a resumed run starts from (``step`` = its global step), and which the resumed run logs again."""
        if not self._fs.isfile(self.metrics_file_path):
            return
        with self._fs.open(self.metrics_file_path, "r", newline="") as f:
            reader = csv.DictReader(f)
            fields, rows = reader.fieldnames or [], [r for r in reader if int(r["step"]) < step]
        with self._fs.open(self.metrics_file_path, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=fields)
            writer.writeheader()
            writer.writerows(rows)


class CSVLogger(_LightningCSVLogger):
    """Lightning's ``CSVLogger`` for runs that resume: ``train.py fit --ckpt_path last`` gives it the
    interrupted run's version, and the resumed run's rows follow the rows logged before the checkpoint
    in the same ``metrics.csv`` (:class:`detector.callbacks.RunIdentity` drops the rows a killed run
    logged after it). A new run in a new version behaves exactly like Lightning's."""

    @property
    @rank_zero_experiment
    def experiment(self) -> _AppendingWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _AppendingWriter(log_dir=self.log_dir)
        return self._experiment


def wandb_configured() -> bool:
    """True when wandb can log online: an API key in the environment or in ``~/.netrc``, and
    ``WANDB_MODE`` not set to ``offline``/``disabled``."""
    if os.environ.get("WANDB_MODE", "").lower() in ("offline", "disabled", "dryrun"):
        return False
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


class WandbLogger(_LightningWandbLogger):
    """Lightning's ``WandbLogger`` with ``offline`` decided by :func:`wandb_configured` when not given.

    Offline runs write their files under ``save_dir/wandb`` and can be uploaded later with
    ``wandb sync``. Pass ``id`` (and ``resume="allow"``) to continue a run.
    """

    def __init__(self, project: str = "detector", offline: bool | None = None, **kwargs: Any) -> None:
        if offline is None:
            offline = not wandb_configured()
        os.environ.setdefault("WANDB_SILENT", "true")
        super().__init__(project=project, offline=offline, **kwargs)
