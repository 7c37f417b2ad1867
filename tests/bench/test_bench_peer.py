"""``bench/peer.py``: both sides train on the same loader for the same epochs and optimiser steps
and are scored in original pixels by the same metric code; the peers (torchvision's RetinaNet and
FCOS) get fitted anchors, trained BatchNorm, a warm-up sized to the run and an EMA as ours. A
two-epoch run on the tiny shapes data keeps the script from rotting."""

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
EMA = """    - class_path: lightning.pytorch.callbacks.EMAWeightAveraging
      init_args: {decay: 0.9, update_every_n_steps: 1}
model:"""


@pytest.fixture(scope="module")
def peer():
    spec = importlib.util.spec_from_file_location("bench_peer", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_peer"] = module  # its dataclasses look themselves up there
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop("bench_peer", None)


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    return tiny_shapes(tmp_path_factory.mktemp("shapes"))


def config(tmp_path: Path, root: Path, ema: bool = False) -> Path:
    path = tiny_config(tmp_path, root, epochs=2, extra_data=f"  test_json: {root}/shapes_val.json")
    if ema:
        path.write_text(path.read_text().replace("model:", EMA, 1))
    return path


def test_two_epoch_run_trains_ours_retinanet_and_fcos_on_equal_images_and_steps(tmp_path, shapes):
    cfg = config(tmp_path, shapes, ema=True)
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--config", str(cfg), "--threads", "1", "--runs", str(tmp_path / "runs"),
         "--name", "tiny", "--fpn-channels", "32", "--batch-size", "8"],  # 32: FCOS's head has GroupNorm(32)
        cwd=tmp_path, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    assert lines[0].startswith("| model | mAP@0.5 | COCO mAP |") and any(l.startswith("| AP@0.5 per class |") for l in lines)
    result = json.loads(lines[-1])
    assert (result["epochs"], result["image_size"], result["batch_size"]) == (2, 64, 8)
    assert result["commit"] and result["date"] and "--batch-size 8" in result["command"]
    names = [r["name"] for r in result["rows"]]
    assert names == ["ours (tiny/v1)", "peer RetinaNet+FPN32 P3-P5, fitted anchors, BN trained, cosine, clip 35, EMA",
                     "peer FCOS+FPN32 P3-P7, BN trained, cosine, clip 35, EMA"]
    # 16 train images, batch 8 (--batch-size: ours too), 2 epochs: 4 steps and 32 images on every side.
    assert [(r["images_seen"], r["optimizer_steps"]) for r in result["rows"]] == [(32, 4)] * 3
    for row in result["rows"]:
        assert 0.0 <= row["map"] <= row["map_50"] <= 1.0
        assert list(row["per_class_ap_50"]) == CLASS_NAMES
    assert 0.0 < result["rows"][1]["anchor_coverage"] <= 1.0
    assert (tmp_path / "runs" / "tiny" / "v1" / "checkpoints" / "best.ckpt").is_file()


def test_resolve_scales_the_recipe_and_reads_batch_freezing_and_ema(peer, tmp_path, shapes):
    cfg = config(tmp_path, shapes, ema=True)
    text = cfg.read_text().replace("  log_every_n_steps: 1", "  log_every_n_steps: 1\n  check_val_every_n_epoch: 2")
    text = text.replace("{epochs: 1, freeze: body}", "{epochs: 2, freeze: body}")  # recipe 2 + 1 epochs
    text = text.replace("backbone: resnet18", "backbone: efficientnet_lite0")
    cfg.write_text(text)
    setting = peer.resolve(cfg, 6, seed=5, batch_size=2)
    assert (setting.epochs, setting.frozen_epochs, setting.val_every, setting.monitor) == (6, 4, 4, "map_50")
    assert setting.frozen_groups == [(0, 1)] * 4 + [()] * 2 and setting.train_bn and setting.ema_decay == 0.9
    assert setting.data["image_size"] == 64 and setting.data["seed"] == 5 and setting.backbone == "efficientnet_lite0"
    assert setting.data["batch_size"] == 2 and peer.resolve(cfg, 6, seed=5).data["batch_size"] == 4
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


def test_fitted_anchors_cover_the_training_boxes_better_than_torchvisions(peer):
    """BCCD-like boxes at 320 px (platelets ~20 px, red cells ~60, white cells ~110): torchvision's
    smallest anchor (32 px) misses the small ones at IoU 0.5, its sizes x 320 / 800 miss some."""
    g = torch.Generator().manual_seed(0)
    sides = torch.cat([18 + 8 * torch.rand(100, generator=g), 50 + 20 * torch.rand(400, generator=g),
                       90 + 40 * torch.rand(60, generator=g)])
    wh = torch.stack([sides, sides * (0.9 + 0.4 * torch.rand(len(sides), generator=g))], 1)
    xy = torch.rand(len(sides), 2, generator=g) * (320 - wh)
    boxes = torch.cat([xy, xy + wh], 1)
    cover = {}
    for mode in peer.ANCHORS:
        levels = 3 if mode == "fitted" else 5
        cover[mode] = peer.coverage(boxes, peer.grid_anchors(peer.peer_anchors(mode, boxes, 320, levels, 6), 320, levels))
    assert cover["fitted"] > 0.98 and cover["fitted"] > cover["torchvision-scaled"] and cover["fitted"] > cover["torchvision"] + 0.05
    shapes_ = peer.fit_anchors(wh, 3, 6)  # the smallest scales on P3, the largest on P5
    assert [s.shape for s in shapes_] == [(6, 2)] * 3 and shapes_[0].prod(1).max() < shapes_[1].prod(1).min()
    assert shapes_[1].prod(1).max() < shapes_[2].prod(1).min() and 15 < shapes_[0].prod(1).sqrt().min() < 30


