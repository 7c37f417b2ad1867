"""Lesson 9's multi-label classifier: every class present in the image (``pascal-multi.ipynb``).

The target is the set of classes of the image's objects, each class once however many objects
share it (the lesson's ``set(...)``); the loss is binary cross-entropy per class (fastai picks it
for multi-label data); the accuracy thresholds each sigmoid at 0.4 (where the lesson's pictures cut)
and counts the (image, class) decisions that are right, as fastai's thresholded accuracy does: that
is torchmetrics' micro multi-label accuracy.
The lesson: about 97.5 % on VOC 2007 val (ResNet-34, 224 px). With 20 classes and only one or two
present in a typical VOC image, a model that says "nothing" already scores above 90 % (on shapes,
about 3 of 7 classes are present: 55 %), so the mean F1 over the classes is logged too (macro
average: every class counts the same).
"""

from __future__ import annotations

from typing import Any

import torch.nn.functional as F
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.classification import MultilabelAccuracy, MultilabelF1Score

from detector.errors import ConfigError
from detector.model.backbones import build_backbone
from detector.training.tasks.nets import TaskNet, pooled_head
from detector.training.tasks.stepping import TaskModule, class_predictions
from detector.training.tasks.targets import present_classes

__all__ = ["MULTILABEL_THRESHOLD", "MultiLabelClassifier"]

MULTILABEL_THRESHOLD = 0.4  # the lesson's pictures name the classes whose sigmoid is above 0.4


class MultiLabelClassifier(TaskModule):
    """Which classes appear in each image.

    ``forward``: ``(B, 3, S, S) -> (B, C)`` logits, one per class, from fastai's default pooled head
    (:func:`detector.training.tasks.nets.pooled_head`). Logs ``loss`` (BCE), ``acc`` (micro accuracy at
    ``threshold``) and ``f1`` (F1 at ``threshold``, averaged over the classes).
    Every image is scored, one with no object too (its target is all zeros).

    Args (beyond :class:`detector.training.tasks.staged.StagedModule`'s):
        hidden, dropout: the head's hidden width and two dropouts (fastai: 512, (0.25, 0.5)).
        threshold: a class is predicted present when its sigmoid is above this (the lesson: 0.4).
    """

    def __init__(
        self,
        hidden: int = 512,
        dropout: tuple[float, float] = (0.25, 0.5),
        threshold: float = MULTILABEL_THRESHOLD,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if not 0.0 < threshold < 1.0:
            raise ConfigError(f"model.init_args.threshold must be a probability in (0, 1); got {threshold}")
        body = build_backbone(self.backbone_name, self.weights)
        self.model = TaskNet(body, pooled_head(body.out_channels[-1], self.num_classes, hidden, dropout))
        self.threshold = threshold
        self.model_ready(hidden=hidden, dropout=list(dropout), threshold=threshold)
        self._metrics_ready()

    def make_metrics(self) -> dict[str, Metric]:
        C, t = self.num_classes, self.threshold
        return {
            "acc": MultilabelAccuracy(C, threshold=t, average="micro"),
            "f1": MultilabelF1Score(C, threshold=t, average="macro"),
        }

    def _targets(self, batch: dict[str, Tensor]) -> Tensor:
        return present_classes(batch["labels"], self.num_classes, batch.get("difficult"))  # (B, C)

    def loss_terms(self, outputs: Tensor, batch: dict[str, Tensor]) -> tuple[dict[str, Tensor], int]:
        return {"loss": F.binary_cross_entropy_with_logits(outputs, self._targets(batch))}, len(outputs)

    def metric_inputs(self, outputs: Tensor, batch: dict[str, Tensor]) -> dict[str, tuple[Tensor, Tensor]]:
        probs, targets = outputs.sigmoid(), self._targets(batch).long()
        return {"acc": (probs, targets), "f1": (probs, targets)}

    def detect(self, images: Tensor, score_threshold: float | None = None) -> list[dict[str, Tensor]]:
        """Per image ``labels (N,)`` and ``scores (N,)``: every class whose sigmoid is above
        ``score_threshold`` (default: the model's ``threshold``, the lesson's 0.4), most probable first."""
        probs = self(images).float().sigmoid()  # (B, C)
        return class_predictions(probs, probs > (self.threshold if score_threshold is None else score_threshold))
