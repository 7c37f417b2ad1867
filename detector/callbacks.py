"""Callbacks: the staged freezing of the lesson's recipe; what exact resumption needs (RNG states,
logger run ids, checkpoints that a kill cannot truncate); guards of a long run (no evaluating or
checkpointing non-finite weights, counts of the images used and skipped); and pictures + per-class
AP for the dashboards."""

from __future__ import annotations

import contextlib
import os
import random
import tempfile
from pathlib import Path
from typing import Any, Sequence

import lightning as L
import numpy as np
import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.callbacks import ModelCheckpoint as _LightningModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger, WandbLogger
from lightning.pytorch.strategies import DDPStrategy
from torch import nn

from detector.schedule import FREEZE
from detector.visualize import denormalize, detection_grid, figure_to_array

__all__ = [
    "AtomicCheckpointIO",
    "AtomicCheckpoints",
    "FiniteWeights",
    "ImageCounts",
    "ModelCheckpoint",
    "NonFiniteWeightsError",
    "StagedFreezing",
    "apply_freeze",
    "freeze_for_epoch",
    "RNGState",
    "RunIdentity",
    "ValidationPictures",
    "per_class_table",
]

_BATCHNORM = (nn.modules.batchnorm._BatchNorm,)


def apply_freeze(
    groups: Sequence[nn.Module],
    frozen: Sequence[int],
    train_bn: bool = True,
    norm_eval: Sequence[int] = (),
    fixed_depthwise: Sequence[int] = (),
) -> None:
    """Freeze the ``groups`` (modules: layer groups, or a model's ``freeze_parts``) whose indices are
    in ``frozen``; make the others trainable.

    With ``train_bn`` (fastai's default), BatchNorm layers inside frozen groups keep training their
    affine parameters and running statistics; without it they are frozen and put in eval mode.
    BatchNorm layers in the groups listed in ``norm_eval`` normalise with their running statistics
    and leave them alone (eval mode), whether or not the group is frozen; their affine parameters
    still train where the group trains (mmdetection's ``norm_eval``). Depthwise convolutions
    (``groups == in_channels > 1``) in the groups listed in ``fixed_depthwise`` keep their kernels
    fixed where the group trains; gradients still flow through them.
    """
    for i, group in enumerate(groups):
        freeze = i in frozen
        for module in group.modules():
            is_bn = isinstance(module, _BATCHNORM)
            trainable = not freeze or (is_bn and train_bn)
            if i in fixed_depthwise and _is_depthwise(module):
                trainable = False
            for p in module.parameters(recurse=False):
                p.requires_grad_(trainable)
            if is_bn and ((freeze and not train_bn) or i in norm_eval):
                module.eval()


def _is_depthwise(module: nn.Module) -> bool:
    return isinstance(module, nn.Conv2d) and 1 < module.groups == module.in_channels


def freeze_for_epoch(pl_module: Any, epoch: int) -> None:
    """:func:`apply_freeze` on ``pl_module.model.freeze_parts`` as the recipe has it at ``epoch``,
    with the module's ``train_bn``, and its ``norm_eval`` and ``train_depthwise: false`` applied to
    every body stage (all parts but the head)."""
    body = range(len(pl_module.model.freeze_parts) - 1)
    apply_freeze(
        pl_module.model.freeze_parts,
        pl_module.frozen_parts(epoch),
        pl_module.train_bn,
        norm_eval=body if getattr(pl_module, "norm_eval", False) else (),
        fixed_depthwise=body if not getattr(pl_module, "train_depthwise", True) else (),
    )


