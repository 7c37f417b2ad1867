"""Batches: the dataset, the collate function, the epoch-seeded sampler and the LightningDataModule.

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
(``detector.callbacks.ImageCounts`` logs the count per epoch). A batch can so end up with B = 0;
the module's steps skip it (``StagedModule.skip_empty_batch``). Determinism: the skipped image
leaves a hole; every other image keeps its place, batch and augmentation (those depend only on
(seed, epoch, index)), so runs that meet the same bad files at the same moments stay identical.
Any other exception while loading a sample gets a note naming the file and image id.

Reproducibility: each sample's augmentation is a deterministic function of (seed, epoch, index)
(:func:`sample_seed`), however many workers there are. The train loader's :class:`EpochSampler`
yields ``(epoch, index)`` pairs, so the epoch travels with every index into whichever worker
process loads it (persistent workers hold their own copy of the dataset, so setting an attribute
on the main process's copy would not reach them). Lightning calls ``sampler.set_epoch(epoch)`` at
the start of every training epoch, a resumed one included, and the shuffle order is seeded by
(seed, epoch) as well: a run resumed at epoch e sees the same order and the same augmentation.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterator, Literal, Optional

import lightning as L
import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor
from torch.nn.utils.rnn import pad_sequence
from torch.utils.data import DataLoader, Dataset, Sampler

from detector.data.image import ImageDecodeError, load_image, reduced_size
from detector.data.records import BadRecordError, LoadedSplit, OnBadRecord, Record, load_records, read_class_names
from detector.data.transforms import IMAGENET_MEAN, IMAGENET_STD, AugmentPreset, DetectionTransform

__all__ = [
    "DetectionDataModule",
    "DetectionDataset",
    "EpochSampler",
    "ShardSampler",
    "ShapesSpec",
    "SkippedSample",
    "collate_detections",
    "sample_seed",
]

Split = Literal["train", "val", "test"]

log = logging.getLogger(__name__)


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


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """The augmentation seed of sample ``index`` in ``epoch`` of a run seeded with ``seed``."""
    return int(np.random.SeedSequence(seed, spawn_key=(1, epoch, index)).generate_state(1)[0])


class EpochSampler(Sampler[tuple[int, int]]):
    """Yields ``(epoch, index)`` for this process's share of a dataset of ``length``, shuffled by
    (seed, epoch).

    Under DDP every process draws the same permutation and takes every ``num_replicas``-th index
    from position ``rank``, after dropping the ``length % num_replicas`` last ones so every process
    runs the same number of steps (the train loader drops its incomplete batch anyway).
    Lightning calls :meth:`set_epoch` at the start of each training epoch.
    """

    def __init__(self, length: int, seed: int = 0, num_replicas: int = 1, rank: int = 0):
        self.length, self.seed, self.epoch = length, seed, 0
        self.num_replicas, self.rank = num_replicas, rank

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[tuple[int, int]]:
        rng = np.random.default_rng(np.random.SeedSequence(self.seed, spawn_key=(0, self.epoch)))
        order = rng.permutation(self.length)[: len(self) * self.num_replicas]
        return iter([(self.epoch, int(i)) for i in order[self.rank :: self.num_replicas]])

    def __len__(self) -> int:
        return self.length // self.num_replicas


class ShardSampler(Sampler[int]):
    """Evaluation under DDP: process ``rank`` takes indices ``rank, rank + num_replicas, ...`` in
    order. Every image is evaluated exactly once; shards may differ by one image (torch's
    ``DistributedSampler`` would instead pad them with duplicates, which biases the metric)."""

    def __init__(self, length: int, num_replicas: int, rank: int):
        self.indices = range(rank, length, num_replicas)

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


@dataclass
class ShapesSpec:
    """Size of the synthetic shapes dataset (see :func:`detector.data.shapes.ensure_shapes`)."""

    n_train: int = 2000
    n_val: int = 400
    image_size: int = 256
    seed: int = 0


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
    later epochs skip the JPEG decode (ultralytics' ``cache=ram``). Each loader worker process
    keeps its own cache.
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
        self.cache: dict[int, np.ndarray] | None = {} if cache_images else None  # index -> (h, w, 3) uint8

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
                raise BadRecordError(f"{e}; fix or remove the file, or set data.on_bad_record: skip to drop it") from e
            log.warning("skipped at run time: %s", e)
            return SkippedSample(record.image_id, self.transform.size)
        except Exception as e:  # not the data's fault, as far as we know: say where, and let it through
            e.add_note(f"while loading {self.split.json_path}: image id {record.image_id} ({record.path})")
            raise

    def _decode(self, record: Record, index: int) -> np.ndarray:
        """The record's image, ``(h, w, 3)`` uint8, checked against the JSON's size; from the cache
        when there is one and it holds the image."""
        if self.cache is not None and index in self.cache:
            return self.cache[index]
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
            image.flags.writeable = False  # a transform that wrote into it would change later epochs
            self.cache[index] = image
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


class DetectionDataModule(L.LightningDataModule):
    """COCO-format JSON splits + one image folder -> train / val / test / predict loaders.

    Args:
        image_dir: the folder that the JSONs' relative ``file_name``s resolve against (the course's
            ``JPEGImages``).
        train_json, val_json, test_json: COCO-format detection JSONs; each is needed only by the
            stages that use it (fit: train, and val if given; validate: val; test: test;
            predict: test, else val).
        image_size: side S of the square network input.
        batch_size: images per batch; the train loader drops the last incomplete batch when the
            split is larger than one batch (BatchNorm on the 1x1 grid cannot take a batch of 1).
            When a Trainer fits with it, a batch larger than each process's share of the train split
            is refused in ``setup`` (a misconfiguration, e.g. a debug split under a full config);
            used alone, e.g. to look at a small split, the loader yields one smaller batch.
        num_workers, persistent_workers, pin_memory: as ``torch.utils.data.DataLoader``
            (persistent workers only when ``num_workers > 0``).
        train_augment: augmentation preset of the train split (``detector.data.transforms``);
            the other splits are only resized.
        final_epochs, final_augment: the last ``final_epochs`` epochs of a fit train with the
            ``final_augment`` preset instead, so that the network ends on images like those it
            will be evaluated on (YOLOX turns its strong augmentation off for the last 15 epochs,
            ultralytics' ``close_mosaic`` for the last 10). 0 (the default): never.
        mean, std: the backbone's per-channel input statistics, for pixels in [0, 1].
        cache_images: keep the decoded images in memory after their first epoch (ultralytics'
            ``cache=ram``): later epochs skip the JPEG decode (about a quarter of the time an image
            takes to load for configs/shapes.yaml, the augmentation being the rest). Costs
            ``height x width x 3`` bytes per image (JPEGs decoded at their reduced scale where that
            applies, other files at full size), for each loader process (the training
            process when ``num_workers`` is 0, else each worker; under DDP, in every process, since
            each epoch's shuffle deals each process other images); ``setup`` logs the amount for one
            training process and refuses when it exceeds the memory available.
        on_bad_record: ``"error"`` or ``"skip"`` (see ``detector.data.records``).
        seed: base seed of the shuffle order and of every sample's augmentation.
        generate: a :class:`ShapesSpec` (YAML: ``generate: {}`` for the defaults, or
            ``{n_train: 64, n_val: 16}``) writes the synthetic shapes dataset into the folder of
            ``train_json`` in ``prepare_data`` when it is not there yet.

    Under DDP the loaders shard the data themselves (:class:`EpochSampler`, :class:`ShardSampler`),
    so the trainer must run with ``use_distributed_sampler=False`` (``train.py`` sets it).
    """

    def __init__(
        self,
        image_dir: str,
        train_json: Optional[str] = None,
        val_json: Optional[str] = None,
        test_json: Optional[str] = None,
        image_size: int = 224,
        batch_size: int = 64,
        num_workers: int = 2,
        persistent_workers: bool = True,
        pin_memory: bool = False,
        train_augment: AugmentPreset = "lesson",
        final_epochs: int = 0,
        final_augment: AugmentPreset = "lesson",
        mean: tuple[float, float, float] = IMAGENET_MEAN,
        std: tuple[float, float, float] = IMAGENET_STD,
        cache_images: bool = False,
        on_bad_record: OnBadRecord = "error",
        seed: int = 0,
        generate: Optional[ShapesSpec] = None,
    ):
        super().__init__()
        self.save_hyperparameters()
        self.generate = ShapesSpec(**generate) if isinstance(generate, dict) else generate
        self.jsons: dict[Split, Optional[str]] = {"train": train_json, "val": val_json, "test": test_json}
        self.splits: dict[Split, LoadedSplit] = {}
        self.class_names, self.class_names_from = self._read_class_names()

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def _read_class_names(self) -> tuple[list[str], str]:
        for path in self.jsons.values():
            if path is not None and Path(path).is_file():
                return read_class_names(path), path
        if self.generate is not None:
            from detector.data.shapes import CLASS_NAMES

            return list(CLASS_NAMES), "detector.data.shapes.CLASS_NAMES"
        given = [p for p in self.jsons.values() if p is not None]
        raise FileNotFoundError(f"no annotation JSON found among {given or 'train_json/val_json/test_json (none given)'}")

    def prepare_data(self) -> None:
        spec = self.generate
        if spec is not None:
            if self.jsons["train"] is None:
                raise ValueError("generate (shapes) needs train_json: the data is written into its folder")
            from detector.data.shapes import ensure_shapes

            ensure_shapes(Path(self.jsons["train"]).parent, **asdict(spec))

    def setup(self, stage: Optional[str] = None) -> None:
        """Load and validate the splits that ``stage`` needs (all given ones when ``stage`` is None)."""
        needs: dict[str, tuple[Split, ...]] = {
            "fit": ("train",),
            "validate": ("val",),
            "test": ("test",),
            "predict": ("test",) if self.jsons["test"] else ("val",),
        }
        wanted = needs[stage] if stage is not None else tuple(s for s, p in self.jsons.items() if p)
        if stage == "fit" and self.jsons["val"]:
            wanted += ("val",)
        image_dir = Path(self.hparams.image_dir)
        if not image_dir.is_dir():
            raise FileNotFoundError(
                f"data.image_dir: {image_dir.absolute()} is not a folder; set it to the folder that the "
                "JSONs' file_name paths resolve against (the course's JPEGImages)"
            )
        for name in wanted:
            if self.jsons[name] is None:
                raise ValueError(f"stage {stage!r} needs {name}_json, which is not set")
            if name not in self.splits:
                self.splits[name] = self._load(name)
        if stage == "fit":
            self._check_batch_size()
            self._final_epoch()
        if self.hparams.cache_images:
            self._check_cache([self.splits[name] for name in wanted])

    def _check_cache(self, splits: list[LoadedSplit]) -> None:
        """Log what ``cache_images`` will hold; refuse it when that exceeds the available memory."""
        size = self.hparams.image_size

        def decoded(r: Record) -> tuple[int, int]:  # what load_image returns: only JPEGs decode reduced
            full = (r.width, r.height)
            return reduced_size(full, size) if r.path.suffix.lower() in (".jpg", ".jpeg") else full

        per_process = sum(w * h * 3 for split in splits for w, h in map(decoded, split.records))
        processes = max(self.hparams.num_workers, 1)
        available = _available_memory()
        names = ", ".join(str(split.json_path) for split in splits)
        need = f"{per_process * processes / 2**30:.2f} GiB ({per_process / 2**30:.2f} GiB x {processes} loader processes) for {names}"
        if available is not None and per_process * processes > available:
            raise ValueError(
                f"data.cache_images needs {need}, more than the {available / 2**30:.2f} GiB of memory available: "
                "set data.cache_images: false, or fewer data.num_workers"
            )
        rank_zero_info(f"data.cache_images: decoded images kept in memory after first use, up to {need}")

    def _check_batch_size(self) -> None:
        """Under a Trainer: refuse a train batch larger than this process's share of the train split."""
        if self.trainer is None:
            return
        world, _ = self._world()
        split, batch = self.splits["train"], self.hparams.batch_size
        share = len(split.records) // world
        if batch > share:
            per = f", {share} per process over {world} processes" if world > 1 else ""
            raise ValueError(
                f"data.batch_size {batch} is larger than the train split ({len(split.records)} images in "
                f"{split.json_path}{per}): set data.batch_size to at most {max(share, 1)}, or use a larger train_json"
            )

    def _final_epoch(self) -> int | None:
        """The first epoch of the ``final_augment`` preset (None: never), checked against the
        trainer's ``max_epochs`` when a Trainer fits with this data module."""
        n = self.hparams.final_epochs
        if n < 0:
            raise ValueError(f"data.final_epochs = {n}: give the number of last epochs (0 for none)")
        if n == 0 or self.trainer is None:
            return None
        epochs = self.trainer.max_epochs
        if epochs is None or epochs < 0 or n >= epochs:
            raise ValueError(
                f"data.final_epochs = {n} needs a run of more epochs (trainer.max_epochs = {epochs}): "
                "set it below the recipe's total"
            )
        return epochs - n

    def _load(self, name: Split) -> LoadedSplit:
        path = Path(self.jsons[name])
        if not path.is_file():
            raise FileNotFoundError(
                f"data.{name}_json: {path.absolute()} does not exist; set it to the COCO-format JSON of the {name} split"
            )
        split = load_records(path, self.hparams.image_dir, on_bad_record=self.hparams.on_bad_record)
        if split.class_names != self.class_names:
            raise BadRecordError(
                f"{split.json_path}: categories {split.class_names} differ from {self.class_names} "
                f"(from {self.class_names_from}); every split must list the same classes in the same order"
            )
        rank_zero_info(f"{name}: {split.summary()}")
        return split

    def _transform(self, preset: AugmentPreset) -> DetectionTransform:
        h = self.hparams
        return DetectionTransform(preset, h.image_size, mean=h.mean, std=h.std)

    def _loader(self, split: Split, preset: AugmentPreset, train: bool) -> DataLoader:
        h = self.hparams
        if split not in self.splits:
            raise RuntimeError(f"the {split} split is not loaded: call setup() with a stage that needs it first")
        start = self._final_epoch() if train else None
        final = (start, self._transform(h.final_augment)) if start is not None else None
        dataset = DetectionDataset(
            self.splits[split], self._transform(preset), seed=h.seed, on_bad_record=h.on_bad_record, final=final,
            cache_images=h.cache_images,
        )
        world, rank = self._world()
        if train:
            sampler: Sampler | None = EpochSampler(len(dataset), seed=h.seed, num_replicas=world, rank=rank)
        else:
            # Evaluation keeps plain integer indices, in order (what prediction writers expect).
            sampler = ShardSampler(len(dataset), world, rank) if world > 1 else None
        return DataLoader(
            dataset,
            batch_size=h.batch_size,
            sampler=sampler,
            drop_last=train and len(sampler) > h.batch_size,
            collate_fn=collate_detections,
            num_workers=h.num_workers,
            persistent_workers=h.persistent_workers and h.num_workers > 0,
            pin_memory=h.pin_memory,
        )

    def _world(self) -> tuple[int, int]:
        """(number of processes, this process's rank) of the attached trainer; (1, 0) without one."""
        trainer = self.trainer
        if trainer is None or trainer.world_size == 1:
            return 1, 0
        if trainer._accelerator_connector.use_distributed_sampler:
            raise ValueError(
                "DetectionDataModule shards its data itself under DDP: create the Trainer with "
                "use_distributed_sampler=False (train.py does)"
            )
        return trainer.world_size, trainer.global_rank

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", self.hparams.train_augment, train=True)

    def val_dataloader(self) -> DataLoader | list:
        # No val_json: no validation (Lightning skips an empty list of loaders).
        return self._loader("val", "none", train=False) if self.jsons["val"] else []

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", "none", train=False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader("test" if self.jsons["test"] else "val", "none", train=False)
