"""What the four stepping-stone tasks share beyond :class:`detector.training.tasks.staged.StagedModule`: the steps,
the logging (``train/*`` per step and epoch, ``val/*`` and ``test/*`` per epoch, as the detector's),
prediction, and the record of which task a checkpoint holds.

A task says four things: how its output becomes named loss terms (:meth:`TaskModule.loss_terms`),
which metrics it keeps (:meth:`TaskModule.make_metrics`) and what they are fed
(:meth:`TaskModule.metric_inputs`), and how raw outputs become predictions (:meth:`TaskModule.detect`).
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn
from torchmetrics import Metric

from detector.defaults import Split
from detector.training.guards import batch_is_empty, check_finite_loss
from detector.training.tasks.staged import StagedModule

__all__ = ["TaskModule", "class_predictions", "zero_loss"]


class TaskModule(StagedModule):
    """Base of the stepping stones. A subclass builds ``self.model`` (a
    :class:`detector.training.tasks.nets.TaskNet`), calls ``self.model_ready(**its_hparams)`` and then
    ``self._metrics_ready()``.

    Predictions (:meth:`detect`, ``predict_step``, ``detector predict``) are one dict per image with the
    keys the task predicts, a subset of the detector's: ``boxes (N, 4)`` xyxy in ``[0, 1]``,
    ``labels (N,)`` int64 class indices, ``scores (N,)`` probabilities in ``[0, 1]``.
    """

    def _metrics_ready(self) -> None:
        # One set per split; ModuleDict so they move with the module's device and are reset by Lightning.
        self.train_metrics = nn.ModuleDict(self.make_metrics())
        self.val_metrics = nn.ModuleDict(self.make_metrics())
        self.test_metrics = nn.ModuleDict(self.make_metrics())

    # ------------------------------------------------------------------------ the task's part
    def make_metrics(self) -> dict[str, Metric]:
        """Fresh metric objects, by the name they are logged under (``val/<name>``)."""
        raise NotImplementedError(f"{type(self).__name__} must define make_metrics")

    def loss_terms(self, outputs: Tensor, batch: dict[str, Tensor]) -> tuple[dict[str, Tensor], int]:
        """``outputs (B, K)`` raw -> (named loss terms with ``loss`` the total, number of images scored)."""
        raise NotImplementedError(f"{type(self).__name__} must define loss_terms")

    def metric_inputs(self, outputs: Tensor, batch: dict[str, Tensor]) -> dict[str, tuple[Tensor, Tensor]]:
        """``(preds, target)`` per metric name for this batch; empty when the batch has nothing to score."""
        raise NotImplementedError(f"{type(self).__name__} must define metric_inputs")

    def detect(self, images: Tensor, score_threshold: float | None = None) -> list[dict[str, Tensor]]:
        """``(B, 3, S, S)`` normalised images -> one prediction dict per image (see the class docstring);
        ``score_threshold`` drops predicted classes whose probability is not above it."""
        raise NotImplementedError(f"{type(self).__name__} must define detect")

    # ----------------------------------------------------------------------------------- steps
    def loss(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """:meth:`loss_terms` of the batch's outputs (for the lr finder)."""
        return self.loss_terms(self(batch["images"]).float(), batch)[0]

    def _step(self, batch: dict[str, Tensor], batch_idx: int, split: Split) -> Tensor | None:
        if batch_is_empty(self, batch, batch_idx):  # every image of the batch unreadable (on_bad_record: skip)
            return None
        outputs = self(batch["images"]).float()  # (B, K); losses and metrics in float32 under AMP
        terms, n = self.loss_terms(outputs, batch)
        train = split == "train"
        if train:
            check_finite_loss(self, terms, batch, batch_idx)
        # sync_dist: means over every process's images. Under DDP every process logs every step (the
        # reduction is a collective all must join); a batch with nothing to score weighs 0 in the epoch.
        if n or self.trainer.world_size > 1:
            self.log_dict(
                {f"{split}/{k}": v.detach() for k, v in terms.items()},
                on_step=train, on_epoch=True, batch_size=n, sync_dist=True,
            )
        metrics: nn.ModuleDict = getattr(self, f"{split}_metrics")
        for name, (preds, target) in self.metric_inputs(outputs.detach(), batch).items():
            metric = metrics[name]
            metric(preds, target)  # updates the epoch's state and computes this batch's value
            self.log(f"{split}/{name}", metric, on_step=train, on_epoch=True, batch_size=len(target))
        return terms["loss"]

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor | None:
        return self._step(batch, batch_idx, "train")

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self._step(batch, batch_idx, "val")

    def test_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self._step(batch, batch_idx, "test")

    def predict_step(self, batch: dict[str, Tensor], batch_idx: int) -> list[dict[str, Any]]:
        """Per image: :meth:`detect`'s prediction with boxes in original-image pixels, and ``image_id``."""
        preds = self.detect(batch["images"])
        for pred, (h, w), image_id in zip(preds, batch["sizes"].tolist(), batch["image_ids"]):
            if "boxes" in pred:
                pred["boxes"] = pred["boxes"] * pred["boxes"].new_tensor([w, h, w, h])  # (N, 4) pixels
            pred["image_id"] = image_id
        return preds


def zero_loss(outputs: Tensor) -> Tensor:
    """A zero loss still attached to the graph (``outputs`` any shape), for a batch with nothing to
    learn from: backward runs and every parameter gets a zero gradient instead of none."""
    return outputs.sum() * 0.0


def class_predictions(probs: Tensor, keep: Tensor) -> list[dict[str, Tensor]]:
    """``probs (B, C)``, ``keep (B, C)`` bool -> per image ``labels (N,)`` and ``scores (N,)``,
    highest probability first."""
    out = []
    for p, k in zip(probs, keep):
        labels = k.nonzero().flatten()  # (N,)
        scores = p[labels]  # (N,)
        order = scores.argsort(descending=True)
        out.append({"labels": labels[order], "scores": scores[order]})
    return out
