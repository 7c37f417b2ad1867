"""The end-to-end ONNX export (``detector export --with-nms``): OpenCV's resize bit for bit, the
same detections as ``Detector.predict`` on the genuine VOC photos, dynamic batch and size, and
``detector predict --onnx`` without torch."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import lightning as L
import numpy as np
import onnxruntime as ort
import pytest
import torch
from PIL import Image

from detector.cli.export import main as export_main
from detector.deploy.api import Detector
from detector.deploy.end_to_end import OpenCVResize, export_end_to_end
from detector.deploy.export import METADATA_KEY
from detector.deploy.onnx_detector import METADATA_KEY as ONNX_METADATA_KEY
from detector.deploy.onnx_detector import OnnxDetector
from detector.training.tasks.detection import AnchorConfig, DetectorModule, HeadConfig
from helpers import REPO
from helpers import detector as run_detector

S = 64
VOC = ["aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow", "diningtable", "dog",
       "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor"]
SCORE = 0.2


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


def tiny_ssd() -> DetectorModule:
    """Untrained but deterministic; a class bias of -2 (sigmoid 0.12) lets a few detections per
    photo pass 0.2."""
    torch.manual_seed(0)
    return DetectorModule(
        num_classes=20, class_names=VOC, backbone="resnet18", weights="none", image_size=S,
        anchors=AnchorConfig(grids=[4, 2, 1]), head=HeadConfig(channels=32, bias=-2.0),
    ).eval()


def save_checkpoint(path: Path) -> Path:
    model = tiny_ssd()
    trainer = L.Trainer(logger=False, enable_checkpointing=False, accelerator="cpu", devices=1, enable_progress_bar=False)
    trainer.strategy.connect(model)
    trainer.save_checkpoint(path, weights_only=True)
    return path


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.ckpt")


@pytest.fixture(scope="module")
def exported(checkpoint: Path) -> dict[bool, Path]:
    """The graph without flip TTA (through ``detector export --with-nms``) and with it (the function)."""
    root = checkpoint.parent
    assert export_main(["--checkpoint", str(checkpoint), "--onnx", str(root / "model.onnx"), "--with-nms"]) == 0
    return {False: root / "model.onnx", True: export_end_to_end(tiny_ssd(), root / "flip.onnx", flip_tta=True)[0]}


@pytest.fixture(scope="module")
def resize_session(tmp_path_factory: pytest.TempPathFactory) -> ort.InferenceSession:
    """:class:`OpenCVResize` alone as an ONNX graph, traced at 20 x 30."""
    path = tmp_path_factory.mktemp("resize") / "resize.onnx"
    torch.onnx.export(OpenCVResize(S), (torch.zeros(1, 20, 30, 3, dtype=torch.uint8),), str(path), dynamo=False,
                      input_names=["images"], dynamic_axes={"images": {0: "b", 1: "h", 2: "w"}}, opset_version=17)
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("height, width", [(375, 500), (500, 353), (37, 91), (128, 128), (64, 64), (10, 7), (1000, 130)])
def test_resize_is_opencvs_bit_for_bit(height, width, resize_session):
    """In PyTorch and in the ONNX graph (traced at another size: nothing baked in); up, down, exactly
    2x (OpenCV's area path), the same size, taller than wide."""
    image = np.random.default_rng(height * width).integers(0, 256, (height, width, 3), dtype=np.uint8)
    expected = cv2.resize(image, (S, S), interpolation=cv2.INTER_LINEAR)
    assert np.array_equal(OpenCVResize(S)(torch.from_numpy(image)[None])[0].numpy(), expected)
    (got,) = resize_session.run(None, {"images": image[None]})
    assert np.array_equal(got[0], expected)


@pytest.mark.parametrize("flip_tta", [False, True])
def test_onnx_detections_are_detector_predicts_on_voc_photos(exported, flip_tta, voc_sample):
    photos = sorted((voc_sample / "JPEGImages").glob("*.jpg"))
    onnx_detector = OnnxDetector(exported[flip_tta])
    assert onnx_detector.flip_tta is flip_tta and onnx_detector.class_names == VOC
    ours = onnx_detector.predict(photos, score=SCORE)
    theirs = Detector(tiny_ssd()).predict(photos, score=SCORE, flip_tta=flip_tta)
    assert sum(len(p) for p in theirs) > 2 * len(photos)
    for a, b in zip(ours, theirs):
        assert (a.width, a.height, a.path) == (b.width, b.height, b.path)
        assert len(a) == len(b) and np.array_equal(a.labels, b.labels) and a.names == b.names  # same order
        np.testing.assert_allclose(a.boxes, b.boxes, rtol=1e-3, atol=1e-3)
        np.testing.assert_allclose(a.scores, b.scores, atol=1e-5)


def test_graph_inputs_outputs_batch_and_threshold(exported):
    session = ort.InferenceSession(str(exported[False]), providers=["CPUExecutionProvider"])
    assert [(i.name, i.type, i.shape) for i in session.get_inputs()] == [
        ("images", "tensor(uint8)", ["batch", "height", "width", 3]), ("score_threshold", "tensor(float)", [])]
    assert [o.name for o in session.get_outputs()] == ["boxes", "scores", "labels", "batch_index"]
    info = json.loads(session.get_modelmeta().custom_metadata_map[METADATA_KEY])
    assert ONNX_METADATA_KEY == METADATA_KEY
    assert info["end_to_end"] and info["score_threshold"] == 0.25 and info["class_names"] == VOC
    assert json.loads(exported[False].with_suffix(".json").read_text()) == info

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (3, 90, 120, 3), dtype=np.uint8)
    threshold = np.asarray(SCORE, np.float32)
    boxes, scores, labels, index = session.run(None, {"images": images, "score_threshold": threshold})
    assert boxes.dtype == scores.dtype == np.float32 and labels.dtype == index.dtype == np.int64
    assert (np.diff(index) >= 0).all() and len(set(index.tolist())) == 3
    assert (boxes[:, 0::2] <= 120).all() and (boxes[:, 1::2] <= 90).all() and boxes.max() > S  # input pixels
    for i in range(3):
        alone = session.run(None, {"images": images[i : i + 1], "score_threshold": threshold})
        mine = index == i
        assert np.array_equal(alone[2], labels[mine]) and np.allclose(alone[0], boxes[mine], atol=1e-3)
        assert (np.diff(scores[mine]) <= 0).all()  # highest first within an image
    nothing = session.run(None, {"images": images, "score_threshold": np.asarray(1.0, np.float32)})
    assert [a.shape for a in nothing] == [(0, 4), (0,), (0,), (0,)]


