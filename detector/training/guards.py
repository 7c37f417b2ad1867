"""Guards of a long run: stop at the first non-finite loss or weights, naming the step, and never
evaluate or checkpoint them; skip a batch that images gone bad at run time left empty; count the
images each split used and skipped."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch import Tensor

from detector.errors import BadRecordError
from detector.training.checkpoints import last_checkpoint_path

__all__ = [
    "FiniteWeights",
    "ImageCounts",
    "NonFiniteLossError",
    "NonFiniteWeightsError",
    "batch_is_empty",
    "check_finite_loss",
]


class NonFiniteLossError(FloatingPointError):
    """Raised on the first non-finite training loss, naming the step and the batch's image ids."""


def check_finite_loss(module: L.LightningModule, terms: dict[str, Tensor], batch: dict[str, Tensor], batch_idx: int) -> None:
    """Stop at the first non-finite training loss ``terms["loss"]``, naming the step and the batch's
    image ids.

    Under DDP every process stops at the same step (one tiny all-reduce of the verdict), rather
    than the others waiting for it in the next gradient all-reduce. The checkpoints already
    written are left as they are: the last good one survives.
    """
    finite = bool(torch.isfinite(terms["loss"]))
    trainer = module.trainer
    if trainer.strategy.reduce_boolean_decision(finite, all=True):
        return
    where = "" if trainer.world_size == 1 else f" on process {trainer.global_rank} of {trainer.world_size}"
    cause = "" if not finite else " (another process's loss was non-finite; this one's was finite)"
    raise NonFiniteLossError(
        f"non-finite training loss at global step {module.global_step} (epoch {module.current_epoch}, "
        f"batch {batch_idx}){where}{cause}: " + ", ".join(f"{k}={v.item()}" for k, v in terms.items())
        + f"; image ids in the batch: {batch['image_ids'].tolist()}. The checkpoints written so far are "
        f"kept (last: {last_checkpoint_path(trainer)}): resume from one with a lower learning rate, or look at these images."
    )


def batch_is_empty(module: L.LightningModule, batch: dict[str, Tensor], batch_idx: int) -> bool:
    """True when images skipped at run time (``on_bad_record: skip``, see ``detector.data.dataset``)
    left the batch with none, or, in training, with one (BatchNorm cannot normalise a single
    image's 1x1 map; the loader drops such last batches for the same reason). The step should then
    return ``None`` without touching the model: Lightning skips the backward and the optimiser
    update (the learning-rate schedule still advances one step). Under DDP a process cannot skip a
    training step alone (the others would wait for its gradients), so that raises instead, naming
    the images.
    """
    kept, skipped = len(batch["images"]), len(batch["skipped_ids"])
    trainer = module.trainer
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


class NonFiniteWeightsError(FloatingPointError):
    """The model's weights hold NaN or infinity; the message names the step and the tensors."""


class FiniteWeights(L.Callback):
    """Never evaluates or checkpoints non-finite weights.

    The loss check (:func:`check_finite_loss`) stops at the first non-finite loss, but an
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
        last = last_checkpoint_path(trainer)
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
    ``detector.data.dataset``). When training or testing starts it also logs what loading the
    splits skipped under ``on_bad_record="skip"`` (``data/train_skipped_images``,
    ``data/train_skipped_boxes``, and the same for val and test; :mod:`detector.data.skip_guard`)."""

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.global_step == 0:  # a resumed run logged them when it first started: its log stays the same
            self._log_load_skips(trainer, ("train", "val"))

    def on_test_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._log_load_skips(trainer, ("test",))

    @staticmethod
    def _log_load_skips(trainer: L.Trainer, names: tuple[str, ...]) -> None:
        splits = getattr(trainer.datamodule, "splits", None) or {}
        metrics: dict[str, float] = {}
        for name in names:
            report = getattr(splits.get(name), "report", None)
            if report is not None:
                metrics[f"data/{name}_skipped_images"] = float(report.skipped_images)
                metrics[f"data/{name}_skipped_boxes"] = float(report.skipped_annotations)
        if metrics and trainer.is_global_zero:
            for logger in trainer.loggers:
                logger.log_metrics(metrics, step=trainer.global_step)

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