class StagedFreezing(L.Callback):
    """Applies the recipe's freeze setting for the current epoch (and the module's ``norm_eval``)
    before every training epoch.

    The stage is a pure function of the epoch (``StagedModule.frozen_parts``), so a run resumed
    from a checkpoint freezes exactly what the interrupted run froze, and the optimiser (which holds
    every group from the first step) never changes shape.

    Under DDP, parameters that a stage freezes get no gradient, which DDP treats as an error (at the
    second step) unless told to look for unused parameters each step; so a recipe that freezes
    anything is refused before training unless the strategy is ``ddp_find_unused_parameters_true``.
    (Building DDP around the first stage's trainable parameters only would not do: DDP would then
    never synchronise the groups a later stage unfreezes.)
    """

    def setup(self, trainer: L.Trainer, pl_module: Any, stage: str) -> None:
        strategy = trainer.strategy
        if stage != "fit" or not isinstance(strategy, DDPStrategy) or strategy._ddp_kwargs.get("find_unused_parameters"):
            return
        freezing = [i for i, s in enumerate(pl_module.stages) if FREEZE[s.freeze]]
        if freezing:
            raise ValueError(
                f"model.init_args.stages[{freezing[0]}] freezes layer groups, whose parameters then get no gradient, "
                "which DDP refuses: set trainer.strategy to ddp_find_unused_parameters_true"
            )
        if not getattr(pl_module, "train_depthwise", True):
            raise ValueError(
                "model.init_args.train_depthwise: false leaves the body's depthwise kernels without a gradient, "
                "which DDP refuses: set trainer.strategy to ddp_find_unused_parameters_true"
            )

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: Any) -> None:
        freeze_for_epoch(pl_module, trainer.current_epoch)


class RNGState(L.Callback):
    """Saves the global RNG states (torch CPU and CUDA, NumPy, ``random``) with every checkpoint and
    restores them on resume, so a resumed run draws the same dropout masks as an uninterrupted one.

    Lightning restores epoch, step, optimiser and scheduler but not these. The data pipeline does not
    need them (its shuffling and augmentation are seeded by (seed, epoch, index)); dropout does.
    Stored as tensors and plain lists, so checkpoints still load with ``weights_only=True``.
    """

    def state_dict(self) -> dict[str, Any]:
        kind, keys, pos, has_gauss, gauss = np.random.get_state()
        state = {
            "torch": torch.get_rng_state(),
            "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss],
            "python": random.getstate(),
        }
        if torch.cuda.is_available():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        torch.set_rng_state(state["torch"])
        kind, keys, pos, has_gauss, gauss = state["numpy"]
        np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
        random.setstate(_tuples(state["python"]))
        if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(state["cuda"])


def _tuples(x: Any) -> Any:
    """``random.setstate`` wants the nested tuples back (a checkpoint may hand over lists)."""
    return tuple(_tuples(v) for v in x) if isinstance(x, (list, tuple)) else x


class RunIdentity(L.Callback):
    """Records each logger's run id (TensorBoard/CSV ``version``, wandb run ``id``) in checkpoints,
    and flushes the loggers whenever a checkpoint is written.

    ``train.py fit --ckpt_path ...`` reads the ids back before building the loggers, so a resumed run
    keeps writing to the same dashboard run instead of starting a new one. The flush makes a killed
    run's logs hold everything up to its last checkpoint, where the resumed run carries on (the CSV
    logger otherwise writes every 100 steps and TensorBoard every 2 minutes, and a kill loses the rest).
    """

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: Any, checkpoint: dict[str, Any]) -> None:
        for logger in trainer.loggers:
            logger.save()

    def on_train_start(self, trainer: L.Trainer, pl_module: Any) -> None:
        """A resumed run's CSV (:class:`detector.loggers.CSVLogger`) keeps the rows logged before its
        checkpoint and loses those a killed run logged after it, which this run logs again."""
        for logger in trainer.loggers:
            drop = getattr(getattr(logger, "experiment", None), "drop_rows_from", None)
            if drop is not None and trainer.is_global_zero:
                drop(trainer.global_step)

    def __init__(self) -> None:
        self.loggers: list[dict[str, Any]] = []

    def setup(self, trainer: L.Trainer, pl_module: Any, stage: str) -> None:
        self.loggers = [{"type": type(lg).__name__, "version": lg.version} for lg in trainer.loggers]

    def state_dict(self) -> dict[str, Any]:
        return {"loggers": self.loggers}


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes a checkpoint so that a process killed at any moment leaves either the previous file or
    the new one, never a truncated one: ``torch.save`` into a temporary file in the checkpoint's own
    folder, ``fsync``, ``os.replace`` over the old file (atomic on POSIX and Windows), ``fsync`` the
    folder. The temporary file of a killed save (``.NAME.*.partial``) is removed by the next save
    of ``NAME``.

    Why not Lightning's own save (2.6, ``lightning.fabric.utilities.cloud_io._atomic_save``): it
    writes through an fsspec transaction whose local temporary file is made by
    ``tempfile.mkstemp()`` in the system temp folder and then ``shutil.move``d onto the checkpoint.
    When the temp folder is on another filesystem (a tmpfs ``/tmp``; checkpoints on a mounted
    volume), the move is a copy into the final path, which a kill truncates
    (``tests/test_reliability.py`` shows it); nothing is ``fsync``ed, so a power cut can leave an
    empty file; and a kill leaves a checkpoint-sized orphan in ``/tmp``. Remote paths
    (``s3://...``) still go through Lightning's save.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        if "://" in str(path):
            return super().save_checkpoint(checkpoint, path, storage_options)
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options, got {storage_options!r}")
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
        try:
            umask = os.umask(0)
            os.umask(umask)
            os.fchmod(fd, 0o666 & ~umask)  # as an ordinary new file (mkstemp makes it private)
            with os.fdopen(fd, "wb") as f:
                torch.save(checkpoint, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        if os.name == "posix":  # make the rename itself durable
            folder = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(folder)
            finally:
                os.close(folder)
        for stale in path.parent.glob(f".{path.name}.*.partial"):
            stale.unlink(missing_ok=True)


class ModelCheckpoint(_LightningModelCheckpoint):
    """Lightning's ``ModelCheckpoint``, except that ``save_last=True`` writes ``last.ckpt`` after every
    validation, as its documentation says. Lightning 2.6.6 writes it only when a top-k checkpoint was
    saved at the same step, so after an epoch that did not improve the monitored metric ``last.ckpt``
    stayed behind, and a resumed run repeated those epochs (and ``eval.py`` of ``last.ckpt``
    evaluated older weights than the dashboards showed)."""

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)  # where Lightning saves when it validates every epoch
        if self._should_save_on_train_epoch_end(trainer):
            self._save_last_if_not_saved(trainer)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_validation_end(trainer, pl_module)  # ... and where it saves otherwise
        if not self._should_save_on_train_epoch_end(trainer):
            self._save_last_if_not_saved(trainer)

    def _save_last_if_not_saved(self, trainer: L.Trainer) -> None:
        if self.save_last is True and not self._should_skip_saving_checkpoint(trainer):  # nothing saved at this step
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))


