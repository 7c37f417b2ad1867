"""The Python API (``detector.Detector``): every kind of source, the numbers of ``detector eval``,
pictures at the original resolution, COCO results, and one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from PIL import Image

from detector.data.datamodule import DetectionDataModule
from detector.deploy.annotate import label_size
from detector.deploy.api import Detector
from detector.deploy.prediction import Prediction
from detector.errors import BadImageError, ConfigError, MissingFileError
from detector.evaluation.evaluator import evaluate
from detector.training.tasks import LargestObjectClassifier
from detector.training.tasks.detection import AnchorConfig, DetectorModule, HeadConfig
from helpers import REPO

S = 64


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


def tiny_ssd(class_names: list[str], bias: float = -2.0) -> DetectorModule:
    """A deterministic untrained SSD whose class bias lets some detections pass 0.25."""
    torch.manual_seed(0)
    model = DetectorModule(
        num_classes=len(class_names), class_names=class_names, backbone="resnet18", weights="none", image_size=S,
        anchors=AnchorConfig(grids=[4, 2, 1]), head=HeadConfig(channels=32, bias=bias),
    )
    return model.eval()


@pytest.fixture(scope="module")
def detector() -> Detector:
    return Detector(tiny_ssd(["circle", "square", "triangle"]))


@pytest.fixture(scope="module")
def photo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 100 x 80 PNG (under twice the input size: never decoded at a reduced scale)."""
    path = tmp_path_factory.mktemp("photo") / "photo.png"
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (80, 100, 3), dtype=np.uint8)).save(path)
    return path


