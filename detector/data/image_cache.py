"""Decoded images kept in memory after their first use (``data.cache_images: true``; ultralytics'
``cache=ram``), so that later epochs skip the JPEG decode.

For the shapes config the decode is about a quarter of the time an image takes to load at 224 px
(the augmentation is the rest). The cost is ``height x width x 3`` bytes per image, in every
loader process: the training process when ``num_workers`` is 0, else each worker; under DDP each
process, since each epoch's shuffle deals each process other images.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from lightning.pytorch.utilities import rank_zero_info

from detector.data.image import reduced_size
from detector.data.records import LoadedSplit, Record
from detector.errors import ConfigError

__all__ = ["ImageCache", "check_cache_memory"]


class ImageCache(dict[int, np.ndarray]):
    """Dataset index -> decoded ``(h, w, 3)`` uint8 image. One per dataset object, so one per
    loader process."""

    def put(self, index: int, image: np.ndarray) -> None:
        """Keep ``image``, made read-only (a transform that wrote into it would change later epochs)."""
        image.flags.writeable = False
        self[index] = image


def _available_memory() -> int | None:
    """Bytes of memory available now (Linux ``MemAvailable``), None where it cannot be read."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def check_cache_memory(splits: Sequence[LoadedSplit], image_size: int, num_workers: int) -> None:
    """Log what caching ``splits`` at network input side ``image_size`` will hold; refuse it
    (:class:`ConfigError`) when that exceeds the memory available."""

    def decoded(r: Record) -> tuple[int, int]:  # what load_image returns: only JPEGs decode reduced
        full = (r.width, r.height)
        return reduced_size(full, image_size) if r.path.suffix.lower() in (".jpg", ".jpeg") else full

    per_process = sum(w * h * 3 for split in splits for w, h in map(decoded, split.records))
    processes = max(num_workers, 1)
    available = _available_memory()
    names = ", ".join(str(split.json_path) for split in splits)
    need = f"{per_process * processes / 2**30:.2f} GiB ({per_process / 2**30:.2f} GiB x {processes} loader processes) for {names}"
    if available is not None and per_process * processes > available:
        raise ConfigError(
            f"data.cache_images needs {need}, more than the {available / 2**30:.2f} GiB of memory available: "
            "set data.cache_images: false, or fewer data.num_workers"
        )
    rank_zero_info(f"data.cache_images: decoded images kept in memory after first use, up to {need}")
