"""The LightningModule: wires the network, the anchors, matching + loss, decoding + NMS, the metrics,
the lesson's discriminative learning rates and the staged recipe.

The network returns raw activations; everything the lesson did around it (``ssd_loss``,
``actn_to_bb``, ``nms``) lives here or in the modules this one calls (effdet's
``DetBenchTrain`` / ``DetBenchPredict`` idea).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, Optional, Sequence

import lightning as L
import torch
from torch import Tensor
from torch.optim.lr_scheduler import LambdaLR
from torchmetrics import MeanMetric

from detector.anchors import Anchors, make_anchors, mirror_index
from detector.callbacks import AtomicCheckpoints, FiniteWeights, ImageCounts, RNGState, RunIdentity, StagedFreezing
from detector.data.records import BadRecordError
from detector.loss import SSDLoss
from detector.metrics import DetectionMetrics
from detector.model import build_ssd
from detector.postprocess import postprocess, to_pixels
from detector.schedule import FREEZE, OneCycle, Stage, stage_at_epoch, total_epochs

__all__ = [
    "AnchorConfig",
    "HeadConfig",
    "LossConfig",
    "OptimizerConfig",
    "PostprocessConfig",
    "StagedModule",
    "DetectorModule",
    "NonFiniteLossError",
    "CheckpointMismatchError",
]


@dataclass
class AnchorConfig:
    """Anchor grids, zooms and (rh, rw) ratios: the lesson's defaults (189 anchors)."""

    grids: list[int] = field(default_factory=lambda: [4, 2, 1])
    zooms: list[float] = field(default_factory=lambda: [0.75, 1.0, 1.3])
    ratios: list[tuple[float, float]] = field(default_factory=lambda: [(1.0, 1.0), (1.0, 0.5), (0.5, 1.0)])


@dataclass
class HeadConfig:
    """The SSD head: ``dropout`` in each StdConv, ``head_dropout`` at its input (the lesson's
    ``drop = 0.4`` for both), class-logit ``bias`` at init (the lesson: -4 for k = 9), width, and
    ``top_down``: FPN's top-down pathway into the grids finer than stride 32 (beyond the lesson)."""

    dropout: float = 0.4
    head_dropout: float = 0.4
    bias: float = -4.0
    channels: int = 256
    top_down: bool = False


@dataclass
class LossConfig:
    """See :class:`detector.loss.SSDLoss`."""

    coder: Literal["tanh", "ssd"] = "tanh"
    iou_threshold: float = 0.4
    focal: bool = True
    alpha: float = 0.25
    gamma: float = 2.0
    loc_weight: float = 1.0
    cls_weight: float = 1.0
    reduction: Literal["mean", "lesson_sum"] = "mean"
    smooth_l1_beta: float = 1.0


@dataclass
class PostprocessConfig:
    """Decoding + NMS. ``score_threshold`` is for evaluation (low: mAP rewards recall);
    ``picture_score_threshold`` is the lesson's threshold for drawing (about 0.25).

    ``flip_tta``: test-time augmentation in evaluation and prediction (not in training): the network
    also sees each image flipped left-right, and each anchor's two predictions (its own, and its
    mirror anchor's on the flipped image, with the x offset negated) are averaged before decoding
    and NMS. Twice the network's cost; ultralytics' ``augment`` and mmdetection's TTA do the same
    with more views, merging boxes after decoding instead."""

    score_threshold: float = 0.01
    picture_score_threshold: float = 0.25
    iou_threshold: float = 0.4
    topk_per_class: int = 50
    max_per_image: int = 100
    flip_tta: bool = False


@dataclass
class OptimizerConfig:
    """AdamW by default; group ``i`` gets ``lr * lr_mult[i]`` (the lesson's ``[lr/100, lr/10, lr]``).

    ``div`` and ``cut_div`` are fastai's ``use_clr=(div, cut_div)`` for every stage's 1cycle;
    ``end_div`` (default: ``div``) where each cycle ends, ``lr / end_div``.
    ``fused``: Adam/AdamW update all parameters in one fused kernel (torch's ``fused=True``) instead
    of one small op per tensor and step: on this 2-core CPU the shapes model's step 19 -> 11 ms.
    """

    name: Literal["adamw", "adam", "sgd"] = "adamw"
    lr: float = 1e-2
    lr_mult: tuple[float, float, float] = (0.01, 0.1, 1.0)
    weight_decay: float = 1e-4
    momentum: float = 0.9
    div: float = 20.0
    cut_div: float = 10.0
    end_div: Optional[float] = None
    fused: bool = True


