"""A wandb logger that never needs a network: offline unless the user has configured wandb."""

from __future__ import annotations

import netrc
import os
from typing import Any

from lightning.pytorch.loggers import WandbLogger as _LightningWandbLogger

__all__ = ["WandbLogger", "wandb_configured"]


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
