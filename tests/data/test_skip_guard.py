"""No silent partial runs: on_bad_record skip refuses a split that would lose more than
max_skipped_fraction of its images or boxes; the skipped counts reach the loggers; flip can be off."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import albumentations as A
import pytest
from PIL import Image

from detector.data.datamodule import DetectionDataModule
from detector.data.records import load_records
from detector.data.skip_guard import check_split
from detector.data.transforms import build_pipeline
from detector.errors import BadRecordError, ConfigError
from detector.training.guards import ImageCounts


def hundred_images(root: Path, bad: int) -> Path:
    """100 tiny images with one box each; the first ``bad`` boxes name a category that does not exist."""
    (root / "images").mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for i in range(100):
        Image.new("RGB", (16, 12), (i, 100, 50)).save(root / "images" / f"{i}.png")
        images.append({"id": i + 1, "file_name": f"{i}.png", "width": 16, "height": 12})
        annotations.append({"id": i + 1, "image_id": i + 1, "bbox": [2, 2, 8, 6], "category_id": 99 if i < bad else 1})
    path = root / "split.json"
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": [{"id": 1, "name": "thing"}]}))
    return path


@pytest.mark.parametrize("bad, refused", [(4, False), (5, False), (6, True)])
def test_skip_refuses_above_the_fraction_and_passes_below(tmp_path: Path, bad: int, refused: bool):
    split = load_records(hundred_images(tmp_path, bad), tmp_path / "images", on_bad_record="skip")
    assert split.report.skipped_images == bad and split.report.reasons == ("unknown class",) * bad
    if not refused:
        check_split(split, 0.05)
        return
    with pytest.raises(BadRecordError) as info:
        check_split(split, 0.05)
    message = str(info.value)
    for part in ("split.json", "6 of 100 images (6.0%)", "6 of 100 boxes", "6 unknown class",
                 "data.max_skipped_fraction = 0.05", "annotation id 1 (image id 1, 0.png)", "and 3 more"):
        assert part in message, (part, message)


def test_datamodule_refuses_before_training_and_takes_a_larger_fraction(tmp_path: Path):
    path = hundred_images(tmp_path, bad=6)
    kw = {"image_dir": str(tmp_path / "images"), "train_json": str(path), "on_bad_record": "skip", "num_workers": 0}
    with pytest.raises(BadRecordError, match="would skip 6 of 100 images"):
        DetectionDataModule(**kw).setup("fit")
    data = DetectionDataModule(**kw, max_skipped_fraction=0.1)
    data.setup("fit")
    assert len(data.splits["train"].records) == 94
    with pytest.raises(ConfigError, match="max_skipped_fraction"):
        DetectionDataModule(**kw, max_skipped_fraction=5)


def test_skipped_counts_are_logged_for_the_dashboards(tmp_path: Path):
    path = hundred_images(tmp_path, bad=3)
    data = DetectionDataModule(image_dir=str(tmp_path / "images"), train_json=str(path), on_bad_record="skip", num_workers=0)
    data.setup("fit")
    logged = []
    logger = SimpleNamespace(log_metrics=lambda metrics, step: logged.append((metrics, step)))
    trainer = SimpleNamespace(datamodule=data, is_global_zero=True, loggers=[logger], global_step=0)
    ImageCounts().on_train_start(trainer, None)
    assert logged == [({"data/train_skipped_images": 3.0, "data/train_skipped_boxes": 3.0}, 0)]


def test_flip_can_be_left_out():
    kinds = lambda pipeline: [type(t) for t in pipeline.transforms]
    for preset in ("lesson", "strong", "ssd"):
        assert A.HorizontalFlip in kinds(build_pipeline(preset, 32))
        assert A.HorizontalFlip not in kinds(build_pipeline(preset, 32, flip=False))