def test_batchnorm_trains_where_the_recipe_trains_and_not_with_frozen_bn(peer, tmp_path, shapes):
    cfg = config(tmp_path, shapes)  # stages: body frozen 1 epoch, then none; BatchNorm frozen in frozen groups
    cfg.write_text(cfg.read_text().replace("    stages:", "    train_bn: false\n    stages:"))
    setting = peer.resolve(cfg, None, seed=0)
    assert not setting.train_bn
    batch = ([torch.rand(3, 64, 64), torch.rand(3, 64, 64)],
             [{"boxes": torch.tensor([[4.0, 8.0, 40.0, 60.0]]), "labels": torch.tensor([2])},
              {"boxes": torch.tensor([[10.0, 10.0, 30.0, 20.0]]), "labels": torch.tensor([5])}])
    for frozen_bn in (False, True):
        for epoch in (0, 1):
            torch.manual_seed(0)
            model = peer.build_peer(setting, 7, peer.PeerConfig(channels=16, frozen_bn=frozen_bn))
            norms = [m for m in model.backbone.body.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
            before = [m.running_mean.clone() for m in norms]
            peer.set_training(model, setting, epoch, frozen_bn)
            optimizer, _, _, clip = peer.schedule(model_cfg := peer.PeerConfig(), model, 2, 4, 2)
            peer.train_step(model, batch, optimizer, clip)
            changed = [not torch.equal(b, m.running_mean) for b, m in zip(before, norms)]
            trains = epoch == 1 and not frozen_bn  # epoch 0: the body frozen, as ours
            assert all(changed) if trains else not any(changed), (frozen_bn, epoch)
            assert all(p.requires_grad for m in norms for p in m.parameters()) == trains
    assert model_cfg.schedule == "cosine"


def test_warmup_scales_with_the_run_and_the_cosine_ends_at_a_twentieth(peer, tmp_path, shapes):
    setting = peer.resolve(config(tmp_path, shapes), None, seed=0)
    model = peer.build_peer(setting, 7, peer.PeerConfig(channels=16))
    for steps_per_epoch, epochs in ((10, 3), (20, 3), (20, 6)):
        optimizer, per_step, per_epoch, clip = peer.schedule(peer.PeerConfig(), model, 4, steps_per_epoch, epochs)
        total = steps_per_epoch * epochs
        lrs = []
        for _ in range(total):
            lrs.append(optimizer.param_groups[0]["lr"])
            optimizer.step()
            per_step.step()
        peak = lrs.index(max(lrs))
        assert peak == peer.warmup_steps(total, 0.1) == round(total / 10) and per_epoch is None and clip == 35.0
        assert lrs[0] == pytest.approx(1e-6) and max(lrs) == pytest.approx(1e-3)
        assert lrs[-1] == pytest.approx(1e-3 / 20, rel=0.1) and lrs == sorted(lrs[:peak]) + sorted(lrs[peak:], reverse=True)


def test_ema_copies_first_then_follows_the_configs_decay(peer):
    model = nn.Linear(2, 1)
    ema = peer.make_ema(model, 0.9)
    with torch.no_grad():
        model.weight.fill_(1.0)
    ema.update_parameters(model)
    torch.testing.assert_close(ema.module.weight, torch.ones(1, 2))
    with torch.no_grad():
        model.weight.fill_(2.0)
    ema.update_parameters(model)
    torch.testing.assert_close(ema.module.weight, torch.full((1, 2), 1.1))


def test_sgd_clip_clips_the_gradient_norm_before_the_update_and_sgd_does_not(peer, tmp_path, shapes, monkeypatch):
    setting = peer.resolve(config(tmp_path, shapes), None, seed=0)
    batch = ([torch.rand(3, 64, 64), torch.rand(3, 64, 64)],
             [{"boxes": torch.tensor([[4.0, 8.0, 40.0, 60.0]]), "labels": torch.tensor([2])},
              {"boxes": torch.tensor([[10.0, 10.0, 30.0, 20.0]]), "labels": torch.tensor([5])}])
    monkeypatch.setitem(peer.CLIP_NORM, "sgd-clip", 1e-3)  # far under this batch's gradient norm
    norms = {}
    for name in ("sgd", "sgd-clip"):
        torch.manual_seed(0)
        cfg = peer.PeerConfig(schedule=name, anchors="torchvision", channels=16)
        model = peer.build_peer(setting, 7, cfg)
        peer.set_training(model, setting, 1, False)
        optimizer, per_step, per_epoch, clip = peer.schedule(cfg, model, batch=2, steps_per_epoch=4, epochs=2)
        assert optimizer.param_groups[0]["lr"] == pytest.approx(0.01 * 2 / 16 * 1e-3)  # warm-up from 1/1000
        loss = peer.train_step(model, batch, optimizer, clip)
        grads = [p.grad for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
        norms[name] = (float(loss), float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))))
    assert norms["sgd"][0] == pytest.approx(norms["sgd-clip"][0])  # the same loss before the update
    assert norms["sgd"][1] > 0.1 and norms["sgd-clip"][1] == pytest.approx(1e-3, rel=1e-4)