def test_predict_onnx_runs_without_torch_and_writes_what_predict_checkpoint_writes(exported, checkpoint, tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for name, (h, w) in {"a.jpg": (150, 200), "b.png": (64, 90), "c.jpg": (300, 140)}.items():
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(images / name)
    (images / "d.jpg").write_bytes(b"not a JPEG")
    code = (
        "import sys; from detector.cli import main; "
        f"code = main(['predict', '--onnx', {str(exported[False])!r}, '--images', {str(images)!r}, "
        f"'--out', {str(tmp_path / 'onnx')!r}, '--score', '{SCORE}']); "
        "assert 'torch' not in sys.modules, 'torch was imported'; sys.exit(code)"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "d.jpg" in done.stdout and "1 unreadable" in done.stdout
    code, err = run_detector("predict", "--checkpoint", str(checkpoint), "--images", str(images),
                             "--out", str(tmp_path / "torch"), "--score", str(SCORE), "--device", "cpu")
    assert code == 0, err
    ours = json.loads((tmp_path / "onnx" / "detections.json").read_text())
    theirs = json.loads((tmp_path / "torch" / "detections.json").read_text())
    assert len(ours) == len(theirs) > 0
    for a, b in zip(ours, theirs):
        assert {k: a[k] for k in ("image_id", "file_name", "category_id")} == {k: b[k] for k in ("image_id", "file_name", "category_id")}
        assert np.allclose(a["bbox"], b["bbox"], atol=0.05) and abs(a["score"] - b["score"]) < 1e-4
    assert Image.open(tmp_path / "onnx" / "c.png").size == (140, 300)


def test_predict_onnx_refuses_the_raw_export_and_bad_files(checkpoint, tmp_path):
    assert export_main(["--checkpoint", str(checkpoint), "--onnx", str(tmp_path / "raw.onnx")]) == 0
    images = tmp_path / "images"
    images.mkdir()
    Image.fromarray(np.zeros((20, 30, 3), np.uint8)).save(images / "a.png")
    args = ["--images", str(images), "--out", str(tmp_path / "out")]
    code, err = run_detector("predict", "--onnx", str(tmp_path / "raw.onnx"), *args)
    assert code == 2 and "raw-activation export" in err and "--with-nms" in err and err.count("\n") == 1
    code, err = run_detector("predict", "--onnx", str(tmp_path / "missing.onnx"), *args)
    assert code == 2 and err == f"detector predict: {tmp_path / 'missing.onnx'}: no such file\n"
    (tmp_path / "junk.onnx").write_bytes(b"junk")
    code, err = run_detector("predict", "--onnx", str(tmp_path / "junk.onnx"), *args)
    assert code == 2 and "junk.onnx: not an ONNX model onnxruntime can load" in err and err.count("\n") == 1
    code, err = run_detector("export", "--checkpoint", str(checkpoint), "--onnx", str(tmp_path / "x.onnx"), "--flip-tta")
    assert code == 2 and "--flip-tta goes with --with-nms" in err
