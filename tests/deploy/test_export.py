"""ONNX export: onnxruntime reproduces the PyTorch network, and the sidecar JSON decodes its boxes
as the PyTorch coders do."""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from detector.cli.export import main
from detector.core.box_coder import make_box_coder
from detector.core.postprocess import flip_merge
from detector.deploy.export import METADATA_KEY, decode_boxes
from detector.training.tasks.detection import AnchorConfig, DetectorModule, HeadConfig, LossConfig


def save_checkpoint(path: Path, coder: str) -> Path:
    torch.manual_seed(0)
    model = DetectorModule(
        num_classes=3, class_names=["a", "b", "c"], backbone="resnet18", weights="none", image_size=64,
        anchors=AnchorConfig(grids=[2, 1]), head=HeadConfig(channels=32), loss=LossConfig(coder=coder),
    )
    trainer = L.Trainer(logger=False, enable_checkpointing=False, accelerator="cpu", devices=1, enable_progress_bar=False)
    trainer.strategy.connect(model)
    trainer.save_checkpoint(path, weights_only=True)
    return path


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, DetectorModule]:
    root = tmp_path_factory.mktemp("export")
    ckpt = save_checkpoint(root / "tiny.ckpt", "tanh")
    assert main(["--checkpoint", str(ckpt), "--onnx", str(root / "model.onnx"), "--dynamic-batch"]) == 0
    onnx_path, json_path = root / "model.onnx", root / "model.json"
    model = DetectorModule.load_from_checkpoint(ckpt, map_location="cpu", weights="none").eval()
    return onnx_path, json_path, model


@pytest.mark.parametrize("batch", [1, 3])
def test_onnx_matches_pytorch(exported, batch):
    onnx_path, _, model = exported
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == ["cls_logits", "box_deltas"]
    images = torch.randn(batch, 3, 64, 64, generator=torch.Generator().manual_seed(batch))
    with torch.no_grad():
        expected = model(images)
    got = session.run(None, {"images": images.numpy()})
    for name, ours, theirs in zip(("cls_logits", "box_deltas"), got, expected):
        assert ours.shape == tuple(theirs.shape) == (batch, 45, 3 if name == "cls_logits" else 4)
        assert np.abs(ours - theirs.numpy()).max() <= 1e-4, name


def test_sidecar_json_and_metadata_describe_the_model(exported):
    onnx_path, json_path, model = exported
    info = json.loads(json_path.read_text())
    assert json_path == onnx_path.with_suffix(".json")
    assert info["class_names"] == ["a", "b", "c"] and info["image_size"] == 64 and info["coder"] == "tanh"
    assert info["mean"] == pytest.approx(list(model.model.backbone.mean))
    assert info["inputs"] == {"images": ["batch", 3, 64, 64]}
    assert np.allclose(info["anchors_cxcywh"], model.anchors.cxcywh.numpy())
    assert info["postprocess"]["iou_threshold"] == model.post_cfg.iou_threshold
    metadata = {p.key: p.value for p in onnx.load(str(onnx_path)).metadata_props}
    assert json.loads(metadata[METADATA_KEY]) == info


def test_sidecar_flip_tta_recipe_equals_the_modules(exported):
    """The docstring's step 1b, in NumPy on the ONNX outputs, gives what flip_tta gives in PyTorch."""
    onnx_path, json_path, model = exported
    info = json.loads(json_path.read_text())
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    images = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(5))
    cls, box = session.run(None, {"images": images.numpy()})
    cls_f, box_f = session.run(None, {"images": images.flip(-1).numpy()})
    mirror = np.asarray(info["anchors_mirror"])
    cls_f, box_f = cls_f[:, mirror], box_f[:, mirror].copy()
    box_f[..., 0] *= -1
    with torch.no_grad():
        expected = flip_merge(*model(images), *model(images.flip(-1)), model.anchor_mirror)
    for ours, theirs in zip(((cls + cls_f) / 2, (box + box_f) / 2), expected):
        assert np.abs(ours - theirs.numpy()).max() <= 1e-4


def test_sidecar_decodes_like_the_pytorch_coder(exported):
    _, json_path, model = exported
    info = json.loads(json_path.read_text())
    deltas = torch.randn(2, len(model.anchors), 4) * 2
    expected = make_box_coder("tanh").decode(deltas, model.anchors)
    assert np.allclose(decode_boxes(deltas.numpy(), info), expected.numpy(), atol=1e-6)


def test_fixed_batch_export_and_the_ssd_coder(tmp_path):
    ckpt = save_checkpoint(tmp_path / "ssd.ckpt", "ssd")
    assert main(["--checkpoint", str(ckpt), "--onnx", str(tmp_path / "m.onnx"), "--opset", "18"]) == 0
    onnx_path, json_path = tmp_path / "m.onnx", tmp_path / "m.json"
    info = json.loads(json_path.read_text())
    assert info["inputs"]["images"][0] == 1 and info["coder"] == "ssd"
    assert onnx.load(str(onnx_path)).opset_import[0].version == 18
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].shape == [1, 3, 64, 64]
    model = DetectorModule.load_from_checkpoint(ckpt, map_location="cpu", weights="none").eval()
    image = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        _, deltas = model(image)
    (_, got) = session.run(None, {"images": image.numpy()})
    assert np.abs(got - deltas.numpy()).max() <= 1e-4
    expected = make_box_coder("ssd").decode(deltas, model.anchors)
    assert np.allclose(decode_boxes(got, info), expected.numpy(), atol=1e-4)
