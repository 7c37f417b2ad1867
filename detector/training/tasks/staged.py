"""The LightningModule base of every task of the lessons: a pretrained body and a head in fastai's
three layer groups, trained by the staged recipe (:mod:`detector.training.recipe`).

It owns what the tasks share: the recipe (one :class:`~detector.training.recipe.Recipe` object, built from
the constructor's arguments), the discriminative parameter groups and the optimiser, the per-step
one-cycle schedule, the callbacks a long run needs, the checks of a loaded checkpoint, and the
guards of a training step. A task (the SSD, :class:`detector.training.tasks.detection.DetectorModule`, or a stepping
stone in :mod:`detector.training.tasks`) builds ``self.model``, calls :meth:`StagedModule.model_ready`, and
writes its steps and :meth:`StagedModule.loss`.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import lightning as L
import torch
from torch import Tensor
from torch.optim.lr_scheduler import LambdaLR

from detector.defaults import IMAGE_SIZE
from detector.errors import ConfigError
from detector.training.checkpoints import AtomicCheckpoints, check_checkpoint_fits
from detector.training.guards import FiniteWeights, ImageCounts, batch_is_empty, check_finite_loss
from detector.training.loggers import RunIdentity
from detector.training.recipe import OneCycle, OptimizerConfig, Recipe, Stage, StagedFreezing, total_epochs
from detector.training.rng import RNGState

__all__ = ["CHECKPOINT_TASK_KEY", "StagedModule", "to_config"]

CHECKPOINT_TASK_KEY = "task_class"
"""The checkpoint entry naming the LightningModule class that wrote it (read by
:func:`detector.deploy.loading.checkpoint_task`)."""


def to_config(cls: type, value: Any) -> Any:
    """``None`` -> the defaults; a dict (from a checkpoint's hparams) -> the dataclass."""
    if value is None:
        return cls()
    return cls(**value) if isinstance(value, dict) else value


class StagedModule(L.LightningModule):
    """An ImageNet body plus a head, split into the three layer groups (body group 0, body group 1,
    head), with the lesson's discriminative learning rates ``lr * lr_mult`` per group, the staged
    1cycle recipe, staged freezing, and what exact resumption needs.

    A subclass builds ``self.model`` (an ``nn.Module`` with ``layer_groups`` and ``param_groups()``,
    as :class:`detector.model.ssd.BodyAndHead`), calls :meth:`model_ready`, and writes its steps.

    Args:
        num_classes: C, the number of classes (set from the data).
        class_names: their names, for logs and pictures (set from the data).
        backbone: ``resnet18``, ``resnet34``, ``resnet50`` or ``efficientnet_lite0``.
        weights: ``imagenet``, ``none`` (random) or the path of a state dict.
        image_size: S, the side of the square network input (the data is resized to it).
        optimizer: the optimiser (adamw, adam, sgd), its learning rate and the per-group multipliers.
        stages: the recipe, a list of ``{epochs, freeze, lr_mult}`` (default: the lesson's 10 epochs
            head-only then 10 with ``freeze_to(-2)`` at ``lrs / 4``); the run lasts their total.
        train_bn: BatchNorm in frozen groups keeps training, as fastai does (``False`` freezes its
            affine parameters and running statistics too, so no gradient flows through a frozen
            body at all: on a CPU that makes a head-only stage about twice as fast).
        norm_eval: the body's BatchNorm layers normalise with their running (ImageNet) statistics
            in training too and never update them; their affine parameters still train where their
            group trains (mmdetection's ``norm_eval``; torchvision's detection models go further and
            freeze them). On a CPU an eval-mode BatchNorm folds into the conv before it, where a
            training one computes batch statistics.
        train_depthwise: ``False`` keeps the kernels of the body's depthwise convolutions
            (EfficientNet's, MobileNet's) at their pretrained values: on a CPU their gradient costs
            about 10x their forward pass.
        channels_last: run the network in NHWC memory format (on a 2-core CPU it trains an
            EfficientNet-Lite0 SSD about 2x faster; on GPUs it is what tensor cores want).
    """

    def __init__(
        self,
        num_classes: int = 20,
        class_names: list[str] | None = None,
        backbone: str = "resnet34",
        weights: str = "imagenet",
        image_size: int = IMAGE_SIZE,
        optimizer: OptimizerConfig | None = None,
        stages: list[Stage] | None = None,
        train_bn: bool = True,
        norm_eval: bool = False,
        train_depthwise: bool = True,
        channels_last: bool = True,
    ) -> None:
        super().__init__()
        recipe = {"optimizer": to_config(OptimizerConfig, optimizer), "train_bn": train_bn, "norm_eval": norm_eval}
        if stages:  # checkpoints store the configs as plain dicts (hparams); the CLI passes dataclasses
            recipe["stages"] = tuple(to_config(Stage, s) for s in stages)
        self.recipe = Recipe(**recipe, train_depthwise=train_depthwise)
        class_names = list(class_names) if class_names else [str(i) for i in range(num_classes)]
        if len(class_names) != num_classes:
            raise ConfigError(f"{num_classes=} but {len(class_names)} class names were given: {class_names}")
        self.num_classes, self.class_names, self.image_size = num_classes, class_names, image_size
        self.backbone_name, self.weights = backbone, weights
        self.channels_last = channels_last
        self._base_hparams = {
            "num_classes": num_classes,
            "class_names": class_names,
            "backbone": backbone,
            "weights": weights,
            "image_size": image_size,
            "optimizer": asdict(self.recipe.optimizer),
            "stages": [asdict(s) for s in self.recipe.stages],
            "train_bn": train_bn,
            "norm_eval": norm_eval,
            "train_depthwise": train_depthwise,
            "channels_last": channels_last,
        }

    def model_ready(self, **task_hparams: Any) -> None:
        """Call once ``self.model`` exists: saves every hyperparameter, sets the memory format, and
        folds eval-mode BatchNorm in training when the recipe leaves any (:mod:`detector.training.fold`)."""
        self.save_hyperparameters({**self._base_hparams, **task_hparams})
        if self.channels_last:
            self.model.to(memory_format=torch.channels_last)
        if not self.recipe.train_bn or self.recipe.norm_eval:
            from detector.training.fold import FoldedStages

            self.model.backbone.stage_runner = FoldedStages()

    def forward(self, images: Tensor) -> Any:
        """``(B, 3, S, S)`` normalised images -> the network's raw outputs."""
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return self.model(images)

    def loss(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """The named loss terms of a training batch, ``loss`` their weighted total (each task's own)."""
        raise NotImplementedError(f"{type(self).__name__} must define loss")

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor | None:
        """:meth:`loss` of the batch, stopped at the first non-finite value, logged as ``train/*``."""
        if batch_is_empty(self, batch, batch_idx):
            return None
        terms = self.loss(batch)
        check_finite_loss(self, terms, batch, batch_idx)
        B = batch["images"].shape[0]
        # sync_dist: under DDP each value is the mean over every process's batch (a no-op on one device)
        self.log_dict({f"train/{k}": v.detach() for k, v in terms.items()}, on_step=True, on_epoch=True, batch_size=B, sync_dist=True)
        return terms["loss"]

    # ---------------------------------------------------------------------------- optimisation
    def build_optimizer(self, lr: float) -> torch.optim.Optimizer:
        """The configured optimiser over the three layer groups at ``lr * lr_mult[i]`` (also the lr
        finder's, so that its sweep steps the optimiser that training will use)."""
        cfg = self.recipe.optimizer
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
        cfg = self.recipe.optimizer
        opt = self.build_optimizer(cfg.lr)
        schedule = OneCycle(self.recipe.stages, self._steps_per_epoch(), cfg.div, cfg.cut_div, cfg.end_div)
        # A plain function, not the OneCycle object: LambdaLR would pickle a callable object into the
        # checkpoint, and checkpoints must stay loadable with torch.load(weights_only=True).
        scheduler = LambdaLR(opt, lambda step: schedule(step))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def _steps_per_epoch(self) -> int:
        trainer = self.trainer
        epochs = trainer.max_epochs if trainer.max_epochs and trainer.max_epochs > 0 else total_epochs(self.recipe.stages)
        total = trainer.estimated_stepping_batches
        if total == float("inf"):
            raise ConfigError("set trainer.max_epochs (detector train links it to the sum of model.stages)")
        return max(int(total) // max(epochs, 1), 1)

    # ------------------------------------------------------------------------------ callbacks
    def configure_callbacks(self) -> list[L.Callback]:
        """The recipe's freezing, what exact resumption needs (RNG states, logger run ids, atomic
        checkpoint writes) and the guards of a long run (finite weights, image counts) travel with
        the model, so every entry point (``detector train``, a hand-made Trainer) has them."""
        return [StagedFreezing(), RNGState(), RunIdentity(), AtomicCheckpoints(), FiniteWeights(), ImageCounts()]

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Name the task in the checkpoint, so that every command rebuilds the right class from it."""
        checkpoint[CHECKPOINT_TASK_KEY] = f"{type(self).__module__}.{type(self).__qualname__}"

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Refuse a checkpoint from another configuration, saying what differs
        (:func:`~detector.training.checkpoints.check_checkpoint_fits`)."""
        if not self.strict_loading:
            return
        try:
            path = self.trainer.ckpt_path
        except RuntimeError:  # not attached to a Trainer: load_from_checkpoint
            path = None
        check_checkpoint_fits(self, checkpoint, f"checkpoint {path}" if path else "the checkpoint")
