"""Bad data met by a run: a train JSON with a NaN or inf box, not UTF-8 or cut short, is named (or,
under ``on_bad_record: skip``, the image is dropped and logged); an image deleted, truncated or
replaced in the middle of a run stops training naming it, also from a DataLoader worker; under
skip, training goes on past it, and the collate leaves skipped samples out.

The runs are tiny (conftest.py's ``shapes_copy``: a private copy of 16 + 7 shapes images at 64 px,
to damage; ResNet-18 without pretrained weights). (Were test_reliability.py's.)
"""

from __future__ import annotations

import json
import logging
import math
import re
from pathlib import Path

import lightning as L
import pytest
import torch

from coco_files import write_json
from detector.data.dataset import SkippedSample, collate_detections
from detector.data.records import BadRecordError
from detector.data.samplers import EpochSampler
from detector.training.recipe import Stage
from helpers import datamodule, module, trainer


@pytest.mark.parametrize(
    "damage, message",
    [
        ("nan_box", r"shapes_train\.json: annotation id \d+ \(image id 3, train_00002\.jpg\): bbox has a NaN or infinite value: \[nan"),
        ("inf_box", r"shapes_train\.json: annotation id \d+ \(image id 3, train_00002\.jpg\): bbox has a NaN or infinite value: \[.*inf"),
        ("not_utf8", r"shapes_train\.json: not UTF-8 text \(byte 0"),
        ("truncated", r"shapes_train\.json: invalid or truncated JSON at line 1 column \d+"),
    ],
    ids=["nan_box", "inf_box", "not_utf8", "truncated"],
)
def test_bad_json_is_named_or_skipped(shapes_copy: Path, damage: str, message: str, caplog: pytest.LogCaptureFixture):
    """A box with NaN or inf fails by file and record, or under skip drops its image with a logged
    line; a file that is not UTF-8 or is cut short can hold no trustworthy record: it fails either way."""
    path = shapes_copy / "shapes_train.json"
    data = json.loads(path.read_text())
    if damage in ("nan_box", "inf_box"):
        ann = next(a for a in data["annotations"] if a["image_id"] == 3)
        if damage == "nan_box":
            ann["bbox"][0] = float("nan")
        else:
            ann["bbox"][2] = float("inf")
        write_json(path, data)  # json writes float("nan") and float("inf") as NaN and Infinity
    elif damage == "not_utf8":
        path.write_bytes(b"\xff\xfe" + path.read_bytes())
    else:
        path.write_bytes(path.read_bytes()[:-200])

    with pytest.raises(BadRecordError, match=message):
        datamodule(shapes_copy).setup("fit")
    if damage in ("not_utf8", "truncated"):
        with pytest.raises(BadRecordError, match=message):
            datamodule(shapes_copy, on_bad_record="skip").setup("fit")
        return
    with pytest.raises(BadRecordError, match=r"would skip 1 of 16 images \(6\.2%\)"):  # above max_skipped_fraction
        datamodule(shapes_copy, on_bad_record="skip").setup("fit")
    dm = datamodule(shapes_copy, on_bad_record="skip", max_skipped_fraction=0.1)
    with caplog.at_level(logging.WARNING):
        dm.setup("fit")
    assert 3 not in {r.image_id for r in dm.splits["train"].records}
    assert len(dm.splits["train"].records) == 15
    assert any(m.startswith("skipped: ") and re.search(message, m) for m in caplog.messages), caplog.messages


def test_collate_leaves_out_skipped_samples():
    sample = {
        "image": torch.rand(3, 8, 8), "boxes": torch.rand(2, 4), "labels": torch.tensor([0, 1]),
        "difficult": torch.tensor([False, True]), "image_id": 5, "size": (20, 30),
    }
    batch = collate_detections([SkippedSample(4, 8), sample, SkippedSample(6, 8)])
    assert batch["image_ids"].tolist() == [5] and batch["skipped_ids"].tolist() == [4, 6]
    assert batch["images"].shape == (1, 3, 8, 8) and batch["labels"].tolist() == [[0, 1]]
    empty = collate_detections([SkippedSample(4, 8), SkippedSample(6, 8)])
    assert empty["skipped_ids"].tolist() == [4, 6]
    shapes = {k: tuple(v.shape) for k, v in empty.items() if k != "skipped_ids"}
    assert shapes == {"images": (0, 3, 8, 8), "boxes": (0, 0, 4), "labels": (0, 0), "difficult": (0, 0), "image_ids": (0,), "sizes": (0, 2)}
    assert (empty["labels"].dtype, empty["difficult"].dtype) == (torch.int64, torch.bool)