class NonFiniteLossError(FloatingPointError):
    """Raised on the first non-finite training loss, naming the step and the batch's image ids."""


class CheckpointMismatchError(ValueError):
    """A checkpoint whose weights do not fit the model built from this configuration."""


def _config(cls: type, value: Any) -> Any:
    """``None`` -> the defaults; a dict (from a checkpoint's hparams) -> the dataclass."""
    if value is None:
        return cls()
    return cls(**value) if isinstance(value, dict) else value


def _plain(value: Any) -> str:
    """A hyperparameter as canonical JSON, so that tuples and lists, dicts in any order, compare equal."""
    return json.dumps(value, sort_keys=True, default=str)


def _default_stages() -> list[Stage]:
    return [Stage(epochs=10, freeze="body", lr_mult=1.0), Stage(epochs=10, freeze="groups_0", lr_mult=0.25)]


class StagedModule(L.LightningModule):
    """What every task of the lessons shares: an ImageNet body plus a head, split into the three
    layer groups (body group 0, body group 1, head), the lesson's discriminative learning rates
    ``lr * lr_mult`` per group, the staged 1cycle recipe, staged freezing, and what exact
    resumption needs. A subclass builds ``self.model`` (an ``nn.Module`` with ``layer_groups``,
    ``freeze_parts`` and ``param_groups()``), calls :meth:`_model_ready`, and writes its own steps.

    Args:
        num_classes: C, real classes (linked from the data module by ``train.py``).
        class_names: their names, for logs and pictures (linked from the data module).
        backbone: ``resnet18 | resnet34 | resnet50 | efficientnet_lite0``.
        weights: ``imagenet | none | <path to a state dict>``.
        image_size: S, the square input side (linked to the data module's).
        optimizer: see :class:`OptimizerConfig`.
        stages: the recipe; the trainer's ``max_epochs`` is their total (linked by ``train.py``).
        train_bn: BatchNorm in frozen groups keeps training, as fastai does (``False`` freezes its
            affine parameters and running statistics too, so no gradient flows through a frozen
            body at all: on a CPU that makes a head-only stage about twice as fast).
        channels_last: run the network in NHWC memory format (on this 2-core CPU it trains an
            EfficientNet-Lite0 SSD about 2x faster; on GPUs it is what tensor cores want).
        norm_eval: the body's BatchNorm layers normalise with their running (ImageNet) statistics
            in training too and never update them; their affine parameters still train where their
            group trains. mmdetection's ``norm_eval``; torchvision's detection models go further and
            freeze them (``FrozenBatchNorm2d``). On a CPU an eval-mode BatchNorm is one cheap affine
            map, where a training one computes batch statistics and backpropagates through them.
        train_depthwise: ``False`` keeps the kernels of the body's depthwise convolutions
            (EfficientNet's, MobileNet's) at their pretrained values; everything else in a training
            group still trains, and gradients flow through them. On a CPU the kernel gradient of a
            depthwise conv costs ~10x its forward pass (oneDNN; ``bench/depthwise.py``), and the
            kernels are 6 % of EfficientNet-Lite0's body parameters.
    """

    def __init__(
        self,
        num_classes: int,
        class_names: list[str] | None,
        backbone: str,
        weights: str,
        image_size: int,
        optimizer: OptimizerConfig | None,
        stages: list[Stage] | None,
        train_bn: bool,
        channels_last: bool,
        norm_eval: bool = False,
        train_depthwise: bool = True,
    ) -> None:
        super().__init__()
        # Checkpoints store the configs as plain dicts (hparams); the CLI passes the dataclasses.
        self.optim_cfg = _config(OptimizerConfig, optimizer)
        self.stages = tuple(_config(Stage, s) for s in stages) if stages else tuple(_default_stages())
        for i, stage in enumerate(self.stages):
            if stage.freeze not in FREEZE:
                raise ValueError(
                    f"stages[{i}].freeze = {stage.freeze!r} names no frozen body stages: use one of "
                    f"{', '.join(FREEZE)} (body: train the head only; to_stride_16: train the stride-32 stage "
                    "and the head; groups_0: freeze group 0; none: train all)"
                )
            if stage.epochs < 1:
                raise ValueError(f"stages[{i}].epochs = {stage.epochs}: a stage lasts at least one epoch")
        class_names = list(class_names) if class_names else [str(i) for i in range(num_classes)]
        if len(class_names) != num_classes:
            raise ValueError(f"{num_classes=} but {len(class_names)} class names were given: {class_names}")
        self.class_names = class_names
        self.train_bn, self.channels_last, self.norm_eval = train_bn, channels_last, norm_eval
        self.train_depthwise = train_depthwise
        self._recipe = {
            "num_classes": num_classes,
            "class_names": class_names,
            "backbone": backbone,
            "weights": weights,
            "image_size": image_size,
            "optimizer": asdict(self.optim_cfg),
            "stages": [asdict(s) for s in self.stages],
            "train_bn": train_bn,
            "channels_last": channels_last,
            "norm_eval": norm_eval,
            "train_depthwise": train_depthwise,
        }

    def _model_ready(self, **task_hparams: Any) -> None:
        """Call once ``self.model`` exists: saves every hyperparameter, sets the memory format."""
        self.save_hyperparameters({**self._recipe, **task_hparams})
        if self.channels_last:
            self.model.to(memory_format=torch.channels_last)

    def forward(self, images: Tensor) -> Any:
        """``(B, 3, S, S)`` normalised images -> the network's raw outputs."""
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return self.model(images)

    def check_finite(self, terms: dict[str, Tensor], batch: dict[str, Tensor], batch_idx: int) -> None:
        """Stop at the first non-finite training loss, naming the step and the batch's image ids.

        Under DDP every process stops at the same step (one tiny all-reduce of the verdict), rather
        than the others waiting for it in the next gradient all-reduce. The checkpoints already
        written are left as they are: the last good one survives.
        """
        finite = bool(torch.isfinite(terms["loss"]))
        if self.trainer.strategy.reduce_boolean_decision(finite, all=True):
            return
        trainer = self.trainer
        where = "" if trainer.world_size == 1 else f" on process {trainer.global_rank} of {trainer.world_size}"
        cause = "" if not finite else " (another process's loss was non-finite; this one's was finite)"
        last = getattr(trainer.checkpoint_callback, "last_model_path", "") or "none written yet"
        raise NonFiniteLossError(
            f"non-finite training loss at global step {self.global_step} (epoch {self.current_epoch}, "
            f"batch {batch_idx}){where}{cause}: " + ", ".join(f"{k}={v.item()}" for k, v in terms.items())
            + f"; image ids in the batch: {batch['image_ids'].tolist()}. The checkpoints written so far are "
            f"kept (last: {last}): resume from one with a lower learning rate, or look at these images."
        )

    def skip_empty_batch(self, batch: dict[str, Tensor], batch_idx: int) -> bool:
        """True when images skipped at run time (``on_bad_record: skip``, see
        ``detector.data.datamodule``) left the batch with none, or, in training, with one (BatchNorm
        cannot normalise a single image's 1x1 map; the loader drops such last batches for the same
        reason). The step should then return ``None`` without touching the model: Lightning skips
        the backward and the optimiser update (the learning-rate schedule still advances one step).
        Under DDP a process cannot skip a training step alone (the others would wait for its
        gradients), so that raises instead, naming the images.
        """
        kept, skipped = len(batch["images"]), len(batch["skipped_ids"])
        trainer = self.trainer
        if kept > 1 or (kept == 1 and not (trainer.training and skipped)):
            return False
        if trainer.training and trainer.world_size > 1:
            raise BadRecordError(
                f"training batch {batch_idx} on process {trainer.global_rank} kept {kept} image(s): "
                f"{batch['skipped_ids'].tolist()} were skipped as unreadable (see the warnings above), and "
                "under DDP a process cannot skip a step alone. Fix or remove those images, then resume with "
                "--ckpt_path last"
            )
        return True

    # ---------------------------------------------------------------------------- optimisation
    def build_optimizer(self, lr: float) -> torch.optim.Optimizer:
        """The configured optimiser over the three layer groups at ``lr * lr_mult[i]`` (also the lr
        finder's, so that its sweep steps the optimiser that training will use)."""
        cfg = self.optim_cfg
        groups = [
            {"params": params, "lr": lr * mult, "name": name}
            for params, mult, name in zip(self.model.param_groups(), cfg.lr_mult, ("group0", "group1", "head"))
        ]
        if cfg.name == "sgd":
            return torch.optim.SGD(groups, lr=lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
        cls = torch.optim.AdamW if cfg.name == "adamw" else torch.optim.Adam
        return cls(groups, lr=lr, weight_decay=cfg.weight_decay, fused=cfg.fused)

    def configure_optimizers(self) -> dict[str, Any]:
        """All three parameter groups exist from the first step (frozen ones simply get no gradient),
        so resuming never meets a changed optimiser (Lightning issue #6891)."""
        cfg = self.optim_cfg
        opt = self.build_optimizer(cfg.lr)
        schedule = OneCycle(self.stages, self._steps_per_epoch(), div=cfg.div, cut_div=cfg.cut_div, end_div=cfg.end_div)
        # A plain function, not the OneCycle object: LambdaLR would pickle a callable object into the
        # checkpoint, and checkpoints must stay loadable with torch.load(weights_only=True).
        scheduler = LambdaLR(opt, lambda step: schedule(step))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def _steps_per_epoch(self) -> int:
        trainer = self.trainer
        epochs = trainer.max_epochs if trainer.max_epochs and trainer.max_epochs > 0 else total_epochs(self.stages)
        total = trainer.estimated_stepping_batches
        if total == float("inf"):
            raise ValueError("set trainer.max_epochs (train.py links it to the sum of model.stages)")
        return max(int(total) // max(epochs, 1), 1)

    # ----------------------------------------------------------------------------------- freeze
    def configure_callbacks(self) -> list[L.Callback]:
        """The recipe's freezing, what exact resumption needs (RNG states, logger run ids, atomic
        checkpoint writes) and the guards of a long run (finite weights, image counts) travel with
        the model, so every entry point (train.py, a hand-made Trainer) has them."""
        return [StagedFreezing(), RNGState(), RunIdentity(), AtomicCheckpoints(), FiniteWeights(), ImageCounts()]

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Refuse a checkpoint from another configuration with a message saying what differs, before
        Lightning's ``load_state_dict`` would fail on the first tensor of another shape (or, for the
        same number of classes under other names, silently load weights that mean something else)."""
        if not self.strict_loading:
            return
        saved = checkpoint.get("hyper_parameters", {})
        ours, theirs = self.state_dict(), checkpoint["state_dict"]
        reshaped = [k for k in ours.keys() & theirs.keys() if ours[k].shape != theirs[k].shape]
        missing, unexpected = sorted(ours.keys() - theirs.keys()), sorted(theirs.keys() - ours.keys())
        renamed = saved.get("class_names") is not None and list(saved["class_names"]) != list(self.class_names)
        if not (reshaped or missing or unexpected or renamed):
            return
        trainer = self._trainer
        source = f"checkpoint {trainer.ckpt_path}" if trainer is not None and trainer.ckpt_path else "the checkpoint"
        problems = []
        if reshaped:
            k = sorted(reshaped)[0]
            problems.append(
                f"{len(reshaped)} tensor(s) of another shape (e.g. {k}: {tuple(theirs[k].shape)} in the checkpoint, "
                f"{tuple(ours[k].shape)} here)"
            )
        if missing:
            problems.append(f"{len(missing)} tensor(s) missing from the checkpoint (e.g. {missing[:2]})")
        if unexpected:
            problems.append(f"{len(unexpected)} tensor(s) this model does not have (e.g. {unexpected[:2]})")
        if renamed:
            problems.append(f"classes {list(saved['class_names'])} in the checkpoint, {self.class_names} here")
        differ = [
            f"{k}: {saved[k]!r} in the checkpoint, {self.hparams[k]!r} here"
            for k in saved
            if k in self.hparams and k != "weights" and _plain(saved[k]) != _plain(self.hparams[k])
        ]
        raise CheckpointMismatchError(
            f"{source} does not fit this model ({type(self).__name__}): " + "; ".join(problems) + ". "
            + ("Settings that differ: " + "; ".join(differ) + ". " if differ else "")
            + "Use the configuration the checkpoint was trained with (train.py saves it as config.yaml in the "
            "run's log folder), or train afresh without --ckpt_path."
        )

    def frozen_parts(self, epoch: int) -> tuple[int, ...]:
        """Indices into ``model.freeze_parts`` (the body stages) frozen at ``epoch`` under the recipe."""
        return FREEZE[self.stages[stage_at_epoch(self.stages, epoch)].freeze]


class DetectorModule(StagedModule):
    """The lesson's SSD as a LightningModule.

    Args (beyond :class:`StagedModule`'s):
        anchors, head, loss, postprocess: see their dataclasses.
    """

    def __init__(
        self,
        num_classes: int = 20,
        class_names: list[str] | None = None,
        backbone: str = "resnet34",
        weights: str = "imagenet",
        image_size: int = 224,
        anchors: AnchorConfig | None = None,
        head: HeadConfig | None = None,
        loss: LossConfig | None = None,
        postprocess: PostprocessConfig | None = None,
        optimizer: OptimizerConfig | None = None,
        stages: list[Stage] | None = None,
        train_bn: bool = True,
        channels_last: bool = True,
        norm_eval: bool = False,
        train_depthwise: bool = True,
    ) -> None:
        super().__init__(
            num_classes,
            class_names,
            backbone,
            weights,
            image_size,
            optimizer,
            stages,
            train_bn,
            channels_last,
            norm_eval,
            train_depthwise,
        )
        anchors, head = _config(AnchorConfig, anchors), _config(HeadConfig, head)
        loss, postprocess = _config(LossConfig, loss), _config(PostprocessConfig, postprocess)
        self.post_cfg = postprocess
        self.model = build_ssd(
            num_classes=num_classes,
            backbone=backbone,
            weights=weights,
            image_size=image_size,
            grids=anchors.grids,
            zooms=anchors.zooms,
            ratios=anchors.ratios,
            dropout=head.dropout,
            head_dropout=head.head_dropout,
            bias=head.bias,
            channels=head.channels,
            top_down=head.top_down,
        )
        self._model_ready(anchors=asdict(anchors), head=asdict(head), loss=asdict(loss), postprocess=asdict(postprocess))
        a = make_anchors(anchors.grids, anchors.zooms, anchors.ratios)
        self.register_buffer("anchor_cxcywh", a.cxcywh, persistent=False)  # (A, 4)
        self.register_buffer("anchor_cell", a.cell_size, persistent=False)  # (A, 1)
        self.register_buffer("anchor_mirror", mirror_index(a), persistent=False)  # (A,) for flip_tta
        self._anchor_meta = (a.grids, a.k)
        self.criterion = SSDLoss(**asdict(loss))
        self.coder = loss.coder
        self.val_metrics = DetectionMetrics(num_classes)
        self.test_metrics = DetectionMetrics(num_classes)
        self.val_loss = MeanMetric()

    # ----------------------------------------------------------------------------------- model
    @property
    def anchors(self) -> Anchors:
        """The anchor set on the module's device."""
        return Anchors(self.anchor_cxcywh, self.anchor_cell, *self._anchor_meta)

    def flip_merged(self, images: Tensor, cls_logits: Tensor, box_deltas: Tensor) -> tuple[Tensor, Tensor]:
        """``flip_tta``: the outputs for ``images`` averaged with those for the flipped images, read
        at each anchor's mirror anchor. Both coders' first delta moves the centre along x, so the
        flip negates it; the others (y, and the log sizes or their tanh) stay. Shapes as given:
        ``(B, A, C)``, ``(B, A, 4)``."""
        cls_f, box_f = self(images.flip(-1))
        cls_f, box_f = cls_f[:, self.anchor_mirror], box_f[:, self.anchor_mirror]  # (B, A, C), (B, A, 4)
        box_f = torch.cat([-box_f[..., :1], box_f[..., 1:]], dim=-1)  # (B, A, 4)
        return (cls_logits + cls_f) / 2, (box_deltas + box_f) / 2

    def detect(self, images: Tensor, score_threshold: float | None = None) -> list[dict[str, Tensor]]:
        """Images -> per-image detections, boxes xyxy in ``[0, 1]`` (see :func:`postprocess`)."""
        return self._detections(images, *self(images), score_threshold)

    def _detections(
        self, images: Tensor, cls_logits: Tensor, box_deltas: Tensor, score_threshold: float | None = None
    ) -> list[dict[str, Tensor]]:
        """The network's outputs for ``images`` -> detections: ``flip_tta`` if configured, then decoding
        and NMS with the postprocess config (``score_threshold`` overrides its own)."""
        cfg = self.post_cfg
        if cfg.flip_tta:
            cls_logits, box_deltas = self.flip_merged(images, cls_logits, box_deltas)
        return postprocess(
            cls_logits.float(),
            box_deltas.float(),
            self.anchors,
            coder=self.coder,
            score_threshold=cfg.score_threshold if score_threshold is None else score_threshold,
            iou_threshold=cfg.iou_threshold,
            topk_per_class=cfg.topk_per_class,
            max_per_image=cfg.max_per_image,
        )

    # -------------------------------------------------------------------------------- training
    def _loss(self, batch: dict[str, Tensor]) -> tuple[dict[str, Tensor], tuple[Tensor, Tensor]]:
        out = self(batch["images"])
        cls_logits, box_deltas = (t.float() for t in out)  # the loss runs in float32 under AMP
        terms = self.criterion(cls_logits, box_deltas, self.anchors, batch["boxes"], batch["labels"])
        return terms, (cls_logits, box_deltas)

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor | None:
        if self.skip_empty_batch(batch, batch_idx):
            return None
        terms, _ = self._loss(batch)
        self.check_finite(terms, batch, batch_idx)
        B = batch["images"].shape[0]
        self.log_dict({f"train/{k}": v for k, v in terms.items()}, on_step=True, on_epoch=True, batch_size=B)
        return terms["loss"]

    # ------------------------------------------------------------------------------ evaluation
    def _eval_step(self, batch: dict[str, Tensor], metrics: DetectionMetrics) -> list[dict[str, Tensor]]:
        terms, (cls_logits, box_deltas) = self._loss(batch)
        self.val_loss.update(terms["loss"], weight=batch["images"].shape[0])  # without flip_tta
        dets = self._detections(batch["images"], cls_logits, box_deltas)
        metrics.update(to_pixels(dets, batch["sizes"]), self._targets_in_pixels(batch))
        return dets

    @staticmethod
    def _targets_in_pixels(batch: dict[str, Tensor]) -> list[dict[str, Tensor]]:
        """Batch ground truth -> per-image dicts in original-image pixels, padding removed."""
        h, w = batch["sizes"][:, 0:1], batch["sizes"][:, 1:2]  # (B, 1) each
        scale = torch.cat([w, h, w, h], dim=1).to(batch["boxes"].dtype)  # (B, 4)
        boxes = batch["boxes"] * scale[:, None, :]  # (B, M, 4)
        real = batch["labels"] >= 0  # (B, M)
        return [
            {"boxes": boxes[i][real[i]], "labels": batch["labels"][i][real[i]], "difficult": batch["difficult"][i][real[i]]}
            for i in range(boxes.shape[0])
        ]

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> dict[str, Any]:
        if self.skip_empty_batch(batch, batch_idx):
            return {"detections": []}
        return {"detections": self._eval_step(batch, self.val_metrics)}

    def test_step(self, batch: dict[str, Tensor], batch_idx: int) -> dict[str, Any]:
        if self.skip_empty_batch(batch, batch_idx):
            return {"detections": []}
        return {"detections": self._eval_step(batch, self.test_metrics)}

    def on_validation_epoch_end(self) -> None:
        self._log_metrics("val", self.val_metrics)

    def on_test_epoch_end(self) -> None:
        self._log_metrics("test", self.test_metrics)

    def _log_metrics(self, split: str, metrics: DetectionMetrics) -> None:
        """Log the split's loss, COCO/VOC mAPs and per-class AP@0.5, all computed over the whole split."""
        result = metrics.compute()
        logs = {f"{split}/loss": self.val_loss.compute()}
        for key in ("map", "map_50", "map_75", "voc07_map_50", "voc_map_50"):
            logs[f"{split}/{key}"] = torch.as_tensor(result[key], dtype=torch.float32)
        per_class = result["per_class"]
        for i, name in enumerate(self.class_names):
            logs[f"{split}_ap50/{name}"] = torch.as_tensor(per_class["map_50"][i], dtype=torch.float32)
        self.log_dict(logs, sync_dist=False)  # already reduced over every process by torchmetrics
        self.last_metrics = {split: result}
        metrics.reset()
        self.val_loss.reset()

    def predict_step(self, batch: dict[str, Tensor], batch_idx: int) -> list[dict[str, Tensor]]:
        """Per image: detections in original-image pixels plus its ``image_id``."""
        dets = to_pixels(self.detect(batch["images"]), batch["sizes"])
        for det, image_id in zip(dets, batch["image_ids"]):
            det["image_id"] = image_id
        return dets