class AtomicCheckpoints(L.Callback):
    """Makes the trainer save checkpoints with :class:`AtomicCheckpointIO` when it would use
    Lightning's default ``TorchCheckpointIO``; a CheckpointIO plugin chosen in the config is left
    alone. A callback (returned by ``StagedModule.configure_callbacks``) rather than a Trainer
    plugin, so that every Trainer that fits the module gets it, ``train.py``'s or a hand-made one."""

    def setup(self, trainer: L.Trainer, pl_module: Any, stage: str) -> None:
        if type(trainer.strategy.checkpoint_io) is TorchCheckpointIO:
            trainer.strategy.checkpoint_io = AtomicCheckpointIO()


class NonFiniteWeightsError(FloatingPointError):
    """The model's weights hold NaN or infinity; the message names the step and the tensors."""


class FiniteWeights(L.Callback):
    """Never evaluates or checkpoints non-finite weights.

    The loss check (``StagedModule.check_finite``) stops at the first non-finite loss, but an
    optimiser step that turns finite gradients into NaN weights on the last batch of an epoch would
    be validated and then saved over the last good ``last.ckpt`` before any loss saw it. So before
    each validation and each checkpoint, every floating-point tensor of the state dict is checked
    (one pass over the weights, one device sync: cheap next to an epoch).
    """

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._check(trainer, pl_module, "validating")

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        self._check(trainer, pl_module, "saving a checkpoint")

    @staticmethod
    def _check(trainer: L.Trainer, pl_module: L.LightningModule, doing: str) -> None:
        tensors = {k: v for k, v in pl_module.state_dict().items() if v.is_floating_point()}
        finite = torch.stack([torch.isfinite(v).all() for v in tensors.values()]).cpu()  # (T,) one sync
        if bool(finite.all()):
            return
        bad = [k for k, ok in zip(tensors, finite.tolist()) if not ok]
        last = getattr(trainer.checkpoint_callback, "last_model_path", "") or "none written yet"
        raise NonFiniteWeightsError(
            f"the weights are not finite at global step {trainer.global_step} (epoch {trainer.current_epoch}), "
            f"stopping before {doing}: {len(bad)} tensor(s) hold NaN or inf, e.g. {bad[:3]}. The checkpoints "
            f"written so far are kept (last: {last}): resume from one with a lower learning rate."
        )


