"""The random-number state a resumed run needs to continue exactly where it stopped."""

from __future__ import annotations

import random
from typing import Any

import lightning as L
import numpy as np
import torch

__all__ = ["RNGState"]


class RNGState(L.Callback):
    """Saves the global RNG states (torch CPU and CUDA, NumPy, ``random``) with every checkpoint and
    restores them on resume, so a resumed run draws the same dropout masks as an uninterrupted one.

    Lightning restores epoch, step, optimiser and scheduler but not these. The data pipeline does not
    need them (its shuffling and augmentation are seeded by (seed, epoch, index)); dropout does.
    Stored as tensors and plain lists, so checkpoints still load with ``weights_only=True``.
    """

    def state_dict(self) -> dict[str, Any]:
        kind, keys, pos, has_gauss, gauss = np.random.get_state()
        state = {
            "torch": torch.get_rng_state(),
            "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss],
            "python": random.getstate(),
        }
        if torch.cuda.is_available():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        torch.set_rng_state(state["torch"])
        kind, keys, pos, has_gauss, gauss = state["numpy"]
        np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
        random.setstate(_tuples(state["python"]))
        if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(state["cuda"])


def _tuples(x: Any) -> Any:
    """``random.setstate`` wants the nested tuples back (a checkpoint may hand over lists)."""
    return tuple(_tuples(v) for v in x) if isinstance(x, (list, tuple)) else x
