"""Loggers that survive resumption and need no network: a CSV logger that appends to a resumed
run's ``metrics.csv``, a wandb logger that is offline unless the user has configured wandb, and the
callback that keeps a resumed run in its loggers' run (version, wandb id)."""

from __future__ import annotations

import csv
import netrc
import os
from argparse import Namespace
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.core.saving import save_hparams_to_yaml
from lightning.pytorch.loggers import Logger
from lightning.pytorch.loggers import WandbLogger as _LightningWandbLogger
from lightning.pytorch.utilities import rank_zero_only
from torch import Tensor

__all__ = ["CSVLogger", "RunIdentity", "WandbLogger", "wandb_configured"]


class CSVLogger(Logger):
    """Metrics to ``SAVE_DIR/NAME/version_N/metrics.csv`` (one row per logging step, one column per
    metric, sorted, with ``step``) and hyperparameters to ``hparams.yaml`` beside it, as Lightning's
    ``CSVLogger`` writes them, except that an existing ``metrics.csv`` is kept and appended to.

    Written on Lightning's public ``Logger`` API because Lightning's own CSV writer (2.6) deletes an
    existing ``metrics.csv`` when it starts, so a resumed run (``--ckpt_path last`` gives it the
    interrupted run's version) would lose every row logged before the interruption.
    :class:`RunIdentity` drops the rows a killed run logged after its last checkpoint.
    """

    def __init__(self, save_dir: str | Path, name: str = "csv", version: int | str | None = None) -> None:
        super().__init__()
        self._save_dir, self._name, self._version = str(save_dir), name, version
        self._rows: list[dict[str, Any]] = []  # logged since the last save
        self._keys: list[str] | None = None  # the file's header, once read or written

    @property
    def name(self) -> str:
        return self._name

    @property
    def version(self) -> int | str:
        if self._version is None:
            root = Path(self.root_dir)
            numbers = [int(p.name[8:]) for p in root.glob("version_*") if p.is_dir() and p.name[8:].isdigit()]
            self._version = max(numbers, default=-1) + 1
        return self._version

    @property
    def save_dir(self) -> str:
        return self._save_dir

    @property
    def root_dir(self) -> str:
        return os.path.join(self._save_dir, self._name)

    @property
    def log_dir(self) -> str:
        version = self.version if isinstance(self.version, str) else f"version_{self.version}"
        return os.path.join(self.root_dir, version)

    @property
    def metrics_file(self) -> Path:
        return Path(self.log_dir) / "metrics.csv"

    @property
    def experiment(self) -> CSVLogger:
        return self

    @rank_zero_only
    def log_hyperparams(self, params: dict[str, Any] | Namespace, *args: Any, **kwargs: Any) -> None:
        params = vars(params) if isinstance(params, Namespace) else dict(params)
        Path(self.log_dir).mkdir(parents=True, exist_ok=True)
        save_hparams_to_yaml(os.path.join(self.log_dir, "hparams.yaml"), params)

    @rank_zero_only
    def log_metrics(self, metrics: dict[str, Any], step: int | None = None) -> None:
        row = {k: v.item() if isinstance(v, Tensor) else v for k, v in metrics.items()}
        row["step"] = len(self._rows) if step is None else step
        self._rows.append(row)

    @rank_zero_only
    def save(self) -> None:
        """Append the rows logged since the last save; a new column rewrites the file with it."""
        if not self._rows:
            return
        path = self.metrics_file
        path.parent.mkdir(parents=True, exist_ok=True)
        if self._keys is None:
            self._keys = self._read()[1]  # a resumed run's file: continue with its columns
        keys = sorted(set(self._keys).union(*self._rows))
        if path.is_file() and keys == self._keys:
            with path.open("a", newline="") as f:
                csv.DictWriter(f, fieldnames=keys).writerows(self._rows)
        else:
            self._write(keys, self._read()[0] + self._rows)
        self._rows = []

    @rank_zero_only
    def finalize(self, status: str) -> None:
        self.save()

    def drop_rows_from(self, step: int) -> None:
        """Remove the rows logged at ``step`` or later: what a killed run wrote after the checkpoint
        a resumed run starts from (``step`` = its global step), and which the resumed run logs again."""
        rows, keys = self._read()
        if keys:
            self._write(keys, [r for r in rows if int(r["step"]) < step])

    def _read(self) -> tuple[list[dict[str, Any]], list[str]]:
        if not self.metrics_file.is_file():
            return [], []
        with self.metrics_file.open(newline="") as f:
            reader = csv.DictReader(f)
            return list(reader), list(reader.fieldnames or [])

    def _write(self, keys: list[str], rows: list[dict[str, Any]]) -> None:
        self._keys = keys
        with self.metrics_file.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=keys)
            writer.writeheader()
            writer.writerows(rows)


class RunIdentity(L.Callback):
    """Records each logger's run id (TensorBoard/CSV ``version``, wandb run ``id``) in checkpoints,
    and flushes the loggers whenever a checkpoint is written.

    ``detector train fit --ckpt_path ...`` reads the ids back before building the loggers, so a resumed run
    keeps writing to the same dashboard run instead of starting a new one. The flush makes a killed
    run's logs hold everything up to its last checkpoint, where the resumed run carries on
    (TensorBoard otherwise writes every 2 minutes, and a kill loses the rest).
    """

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: Any, checkpoint: dict[str, Any]) -> None:
        for logger in trainer.loggers:
            logger.save()

    def on_train_start(self, trainer: L.Trainer, pl_module: Any) -> None:
        """A resumed run's CSV (:class:`CSVLogger`) keeps the rows logged before its checkpoint and
        loses those a killed run logged after it, which this run logs again."""
        for logger in trainer.loggers:
            if isinstance(logger, CSVLogger) and trainer.is_global_zero:
                logger.drop_rows_from(trainer.global_step)

    def __init__(self) -> None:
        self.loggers: list[dict[str, Any]] = []

    def setup(self, trainer: L.Trainer, pl_module: Any, stage: str) -> None:
        self.loggers = [{"type": type(lg).__name__, "version": lg.version} for lg in trainer.loggers]

    def state_dict(self) -> dict[str, Any]:
        return {"loggers": self.loggers}


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
