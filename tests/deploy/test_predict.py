"""predict.py: pictures and COCO-format detections in original-image pixels, for images of any
size and mode, with unreadable files reported by name and skipped."""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from PIL import Image

from detector.cli.predict import main
from detector.data.image import load_image
from detector.data.transforms import DetectionTransform
from detector.deploy.api import Detector
from detector.deploy.inference import _picture_names, find_images, predict_images
from detector.deploy.loading import load_detector
from detector.training.tasks.detection import AnchorConfig, DetectorModule, HeadConfig
from helpers import detector

CLASSES = ["circle", "square", "triangle"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained 64 px model saved as train.py saves one (its scores are all near sigmoid(-4))."""
    torch.manual_seed(0)
    model = DetectorModule(
        num_classes=3, class_names=CLASSES, backbone="resnet18", weights="none", image_size=64,
        anchors=AnchorConfig(grids=[2, 1]), head=HeadConfig(channels=32),
    )
    trainer = L.Trainer(logger=False, enable_checkpointing=False, accelerator="cpu", devices=1, enable_progress_bar=False)
    trainer.strategy.connect(model)
    path = tmp_path_factory.mktemp("ckpt") / "tiny.ckpt"
    trainer.save_checkpoint(path, weights_only=True)
    return path


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """RGB JPEGs (one large enough to be decoded at half scale), a grayscale and an RGBA PNG, a
    corrupt "JPEG", and a text file that is not an image."""
    rng = np.random.default_rng(0)
    images = tmp_path / "images"
    images.mkdir()
    Image.fromarray(rng.integers(0, 255, (100, 200, 3), dtype=np.uint8)).save(images / "a_rgb.jpg")
    Image.fromarray(rng.integers(0, 255, (200, 300, 3), dtype=np.uint8)).save(images / "b_big.jpg")
    Image.fromarray(rng.integers(0, 255, (80, 120), dtype=np.uint8), mode="L").save(images / "c_gray.png")
    Image.fromarray(rng.integers(0, 255, (150, 90, 4), dtype=np.uint8), mode="RGBA").save(images / "d_rgba.png")
    (images / "e_broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not a JPEG")
    (images / "notes.txt").write_text("not an image")
    return images


def expected_detections(model: DetectorModule, path: Path, score: float) -> list[dict]:
    """The detections computed by hand: evaluation's decode and transform, boxes x (width, height)."""
    S = model.hparams.image_size
    transform = DetectionTransform("none", S, model.model.backbone.mean, model.model.backbone.std)
    image = load_image(path, min_side=S)
    with torch.no_grad():
        (det,) = model.detect(transform(image, np.zeros((0, 4), np.float32)).image[None], score_threshold=score)
    width, height = Image.open(path).size
    out = []
    for (x1, y1, x2, y2), s, c in zip(det["boxes"].tolist(), det["scores"].tolist(), det["labels"].tolist()):
        out.append({"bbox": [x1 * width, y1 * height, (x2 - x1) * width, (y2 - y1) * height], "score": s, "label": c})
    return out


def test_predict_folder_writes_pictures_and_pixel_detections(checkpoint, folder, tmp_path, capsys):
    out = tmp_path / "out"
    code = main(["--checkpoint", str(checkpoint), "--images", str(folder), "--out", str(out),
                 "--score", "0.0", "--device", "cpu", "--batch-size", "2"])
    assert code == 0
    printed = capsys.readouterr()
    assert "e_broken.jpg" in printed.out and "1 unreadable" in printed.out  # the summary names it
    assert "e_broken.jpg" in printed.err  # and it was reported when met
    assert sorted(p.name for p in out.iterdir()) == ["a_rgb.png", "b_big.png", "c_gray.png", "d_rgba.png", "detections.json"]
    # Pictures: the original image (b_big.jpg, over twice the 64 px input, is decoded at half scale
    # for the network, and drawn at its own size).
    assert Image.open(out / "a_rgb.png").size == (200, 100)
    assert Image.open(out / "b_big.png").size == (300, 200)
    assert Image.open(out / "d_rgba.png").size == (90, 150)

    results = json.loads((out / "detections.json").read_text())
    by_file: dict[str, list[dict]] = {}
    for r in results:
        assert set(r) == {"image_id", "file_name", "category_id", "category_name", "bbox", "score"}
        assert r["category_name"] == CLASSES[r["category_id"] - 1]  # category_id = class index + 1
        by_file.setdefault(r["file_name"], []).append(r)
    assert sorted(by_file) == ["a_rgb.jpg", "b_big.jpg", "c_gray.png", "d_rgba.png"]
    assert {r["image_id"] for r in by_file["c_gray.png"]} == {3}  # 1-based, in sorted path order

    model = load_detector(checkpoint)
    for name, dets in by_file.items():
        width, height = Image.open(folder / name).size
        for r in dets:
            x, y, w, h = r["bbox"]
            assert -0.01 <= x and x + w <= width + 0.01 and -0.01 <= y and y + h <= height + 0.01
        expected = expected_detections(model, folder / name, 0.0)
        assert len(dets) == len(expected) > 10  # score 0: every box that survives NMS
        for e in expected[:10]:
            found = [
                r for r in dets
                if r["category_id"] == e["label"] + 1 and abs(r["score"] - e["score"]) < 1e-4
                and np.allclose(r["bbox"], e["bbox"], atol=0.02)
            ]
            assert found, f"{name}: expected detection {e} not in detections.json"
    big = np.array([r["bbox"] for r in by_file["b_big.jpg"]])
    assert (big[:, 0] + big[:, 2]).max() > 150  # in the original 300 px, not the 150 px decode


def test_score_threshold_and_default(checkpoint, folder, tmp_path):
    model = Detector(load_detector(checkpoint))
    paths = find_images(folder)
    everything = predict_images(model, paths, tmp_path / "all", score=0.0, pictures=False, progress=False)
    # The untrained head scores about sigmoid(-4) = 0.018: halfway through its scores, half survive.
    scores = np.array([d["score"] for d in everything.detections])
    middle = float(np.median(scores))
    some = predict_images(model, paths, tmp_path / "some", score=middle, pictures=False, progress=False)
    assert 0 < len(some.detections) < len(everything.detections)
    assert all(d["score"] > middle for d in some.detections)
    assert some.pictures == [] and not list((tmp_path / "some").glob("*.png"))
    # The default is the checkpoint's picture threshold, 0.25: nothing from an untrained head.
    default = predict_images(model, paths, tmp_path / "default", pictures=True, progress=False)
    assert default.detections == [] and len(default.pictures) == 4 and default.images == 4
    assert [p.name for p, _ in default.failures] == ["e_broken.jpg"]
    assert json.loads((tmp_path / "default" / "detections.json").read_text()) == []


def test_exit_codes_when_nothing_can_be_read(checkpoint, tmp_path, capsys):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "x.jpg").write_bytes(b"garbage")
    (bad / "y.png").write_bytes(b"")
    assert main(["--checkpoint", str(checkpoint), "--images", str(bad), "--out", str(tmp_path / "o")]) == 1
    out = capsys.readouterr().out
    assert "x.jpg" in out and "y.png" in out and "2 unreadable" in out
    empty = tmp_path / "empty"
    empty.mkdir()
    code, err = detector("predict", "--checkpoint", str(checkpoint), "--images", str(empty), "--out", str(tmp_path / "o2"))
    assert code == 2 and err == f"detector predict: --images '{empty}': no image files found there\n"


def test_find_images_folder_file_and_glob(folder):
    assert [p.name for p in find_images(folder)] == ["a_rgb.jpg", "b_big.jpg", "c_gray.png", "d_rgba.png", "e_broken.jpg"]
    assert find_images(folder / "c_gray.png") == [folder / "c_gray.png"]
    assert [p.name for p in find_images(str(folder / "*.jpg"))] == ["a_rgb.jpg", "b_big.jpg", "e_broken.jpg"]
    assert [p.name for p in find_images(str(folder / "n*"))] == ["notes.txt"]  # a glob takes what it names
    assert find_images(str(folder / "nothing*")) == []


def test_picture_names_never_collide():
    paths = [Path("a/x.jpg"), Path("b/x.jpg"), Path("x.png"), Path("y.jpg")]
    assert _picture_names(paths) == ["x.png", "x_2.png", "x_3.png", "y.png"]