def same(a: Prediction, b: Prediction) -> None:
    assert len(a) == len(b) > 0
    assert np.array_equal(a.labels, b.labels) and a.names == b.names
    np.testing.assert_allclose(a.boxes, b.boxes, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(a.scores, b.scores, rtol=1e-5)


def test_every_kind_of_source_gives_the_same_predictions(detector, photo):
    array = np.asarray(Image.open(photo))  # (80, 100, 3)
    tensor = torch.from_numpy(array.copy()).permute(2, 0, 1)  # (3, 80, 100) uint8
    sources = [
        photo, str(photo), str(photo.parent / "*.png"), photo.parent, Image.open(photo), array,
        tensor, tensor.float() / 255, tensor[None], array[None],
    ]
    results = detector.predict(sources, score=0.2)
    assert len(results) == len(sources)
    reference = results[0]
    assert (reference.width, reference.height, reference.path) == (100, 80, photo)
    assert reference.boxes.dtype == np.float32 and reference.labels.dtype == np.int64
    assert (reference.boxes[:, 2] <= 100).all() and (reference.boxes[:, 3] <= 80).all()  # original pixels
    assert reference.boxes[:, 2].max() > 64  # not the 64 px network input's
    for result in results[1:]:
        same(reference, result)
        assert (result.width, result.height) == (100, 80)
    assert [r.path is None for r in results] == [False] * 4 + [True] * 6
    assert results[5].image is array and results[0].image is None  # what draw() draws on


def test_predictions_are_those_detector_eval_scores(voc_sample):
    """The 13 VOC photos: Detector.predict at the evaluation threshold gives evaluate()'s detections."""
    json_path = voc_sample / "pascal_sample2007.json"
    names = [c["name"] for c in json.loads(json_path.read_text())["categories"]]
    model = tiny_ssd(names)
    dm = DetectionDataModule(image_dir=str(voc_sample / "JPEGImages"), val_json=str(json_path), image_size=S,
                             batch_size=4, num_workers=0)
    evaluation = evaluate(model, dm, "val", progress=False)
    paths = {r.image_id: r.path for r in dm.splits["val"].records}
    results = Detector(model).predict([paths[i] for i in evaluation.image_ids], score=model.post_cfg.score_threshold, batch_size=4)
    assert len(results) == len(evaluation.detections) == 13
    for result, expected in zip(results, evaluation.detections):
        assert len(result) == len(expected["scores"]) > 0
        assert np.array_equal(result.labels, expected["labels"].numpy())
        np.testing.assert_allclose(result.boxes, expected["boxes"].numpy(), rtol=1e-6, atol=1e-4)
        np.testing.assert_allclose(result.scores, expected["scores"].numpy(), rtol=1e-6)
    big = results[[p.name for p in (r.path for r in results)].index("000001.jpg")]
    assert (big.width, big.height) == (353, 500) and big.boxes[:, 3].max() > 250  # 500 px tall, not the decode's 125


def test_a_large_image_in_memory_is_shrunk_like_its_jpeg(detector, tmp_path):
    """An array at least twice the input size is box-reduced first (as the JPEG decoder reduces
    files): a 4x nearest-neighbour enlargement predicts what the original does, in its own pixels."""
    rng = np.random.default_rng(1)
    small = rng.integers(0, 255, (64, 80, 3), dtype=np.uint8)
    big = np.asarray(Image.fromarray(small).resize((320, 256), Image.NEAREST))  # 4x S on its short side: reduced by 4
    (from_big,) = detector.predict(big, score=0.2)
    (from_small,) = detector.predict(small, score=0.2)
    assert (from_big.width, from_big.height) == (320, 256)
    np.testing.assert_allclose(from_big.boxes, from_small.boxes * 4, rtol=1e-4, atol=1e-2)
    assert np.array_equal(from_big.labels, from_small.labels)


def test_draw_is_the_original_resolution_and_labels_scale(detector, photo, tmp_path):
    (result,) = detector.predict(photo, score=0.2)
    picture = detector.draw(result)
    assert picture.size == (100, 80) and picture.mode == "RGB"
    assert not np.array_equal(np.asarray(picture), np.asarray(Image.open(photo)))  # boxes were drawn
    (in_memory,) = detector.predict(np.asarray(Image.open(photo)), score=0.2)
    assert np.array_equal(np.asarray(detector.draw(in_memory)), np.asarray(picture))
    assert label_size(500, 375) == (14, 2) and label_size(4000, 3000) == (112, 14) and label_size(64, 48) == (11, 2)
    with pytest.raises(BadImageError, match="neither its image nor a path"):
        detector.draw(Prediction(result.boxes, result.scores, result.labels, result.names, 100, 80))


def test_to_coco(detector, photo):
    results = detector.predict([photo, np.zeros((30, 40, 3), np.uint8)], score=0.2)
    entries = detector.to_coco(results)
    first = [e for e in entries if e["image_id"] == 1]
    assert len(first) == len(results[0]) and all(e["file_name"] == "photo.png" for e in first)
    assert all("file_name" not in e for e in entries if e["image_id"] == 2)  # an array has no file name
    x1, y1, x2, y2 = results[0].boxes[0].tolist()
    assert first[0]["bbox"] == pytest.approx([x1, y1, x2 - x1, y2 - y1], abs=0.01)
    assert first[0]["category_id"] == results[0].labels[0] + 1 and first[0]["category_name"] == results[0].names[0]


def test_flip_tta_and_score(detector, photo):
    (plain,) = detector.predict(photo, score=0.2)
    (flipped,) = detector.predict(photo, score=0.2, flip_tta=True)
    assert not detector.model.post_cfg.flip_tta  # restored
    assert len(flipped) and not (len(flipped) == len(plain) and np.allclose(flipped.scores, plain.scores))
    (fewer,) = detector.predict(photo, score=float(np.median(plain.scores)))
    assert 0 < len(fewer) < len(plain) and (fewer.scores > np.median(plain.scores)).all()
    (default,) = detector.predict(photo)  # the picture threshold, 0.25
    assert (default.scores > 0.25).all()


def test_unreadable_and_unknown_sources_are_one_line_errors(detector, photo, tmp_path):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 not a JPEG")
    with pytest.raises(MissingFileError, match="nothing_here.jpg: no such file"):
        detector.predict(tmp_path / "nothing_here.jpg")
    with pytest.raises(BadImageError, match=r"broken.jpg: cannot be decoded"):
        detector.predict([photo, broken])
    good, bad = detector.predict_iter([photo, broken], on_error="report")
    assert good.error is None and bad.error.startswith("cannot be decoded") and len(bad) == 0 and bad.path == broken
    with pytest.raises(BadImageError, match=r"shape \(80, 100\) and dtype float64 is not an image"):
        detector.predict(np.zeros((80, 100)))
    with pytest.raises(BadImageError, match=r"tensor of shape \(4, 8, 8\)"):
        detector.predict(torch.zeros(4, 8, 8))
    with pytest.raises(BadImageError, match="cannot predict on a builtins.dict"):
        detector.predict({"image": photo})


def test_from_checkpoint_any_task(tmp_path, photo):
    torch.manual_seed(0)
    model = LargestObjectClassifier(num_classes=3, class_names=["a", "b", "c"], backbone="resnet18", weights="none", image_size=S)
    trainer = L.Trainer(logger=False, enable_checkpointing=False, accelerator="cpu", devices=1, enable_progress_bar=False)
    trainer.strategy.connect(model)
    trainer.save_checkpoint(tmp_path / "task.ckpt", weights_only=True)
    classifier = Detector.from_checkpoint(tmp_path / "task.ckpt", device="cpu")
    assert classifier.task == "LargestObjectClassifier"
    (result,) = classifier.predict(photo)
    assert result.boxes is None and len(result) == 1 and result.names[0] in "abc"
    assert classifier.draw(result).size == (100, 80)
    with pytest.raises(ConfigError, match="flip_tta is the SSD's"):
        classifier.predict(photo, flip_tta=True)


def test_import_detector_stays_cheap():
    code = "import sys, detector; assert 'torch' not in sys.modules and 'numpy' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True, timeout=120)
    import detector

    assert detector.Detector is Detector and "Detector" in dir(detector)