class Damage(L.Callback):
    """At the start of the first epoch, damages the image files of the given train (and val) record
    indices: ``deleted``, ``truncated`` (its first 200 bytes kept: the header still reads) or
    ``resized`` (replaced by a valid JPEG of another size).

    No race with the loader: at that point Lightning has made the epoch's loader iterator and
    fetched its first batch; a worker (``prefetch_factor`` 2) has been asked for batches 0 to 2 at
    most. So a damaged image in the last batch (or, without workers, in any batch but the first)
    is read after the damage. Validation reads its images later still.
    """

    def __init__(self, indices: list[int], how: str, val_indices: tuple[int, ...] = ()) -> None:
        self.indices, self.how, self.val_indices = indices, how, val_indices

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.current_epoch != 0:
            return
        splits = trainer.datamodule.splits
        paths = [splits["train"].records[i].path for i in self.indices]
        paths += [splits["val"].records[i].path for i in self.val_indices]
        for path in paths:
            if self.how == "deleted":
                path.unlink()
            elif self.how == "truncated":
                path.write_bytes(path.read_bytes()[:200])
            else:
                from PIL import Image

                Image.new("RGB", (50, 40)).save(path)


def epoch_order(epoch: int = 0, seed: int = 0, length: int = 16) -> list[int]:
    """The train record indices in the order the loader of ``epoch`` takes them."""
    sampler = EpochSampler(length, seed=seed)
    sampler.set_epoch(epoch)
    return [i for _, i in sampler]


@pytest.mark.parametrize(
    "how, workers, message",
    [
        ("deleted", 0, r"file not found"),
        ("truncated", 0, r"cannot be decoded"),
        ("resized", 0, r"decoded as 50 x 40 \(width x height\), the JSON says \d+ x \d+"),
        ("truncated", 1, r"cannot be decoded"),  # raised in a worker process, re-raised in the main one
    ],
    ids=["deleted", "truncated", "resized", "truncated-in-worker"],
)
def test_image_going_bad_mid_run_stops_training_naming_it(shapes_copy: Path, tmp_path: Path, how: str, workers: int, message: str):
    victim = epoch_order()[13]  # in the last of 4 batches
    dm = datamodule(shapes_copy, num_workers=workers)
    dm.setup("fit")
    record = dm.splits["train"].records[victim]
    stages = [Stage(1, "none")]
    t = trainer(tmp_path, stages, callbacks=[Damage([victim], how)], limit_val_batches=0)
    with pytest.raises(BadRecordError) as info:
        t.fit(module(stages), dm)
    text = str(info.value)
    assert f"shapes_train.json: image id {record.image_id}" in text and record.path.name in text, text
    assert re.search(message, text) and "set data.on_bad_record: skip to drop it" in text, text
    assert t.global_step == 3  # stopped before the last batch, by name


class BatchLog(L.Callback):
    """Per training batch: its size, and whether the step changed any parameter."""

    def __init__(self) -> None:
        self.sizes: list[int] = []
        self.changed: list[bool] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._before = [p.detach().clone() for p in pl_module.parameters()]

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.sizes.append(len(batch["images"]))
        self.changed.append(any(not torch.equal(a, p) for a, p in zip(self._before, pl_module.parameters())))


def test_skip_mode_trains_on_past_images_that_go_bad_mid_run(shapes_copy: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture):
    """Under on_bad_record: skip, images deleted in the middle of a run are logged by name, dropped
    from their batches and counted; a batch left with no image (or one: BatchNorm) is skipped
    without touching the weights; training and validation finish."""
    order = epoch_order()  # batches of 4: order[0:4], order[4:8], ...
    gone = [order[4], order[8], order[9], order[10], order[11], order[12], order[13], order[14]]  # leaves 4, 3, 0, 1
    dm = datamodule(shapes_copy, on_bad_record="skip")
    dm.setup("fit")
    names = {dm.splits["train"].records[i].image_id: dm.splits["train"].records[i].path.name for i in gone}
    stages = [Stage(1, "none")]
    log = BatchLog()
    t = trainer(tmp_path, stages, callbacks=[Damage(gone, "deleted", val_indices=(0,)), log], num_sanity_val_steps=0)
    with caplog.at_level(logging.WARNING, logger="detector.data.datamodule"):
        t.fit(module(stages), dm)
    assert t.current_epoch == 1 and t.global_step == 4  # finished; the skipped steps still count
    assert log.sizes == [4, 3, 0, 1] and log.changed == [True, True, False, False]
    metrics = {k: float(v) for k, v in t.callback_metrics.items()}
    assert metrics["train/skipped_images"] == 8 and metrics["val/skipped_images"] == 1 and metrics["val/images"] == 6
    assert math.isfinite(metrics["val/map_50"])
    skipped = [m for m in caplog.messages if m.startswith("skipped at run time: ")]
    for image_id, name in names.items():
        assert any(f"shapes_train.json: image id {image_id}: " in m and name in m and "file not found" in m for m in skipped)

