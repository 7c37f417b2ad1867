"""Samples and batches: the dataset that decodes and augments a split's images, and the collate.

A batch (what every DataLoader here yields) is a dict; B images, M = the batch's largest object
count (possibly 0):

    images     (B, 3, S, S) float32, normalised with the backbone's mean / std
    boxes      (B, M, 4)    float32 xyxy in [0, 1]
    labels     (B, M)       int64 in 0..C-1, -1 marking padding
    difficult  (B, M)       bool
    image_ids  (B,)         int64, the JSON's image ids
    sizes      (B, 2)       int64 original (height, width) in pixels, to map predictions back
    skipped_ids (K,)        int64, image ids of the batch dropped at run time (below); usually empty

Bad images at run time: records are validated when a split loads (``detector.data.records``), but
a file can still go bad later (deleted, overwritten, a truncated JPEG whose header was fine). Then
the dataset raises :class:`BadRecordError` naming the JSON, the image id and the file; under
``on_bad_record="skip"`` it logs that message as a warning instead and returns a
:class:`SkippedSample`, which the collate drops from the batch and lists in ``skipped_ids``
(``detector.training.guards.ImageCounts`` logs the count per epoch). A batch can so end up with
B = 0; the module's steps skip it (``detector.training.guards.batch_is_empty``). Determinism: the
skipped image leaves a hole; every other image keeps its place, batch and augmentation (those
depend only on (seed, epoch, index): :mod:`detector.data.samplers`), so runs that meet the same bad
files at the same moments stay identical. Any other exception while loading a sample gets a note
naming the file and image id. Raised in a DataLoader worker, the BadRecordError reaches the main
process with the worker's message alone (:class:`detector.errors.UserError`), so ``detector train``
ends with that one line.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.nn.utils.rnn import pad_sequence
from torch.utils.data import Dataset

from detector.data.image import ImageDecodeError, load_image, reduced_size
from detector.data.records import LoadedSplit, OnBadRecord, Record
from detector.data.samplers import sample_seed
from detector.data.transforms import DetectionTransform
from detector.errors import BadRecordError

__all__ = ["DetectionDataset", "SkippedSample", "collate_detections", "targets_in_pixels"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SkippedSample:
    """What the dataset returns, under ``on_bad_record="skip"``, for an image that went bad after
    its split was validated; ``image_size`` is the network input side S (for a batch of none)."""

    image_id: int
    image_size: int


class DetectionDataset(Dataset):
    """Decodes and transforms the images of a :class:`LoadedSplit`.

    ``dataset[i]`` uses the epoch of :meth:`set_epoch`; ``dataset[(epoch, i)]`` (what
    :class:`EpochSampler` yields) names the epoch itself. A sample is a dict:
    ``image (3, S, S)`` float32; ``boxes (m, 4)`` float32 xyxy in [0, 1]; ``labels (m,)`` int64;
    ``difficult (m,)`` bool; ``image_id`` int; ``size`` (height, width) of the original image;
    or, for an image that cannot be read under ``on_bad_record="skip"``, a :class:`SkippedSample`.

    ``final`` = ``(epoch, transform)``: samples of that epoch and later use that transform instead
    (the lighter augmentation of a run's last epochs; chosen by the sample's epoch, so it reaches
    worker processes and resumed runs alike).

    ``cache_images``: keep each decoded image in this process's memory after its first use, so
    later epochs skip the JPEG decode (:mod:`detector.data.image_cache`). Each loader worker
    process keeps its own cache.
    """

    def __init__(
        self,
        split: LoadedSplit,
        transform: DetectionTransform,
        seed: int = 0,
        on_bad_record: OnBadRecord = "error",
        final: tuple[int, DetectionTransform] | None = None,
        cache_images: bool = False,
    ):
        self.split, self.transform, self.seed, self.epoch = split, transform, seed, 0
        self.on_bad_record, self.final = on_bad_record, final
        self.cache = None
        if cache_images:
            from detector.data.image_cache import ImageCache

            self.cache = ImageCache()

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.split.records)

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any] | SkippedSample:
        epoch, index = key if isinstance(key, tuple) else (self.epoch, key)
        record = self.split.records[index]
        try:
            return self._sample(record, epoch, index)
        except BadRecordError as e:
            if self.on_bad_record == "error":
                restore = " (detector data import restores a truncated image PIL can still read)" if "truncated" in str(e) else ""
                raise BadRecordError(f"{e}; fix or remove the file{restore}, or set data.on_bad_record: skip to drop it") from e
            log.warning("skipped at run time: %s", e)
            return SkippedSample(record.image_id, self.transform.size)
        except Exception as e:  # not the data's fault, as far as we know: say where, and let it through
            e.add_note(f"while loading {self.split.json_path}: image id {record.image_id} ({record.path})")
            raise

    def _decode(self, record: Record, index: int) -> np.ndarray:
        """The record's image, ``(h, w, 3)`` uint8, checked against the JSON's size; from the cache
        when there is one and it holds the image."""
        cached = self.cache.get(index) if self.cache is not None else None
        if cached is not None:
            return cached
        where = f"{self.split.json_path}: image id {record.image_id}"
        try:
            # Large JPEGs decode at a reduced scale that still covers the output size (see load_image).
            image = load_image(record.path, min_side=self.transform.size)
        except ImageDecodeError as e:
            raise BadRecordError(f"{where}: {e}") from e
        height, width = image.shape[:2]
        full = (record.width, record.height)
        if (width, height) not in (full, reduced_size(full, self.transform.size)):
            raise BadRecordError(
                f"{where} ({record.path}): decoded as {width} x {height} (width x height), "
                f"the JSON says {record.width} x {record.height}"
            )
        if self.cache is not None:
            self.cache.put(index, image)
        return image

    def _sample(self, record: Record, epoch: int, index: int) -> dict[str, Any]:
        image = self._decode(record, index)
        height, width = image.shape[:2]
        full = (record.width, record.height)
        boxes = record.boxes
        if (width, height) != full:
            boxes = boxes * np.array([width / record.width, height / record.height] * 2, dtype=np.float32)  # (n, 4)
        transform = self.final[1] if self.final is not None and epoch >= self.final[0] else self.transform
        out = transform(image, boxes, sample_seed(self.seed, epoch, index))
        return {
            "image": out.image,
            "boxes": out.boxes,
            "labels": torch.from_numpy(record.labels[out.keep]),
            "difficult": torch.from_numpy(record.difficult[out.keep]),
            "image_id": record.image_id,
            "size": (record.height, record.width),
        }


def collate_detections(samples: list[dict[str, Any] | SkippedSample]) -> dict[str, Tensor]:
    """Stack images and pad the per-image objects to the batch's largest count M (see the module doc);
    :class:`SkippedSample` s are left out and listed in ``skipped_ids``."""
    skipped = [s.image_id for s in samples if isinstance(s, SkippedSample)]
    kept = [s for s in samples if not isinstance(s, SkippedSample)]
    if kept:
        images = torch.stack([s["image"] for s in kept])  # (B, 3, S, S)
    else:  # every image of the batch went bad: B = 0
        images = torch.zeros(0, 3, samples[0].image_size, samples[0].image_size)
    return {
        "images": images,
        "boxes": _pad([s["boxes"] for s in kept], (0, 4), torch.float32, 0.0),  # (B, M, 4)
        "labels": _pad([s["labels"] for s in kept], (0,), torch.int64, -1),  # (B, M)
        "difficult": _pad([s["difficult"] for s in kept], (0,), torch.bool, False),  # (B, M)
        "image_ids": torch.tensor([s["image_id"] for s in kept], dtype=torch.int64),  # (B,)
        "sizes": torch.tensor([s["size"] for s in kept], dtype=torch.int64).reshape(-1, 2),  # (B, 2)
        "skipped_ids": torch.tensor(skipped, dtype=torch.int64),  # (K,)
    }


def _pad(rows: list[Tensor], row_shape: tuple[int, ...], dtype: torch.dtype, value: float | int | bool) -> Tensor:
    """``pad_sequence`` that also accepts no rows at all (a batch whose every image was skipped)."""
    if not rows:
        return torch.zeros((0, *row_shape), dtype=dtype)
    return pad_sequence(rows, batch_first=True, padding_value=value)


def targets_in_pixels(batch: dict[str, Tensor]) -> list[dict[str, Tensor]]:
    """A batch's ground truth -> per image ``boxes (n, 4)`` xyxy in original-image pixels,
    ``labels (n,)``, ``difficult (n,)`` and ``image_id`` (0-d), padding removed (what the metrics take)."""
    h, w = batch["sizes"][:, 0:1], batch["sizes"][:, 1:2]  # (B, 1) each
    scale = torch.cat([w, h, w, h], dim=1).to(batch["boxes"].dtype)  # (B, 4)
    boxes = batch["boxes"] * scale[:, None, :]  # (B, M, 4)
    real = batch["labels"] >= 0  # (B, M)
    return [
        {
            "boxes": boxes[i][real[i]], "labels": batch["labels"][i][real[i]], "difficult": batch["difficult"][i][real[i]],
            "image_id": batch["image_ids"][i],
        }
        for i in range(boxes.shape[0])
    ]