class ImageCounts(L.Callback):
    """Logs, per epoch and summed over every process, how many images each split used
    (``val/images``, ``test/images``: with DDP, proof that every image was evaluated exactly once)
    and how many were skipped at run time as unreadable (``train/skipped_images``,
    ``val/skipped_images``, ``test/skipped_images``; see ``on_bad_record`` in
    ``detector.data.datamodule``)."""

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int) -> None:
        self._log(pl_module, "train", batch, images=False)

    def on_validation_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        self._log(pl_module, "val", batch, images=True)

    def on_test_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        self._log(pl_module, "test", batch, images=True)

    @staticmethod
    def _log(pl_module: L.LightningModule, split: str, batch: dict[str, torch.Tensor], images: bool) -> None:
        counts = {f"{split}/skipped_images": float(len(batch["skipped_ids"]))}
        if images:
            counts[f"{split}/images"] = float(batch["images"].shape[0])
        pl_module.log_dict(counts, on_step=False, on_epoch=True, reduce_fx="sum", sync_dist=True, batch_size=1)


def per_class_table(class_names: Sequence[str], per_class: dict[str, Any]) -> str:
    """A markdown table of per-class AP (COCO AP, AP@0.5, VOC07 AP@0.5)."""
    rows = ["| class | AP | AP@0.5 | VOC07 AP@0.5 |", "|---|---|---|---|"]
    for i, name in enumerate(class_names):
        vals = [float(torch.as_tensor(per_class[k][i])) for k in ("map", "map_50", "voc07_map_50")]
        rows.append(f"| {name} | " + " | ".join(f"{v:.3f}" for v in vals) + " |")
    return "\n".join(rows)


class ValidationPictures(L.Callback):
    """Every validation epoch, logs a grid of the first val images with predicted (solid, scored) and
    ground-truth (dashed) boxes, and the per-class AP table, to whichever loggers the run uses
    (TensorBoard images/text, wandb images/tables, CSV: PNG and markdown files in the log dir)."""

    def __init__(self, num_images: int = 8) -> None:
        self.num_images = num_images
        self._sample: dict[str, Any] | None = None

    def on_validation_batch_end(
        self, trainer: L.Trainer, pl_module: Any, outputs: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        # The epoch's first batch that has images (on_bad_record: skip can empty one).
        if self._sample is not None or trainer.sanity_checking or not trainer.is_global_zero or not len(batch["images"]):
            return
        n = min(self.num_images, batch["images"].shape[0])
        backbone = pl_module.model.backbone
        S = batch["images"].shape[-1]
        thr = pl_module.post_cfg.picture_score_threshold
        preds = []
        for det in outputs["detections"][:n]:
            keep = det["scores"] >= thr
            preds.append({k: v[keep].cpu() for k, v in det.items()})
            preds[-1]["boxes"] = preds[-1]["boxes"] * S
        targets = []
        for i in range(n):
            real = batch["labels"][i] >= 0
            targets.append({"boxes": batch["boxes"][i][real].cpu() * S, "labels": batch["labels"][i][real].cpu()})
        images = denormalize(batch["images"][:n], backbone.mean, backbone.std)
        self._sample = {"images": list(images), "preds": preds, "targets": targets}

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: Any) -> None:
        if self._sample is None or trainer.sanity_checking or not trainer.is_global_zero:
            return
        s, self._sample = self._sample, None
        fig = detection_grid(s["images"], s["preds"], s["targets"], pl_module.class_names)
        picture = figure_to_array(fig)
        metrics = getattr(pl_module, "last_metrics", {}).get("val")
        table = per_class_table(pl_module.class_names, metrics["per_class"]) if metrics else None
        step, epoch = trainer.global_step, trainer.current_epoch
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger):
                logger.experiment.add_image("val/pictures", picture, step, dataformats="HWC")
                if table:
                    logger.experiment.add_text("val/per_class_ap", table, step)
            elif isinstance(logger, WandbLogger):
                logger.log_image("val/pictures", [picture], step=step)
                if table:
                    logger.log_text("val/per_class_ap", columns=["table"], data=[[table]], step=step)
            elif isinstance(logger, CSVLogger):
                out = Path(logger.log_dir) / "pictures"
                out.mkdir(parents=True, exist_ok=True)
                import matplotlib.image

                matplotlib.image.imsave(out / f"val_epoch{epoch:03d}.png", picture)
                if table:
                    (out / f"per_class_ap_epoch{epoch:03d}.md").write_text(table + "\n")
