"""``bench/peer.py``: both sides train on the same loader for the same epochs and are scored in
original pixels by the same metric code; the peer is torchvision's RetinaNet with the body frozen as
torchvision freezes it. A two-epoch run on the tiny shapes data keeps the script from rotting."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from detector.data.scenes import CLASS_NAMES
from helpers import datamodule, tiny_config, tiny_shapes

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "bench" / "peer.py"


@pytest.fixture(scope="module")
def peer():
    spec = importlib.util.spec_from_file_location("bench_peer", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_peer"] = module  # its dataclass looks itself up there
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop("bench_peer", None)


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    return tiny_shapes(tmp_path_factory.mktemp("shapes"))


def config(tmp_path: Path, root: Path) -> Path:
    return tiny_config(tmp_path, root, epochs=2, extra_data=f"  test_json: {root}/shapes_val.json")


def test_two_epoch_run_prints_both_tables_and_a_json_line_with_equal_images_seen(tmp_path, shapes):
    cfg = config(tmp_path, shapes)
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--config", str(cfg), "--threads", "1", "--runs", str(tmp_path / "runs"),
         "--name", "tiny", "--fpn-channels", "16"],
        cwd=tmp_path, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    assert lines[0].startswith("| model | mAP@0.5 | COCO mAP |") and any(l.startswith("| AP@0.5 per class |") for l in lines)
    result = json.loads(lines[-1])
    assert result["epochs"] == 2 and result["image_size"] == 64
    names = [r["name"] for r in result["rows"]]
    assert names == ["ours (tiny/v1)", "peer RetinaNet+FPN16, adamw", "peer RetinaNet+FPN16, sgd", "peer RetinaNet+FPN16, sgd-clip"]
    # 16 train images, batch 4, 2 epochs: both sides see the same 32 images.
    assert [r["images_seen"] for r in result["rows"]] == [32, 32, 32, 32]
    for row in result["rows"]:
        assert 0.0 <= row["map"] <= row["map_50"] <= 1.0
        assert list(row["per_class_ap_50"]) == CLASS_NAMES
    assert (tmp_path / "runs" / "tiny" / "v1" / "checkpoints" / "best.ckpt").is_file()


def test_resolve_scales_the_recipe_and_the_validation_cadence_as_detector_train(peer, tmp_path, shapes):
    cfg = config(tmp_path, shapes)
    text = cfg.read_text().replace("  log_every_n_steps: 1", "  log_every_n_steps: 1\n  check_val_every_n_epoch: 2")
    text = text.replace("{epochs: 1, freeze: body}", "{epochs: 2, freeze: body}")  # recipe 2 + 1 epochs
    text = text.replace("backbone: resnet18", "backbone: efficientnet_lite0")
    cfg.write_text(text)
    setting = peer.resolve(cfg, 6, seed=5)
    assert (setting.epochs, setting.frozen_epochs, setting.val_every, setting.monitor) == (6, 4, 4, "map_50")
    assert setting.data["image_size"] == 64 and setting.data["seed"] == 5 and setting.backbone == "efficientnet_lite0"
    # the body's own input statistics, as detector train links them (Lite0: [-1, 1], not ImageNet's)
    assert setting.data["mean"] == setting.data["std"] == (0.5, 0.5, 0.5)


def test_peer_detections_are_mapped_to_each_images_original_pixels(peer, shapes):
    """A fake peer that answers the left half of its input in every image: in pixels, the left half
    of each original image, whatever its size (the shapes images are not square)."""
    class LeftHalf(nn.Module):
        def forward(self, images):
            size = images[0].shape[-1]
            box = torch.tensor([[0.0, 0.0, size / 2, size]])
            return [{"boxes": box, "scores": torch.ones(1), "labels": torch.zeros(1, dtype=torch.int64)} for _ in images]

    dm = datamodule(shapes, test_json=str(shapes / "shapes_val.json"))
    dm.setup("test")
    detections, ground_truths = peer.peer_detections(LeftHalf(), dm, "test", 64)
    records = dm.splits["test"].records
    assert len(detections) == len(ground_truths) == len(records) == 7
    for det, record in zip(detections, records):
        torch.testing.assert_close(det["boxes"], torch.tensor([[0.0, 0.0, record.width / 2, record.height]]))


def test_peer_targets_drop_padding_and_are_in_input_pixels(peer):
    batch = {
        "images": torch.zeros(2, 3, 64, 64),
        "boxes": torch.tensor([[[0.1, 0.2, 0.5, 0.6], [0.0, 0.0, 0.0, 0.0]], [[0.0, 0.0, 1.0, 1.0], [0.25, 0.25, 0.5, 0.75]]]),
        "labels": torch.tensor([[3, -1], [0, 2]]),
    }
    images, targets = peer.peer_batch(batch, 64)
    assert len(images) == 2 and images[0].shape == (3, 64, 64)
    torch.testing.assert_close(targets[0]["boxes"], torch.tensor([[6.4, 12.8, 32.0, 38.4]]))
    assert targets[0]["labels"].tolist() == [3] and targets[1]["labels"].tolist() == [0, 2]
    torch.testing.assert_close(targets[1]["boxes"], torch.tensor([[0.0, 0.0, 64.0, 64.0], [16.0, 16.0, 32.0, 48.0]]))


def test_peer_freezes_the_body_as_torchvision_and_sgd_follows_the_reference(peer, tmp_path, shapes):
    setting = peer.resolve(config(tmp_path, shapes), None, seed=0)
    model = peer.build_peer(setting, 7, channels=16)
    levels = model.backbone(torch.zeros(1, 3, 64, 64))
    assert [tuple(x.shape[-2:]) for x in levels.values()] == [(8, 8), (4, 4), (2, 2), (1, 1), (1, 1)]  # P3-P7
    model.train()
    body = model.backbone.body
    norms = [m for m in body.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    assert norms and not any(m.training for m in norms) and not any(p.requires_grad for m in norms for p in m.parameters())
    assert not any(p.requires_grad for p in body.body[0].parameters())
    trainable = {id(p) for p in peer.trainable_body(model)}
    assert trainable == {id(p) for s in body.body[1:] for m in s.modules() if not isinstance(m, nn.modules.batchnorm._BatchNorm)
                         for p in m.parameters(recurse=False)}
    optimizer, per_step, per_epoch = peer.schedule("sgd", model, batch=8, steps_per_epoch=12, epochs=27)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.005 * 1e-3)  # 0.01 x 8 / 16, warm-up from 1/1000
    assert per_step.total_iters == 11 and sorted(per_epoch.milestones) == [18, 24]
    assert {id(p) for p in optimizer.param_groups[0]["params"]} >= trainable


def test_sgd_clip_clips_the_gradient_norm_before_the_update_and_sgd_does_not(peer, tmp_path, shapes, monkeypatch):
    setting = peer.resolve(config(tmp_path, shapes), None, seed=0)
    batch = ([torch.rand(3, 64, 64), torch.rand(3, 64, 64)],
             [{"boxes": torch.tensor([[4.0, 8.0, 40.0, 60.0]]), "labels": torch.tensor([2])},
              {"boxes": torch.tensor([[10.0, 10.0, 30.0, 20.0]]), "labels": torch.tensor([5])}])
    monkeypatch.setitem(peer.CLIP_NORM, "sgd-clip", 1e-3)  # far under this batch's gradient norm
    norms = {}
    for name in ("sgd", "sgd-clip"):
        torch.manual_seed(0)
        model = peer.build_peer(setting, 7, channels=16)
        model.train()
        optimizer, _, _ = peer.schedule(name, model, batch=2, steps_per_epoch=4, epochs=2)
        loss = peer.train_step(model, batch, optimizer, name)
        grads = [p.grad for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
        norms[name] = (float(loss), float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))))
    assert norms["sgd"][0] == pytest.approx(norms["sgd-clip"][0])  # the same loss before the update
    assert norms["sgd"][1] > 0.1 and norms["sgd-clip"][1] == pytest.approx(1e-3, rel=1e-4)
