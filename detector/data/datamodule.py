"""The LightningDataModule: COCO-format JSON splits and an image folder -> train / val / test /
predict loaders (batches as :mod:`detector.data.dataset` describes them)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import lightning as L
from lightning.pytorch.utilities import rank_zero_info
from torch.utils.data import DataLoader, Sampler

from detector.data.dataset import DetectionDataset, collate_detections
from detector.data.records import LoadedSplit, OnBadRecord, load_records, read_class_names
from detector.data.samplers import EpochSampler, ShardSampler
from detector.data.skip_guard import check_fraction, check_split
from detector.data.transforms import AugmentPreset, DetectionTransform
from detector.defaults import IMAGE_SIZE, IMAGENET_MEAN, IMAGENET_STD, MAX_SKIPPED_FRACTION, Split
from detector.errors import BadRecordError, ConfigError, MissingFileError

__all__ = ["DetectionDataModule", "ShapesSpec"]


@dataclass
class ShapesSpec:
    """Size of the synthetic shapes dataset (see :func:`detector.data.shapes.ensure_shapes`)."""

    n_train: int = 2000
    n_val: int = 400
    image_size: int = 256
    seed: int = 0



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
            ``cache=ram``; :mod:`detector.data.image_cache`): later epochs skip the JPEG decode.
            ``setup`` logs the memory it takes and refuses it when that exceeds what is available.
        on_bad_record: ``"error"`` or ``"skip"`` (see ``detector.data.records``).
        max_skipped_fraction: under ``on_bad_record="skip"``, a split of which more than this share
            of the images or of the boxes would be skipped is refused before training starts
            (:mod:`detector.data.skip_guard`): no silent partial runs.
        flip: the train presets' random left-right flip; ``false`` for classes that are not mirror
            images of themselves (text, digits, left/right signs).
        seed: base seed of the shuffle order and of every sample's augmentation.
        generate: a :class:`ShapesSpec` (YAML: ``generate: {}`` for the defaults, or
            ``{n_train: 64, n_val: 16}``) writes the synthetic shapes dataset into the folder of
            ``train_json`` in ``prepare_data`` when it is not there yet.

    Under DDP the loaders shard the data themselves (:class:`EpochSampler`, :class:`ShardSampler`:
    ``DistributedSampler``s, which Lightning leaves in place): evaluation sees every image once,
    without the duplicates Lightning's own sampler would pad the shards with.
    """

    def __init__(
        self,
        image_dir: str,
        train_json: str | None = None,
        val_json: str | None = None,
        test_json: str | None = None,
        image_size: int = IMAGE_SIZE,
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
        max_skipped_fraction: float = MAX_SKIPPED_FRACTION,
        flip: bool = True,
        seed: int = 0,
        generate: ShapesSpec | None = None,
    ):
        super().__init__()
        self.save_hyperparameters()
        check_fraction(max_skipped_fraction)
        self.generate = ShapesSpec(**generate) if isinstance(generate, dict) else generate
        self.jsons: dict[Split, str | None] = {"train": train_json, "val": val_json, "test": test_json}
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
        raise MissingFileError(f"no annotation JSON found among {given or 'train_json/val_json/test_json (none given)'}")

    def prepare_data(self) -> None:
        spec = self.generate
        if spec is not None:
            if self.jsons["train"] is None:
                raise ConfigError("data.generate (shapes) needs data.train_json: the data is written into its folder")
            from detector.data.shapes import ensure_shapes

            ensure_shapes(Path(self.jsons["train"]).parent, **asdict(spec))

    def setup(self, stage: str | None = None) -> None:
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
            raise MissingFileError(
                f"data.image_dir: {image_dir.absolute()} is not a folder; set it to the folder that the "
                "JSONs' file_name paths resolve against (the course's JPEGImages)"
            )
        for name in wanted:
            if self.jsons[name] is None:
                raise ConfigError(f"stage {stage!r} needs data.{name}_json, which is not set")
            if name not in self.splits:
                self.splits[name] = self._load(name)
        if stage == "fit":
            self._check_batch_size()
            self._final_epoch()
        if self.hparams.cache_images:
            from detector.data.image_cache import check_cache_memory

            check_cache_memory([self.splits[name] for name in wanted], self.hparams.image_size, self.hparams.num_workers)

    def _check_batch_size(self) -> None:
        """Under a Trainer: refuse a train batch larger than this process's share of the train split."""
        if self.trainer is None:
            return
        world, _ = self._world()
        split, batch = self.splits["train"], self.hparams.batch_size
        share = len(split.records) // world
        if batch > share:
            per = f", {share} per process over {world} processes" if world > 1 else ""
            raise ConfigError(
                f"data.batch_size {batch} is larger than the train split ({len(split.records)} images in "
                f"{split.json_path}{per}): set data.batch_size to at most {max(share, 1)}, or use a larger train_json"
            )

    def _final_epoch(self) -> int | None:
        """The first epoch of the ``final_augment`` preset (None: never), checked against the
        trainer's ``max_epochs`` when a Trainer fits with this data module."""
        n = self.hparams.final_epochs
        if n < 0:
            raise ConfigError(f"data.final_epochs = {n}: give the number of last epochs (0 for none)")
        if n == 0 or self.trainer is None:
            return None
        epochs = self.trainer.max_epochs
        if epochs is None or epochs < 0 or n >= epochs:
            raise ConfigError(
                f"data.final_epochs = {n} needs a run of more epochs (trainer.max_epochs = {epochs}): "
                "set it below the recipe's total"
            )
        return epochs - n

    def _load(self, name: Split) -> LoadedSplit:
        path = Path(self.jsons[name])
        if not path.is_file():
            raise MissingFileError(
                f"data.{name}_json: {path.absolute()} does not exist; set it to the COCO-format JSON of the {name} split"
            )
        split = load_records(path, self.hparams.image_dir, on_bad_record=self.hparams.on_bad_record)
        if self.hparams.on_bad_record == "skip":
            check_split(split, self.hparams.max_skipped_fraction)
        if split.class_names != self.class_names:
            raise BadRecordError(
                f"{split.json_path}: categories {split.class_names} differ from {self.class_names} "
                f"(from {self.class_names_from}); every split must list the same classes in the same order"
            )
        rank_zero_info(f"{name}: {split.summary()}")
        return split

    def _transform(self, preset: AugmentPreset) -> DetectionTransform:
        h = self.hparams
        return DetectionTransform(preset, h.image_size, mean=h.mean, std=h.std, flip=h.flip)

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
        return trainer.world_size, trainer.global_rank

    def eval_dataloader(self, split: Split) -> DataLoader:
        """The loader of a loaded ``split`` as evaluation reads it: resized only, in order, every image
        once (under DDP, this process's shard)."""
        return self._loader(split, "none", train=False)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", self.hparams.train_augment, train=True)

    def val_dataloader(self) -> DataLoader | list:
        # No val_json: no validation (Lightning skips an empty list of loaders).
        return self._loader("val", "none", train=False) if self.jsons["val"] else []

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", "none", train=False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader("test" if self.jsons["test"] else "val", "none", train=False)
