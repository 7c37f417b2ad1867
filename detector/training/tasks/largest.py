"""Lesson 8's single-object stepping stones: the class of each image's largest object, its box, then both.

* :class:`LargestObjectClassifier` (``pascal.ipynb``, the largest-item classifier): softmax
  cross-entropy over the C classes; accuracy. The lesson: about 79-83 % on VOC 2007 val with
  ResNet-34 at 224 px, a ceiling set by the many VOC images holding several objects.
* :class:`LargestBoxRegressor` (``head_reg4``): ``Flatten -> Linear(512*7*7, 4)``, L1 loss in pixels
  of the ``S x S`` network input; the lesson reached about 20-21 px on VOC 2007 val (loss = metric).
* :class:`SingleObjectDetector`: one head with ``4 + C`` outputs, ``sigmoid * S`` for the box,
  ``detn_loss = L1 + 20 * cross-entropy`` (the lesson printed both terms and chose 20 to bring them
  to about the same size), metrics ``detn_acc`` and ``detn_l1``. The lesson: about 82 % accuracy
  and 18.5 px L1 after its three stages.

Every box here is xyxy (the lesson's rows were top, left, bottom, right; same information) in
pixels of the squashed ``S x S`` input, where the augmented boxes of the batch already are (the
lesson's ``tfm_y``): batch boxes in ``[0, 1]`` times ``S``. An image with no usable (non-difficult)
object has no largest object: it is left out of the loss and the metrics by a mask (a batch of only
such images gives a zero loss), and the number of images scored is the batch size logged.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics import MeanAbsoluteError, Metric
from torchmetrics.classification import MulticlassAccuracy

from detector.core.boxes import clip_boxes
from detector.model.backbones import build_backbone
from detector.training.tasks.nets import TaskNet, box_head, pooled_head, single_object_head
from detector.training.tasks.stepping import TaskModule, class_predictions, zero_loss
from detector.training.tasks.targets import LargestObject, largest_object

__all__ = ["LargestBoxRegressor", "LargestObjectClassifier", "SingleObjectDetector", "DETN_CE_WEIGHT"]

DETN_CE_WEIGHT = 20.0  # the lesson's detn_loss weighs the cross-entropy 20 times (Lesson 8, 224 px)


def _accuracy(num_classes: int) -> MulticlassAccuracy:
    # micro: the fraction of images whose class is right (fastai's `accuracy`); torchmetrics defaults to macro.
    return MulticlassAccuracy(num_classes, average="micro")


def _largest(batch: dict[str, Tensor]) -> LargestObject:
    return largest_object(batch["boxes"], batch["labels"], batch.get("difficult"))


def _keep_best(probs: Tensor, score_threshold: float | None) -> list[dict[str, Tensor]]:
    """``probs (B, C)`` -> per image the most probable class (``labels (1,)``, ``scores (1,)``), or
    nothing when its probability is not above ``score_threshold``."""
    best = probs.argmax(dim=1, keepdim=True)  # (B, 1)
    keep = torch.zeros_like(probs, dtype=torch.bool).scatter_(1, best, True)  # (B, C)
    if score_threshold is not None:
        keep &= probs > score_threshold
    return class_predictions(probs, keep)


class LargestObjectClassifier(TaskModule):
    """The class of each image's largest object (by box area).

    ``forward``: ``(B, 3, S, S) -> (B, C)`` logits, from fastai's default pooled head
    (:func:`detector.training.tasks.nets.pooled_head`). Logs ``train/loss``, ``train/acc``, ``val/loss``, ``val/acc``.

    Args (beyond :class:`detector.training.tasks.staged.StagedModule`'s):
        hidden: the head's hidden width (fastai: 512).
        dropout: the head's two dropout probabilities (fastai: 0.25, 0.5).
    """

    def __init__(self, hidden: int = 512, dropout: tuple[float, float] = (0.25, 0.5), **kwargs: Any) -> None:
        super().__init__(**kwargs)
        body = build_backbone(self.backbone_name, self.weights)
        self.model = TaskNet(body, pooled_head(body.out_channels[-1], self.num_classes, hidden, dropout))
        self.model_ready(hidden=hidden, dropout=list(dropout))
        self._metrics_ready()

    def make_metrics(self) -> dict[str, Metric]:
        return {"acc": _accuracy(self.num_classes)}

    def loss_terms(self, outputs: Tensor, batch: dict[str, Tensor]) -> tuple[dict[str, Tensor], int]:
        target = _largest(batch)
        n = int(target.found.sum())
        loss = F.cross_entropy(outputs[target.found], target.labels[target.found]) if n else zero_loss(outputs)
        return {"loss": loss}, n

    def metric_inputs(self, outputs: Tensor, batch: dict[str, Tensor]) -> dict[str, tuple[Tensor, Tensor]]:
        target = _largest(batch)
        if not target.found.any():
            return {}
        return {"acc": (outputs[target.found], target.labels[target.found])}

    def detect(self, images: Tensor, score_threshold: float | None = None) -> list[dict[str, Tensor]]:
        """Per image ``labels (1,)`` and ``scores (1,)``: the most probable class (softmax), unless its
        probability is not above ``score_threshold`` (default: always kept)."""
        return _keep_best(self(images).float().softmax(dim=1), score_threshold)


class LargestBoxRegressor(TaskModule):
    """The box of each image's largest object.

    ``forward``: ``(B, 3, S, S) -> (B, 4)`` xyxy in pixels of the ``S x S`` input, straight from the
    lesson's ``head_reg4`` (no activation: the lesson regressed the pixel values directly).
    Loss and metric: mean L1 in those pixels over the 4 coordinates (``nn.L1Loss``), logged as
    ``train/loss``, ``val/loss`` and ``val/l1`` (the same number, from torchmetrics' mean absolute error).
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        body = build_backbone(self.backbone_name, self.weights)
        self.model = TaskNet(body, box_head(body.out_channels[-1], self.image_size))
        self.model_ready()
        self._metrics_ready()

    def make_metrics(self) -> dict[str, Metric]:
        return {"l1": MeanAbsoluteError()}

    def _target_pixels(self, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        """``(boxes (B, 4)`` in input pixels, ``found (B,))``."""
        target = _largest(batch)
        return target.boxes * self.image_size, target.found

    def loss_terms(self, outputs: Tensor, batch: dict[str, Tensor]) -> tuple[dict[str, Tensor], int]:
        boxes, found = self._target_pixels(batch)
        n = int(found.sum())
        loss = F.l1_loss(outputs[found], boxes[found]) if n else zero_loss(outputs)
        return {"loss": loss}, n

    def metric_inputs(self, outputs: Tensor, batch: dict[str, Tensor]) -> dict[str, tuple[Tensor, Tensor]]:
        boxes, found = self._target_pixels(batch)
        return {"l1": (outputs[found], boxes[found])} if found.any() else {}

    def detect(self, images: Tensor, score_threshold: float | None = None) -> list[dict[str, Tensor]]:
        """Per image ``boxes (1, 4)``: the predicted box in ``[0, 1]``, clipped to the image
        (``score_threshold`` is ignored: the regressor has no scores)."""
        boxes = clip_boxes(self(images).float() / self.image_size)  # (B, 4)
        return [{"boxes": box[None]} for box in boxes]


class SingleObjectDetector(TaskModule):
    """The class and box of each image's largest object, from one head of ``4 + C`` outputs.

    ``forward``: ``(B, 3, S, S) -> (B, 4 + C)``: box activations, then class logits. The box is
    ``sigmoid(activations) * S`` pixels (the lesson: sigmoid times 224), so it starts inside the image.
    Loss terms: ``l1`` (pixels), ``ce`` and ``loss = l1 + ce_weight * ce``. Metrics: ``detn_acc``
    (accuracy of the class) and ``detn_l1`` (mean L1 of the box in input pixels, whether or not the
    class is right, as the lesson's ``detn_l1``).

    Args (beyond :class:`detector.training.tasks.staged.StagedModule`'s):
        hidden: the head's hidden width (the lesson: 256).
        dropout: both dropouts of the head (the lesson: 0.5).
        ce_weight: the cross-entropy's weight; the lesson's 20 made the two terms about equal at
            224 px (L1 in pixels grows with ``S``: scale it with ``S / 224`` to keep the balance).
    """

    def __init__(self, hidden: int = 256, dropout: float = 0.5, ce_weight: float = DETN_CE_WEIGHT, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        body = build_backbone(self.backbone_name, self.weights)
        head = single_object_head(body.out_channels[-1], self.image_size, self.num_classes, hidden, dropout)
        self.model = TaskNet(body, head)
        self.ce_weight = ce_weight
        self.model_ready(hidden=hidden, dropout=dropout, ce_weight=ce_weight)
        self._metrics_ready()

    def make_metrics(self) -> dict[str, Metric]:
        return {"detn_acc": _accuracy(self.num_classes), "detn_l1": MeanAbsoluteError()}

    def split_outputs(self, outputs: Tensor) -> tuple[Tensor, Tensor]:
        """``(B, 4 + C)`` -> ``(boxes (B, 4)`` xyxy in input pixels, ``logits (B, C))``."""
        return outputs[:, :4].sigmoid() * self.image_size, outputs[:, 4:]

    def loss_terms(self, outputs: Tensor, batch: dict[str, Tensor]) -> tuple[dict[str, Tensor], int]:
        target = _largest(batch)
        found = target.found
        n = int(found.sum())
        if not n:
            zero = zero_loss(outputs)
            return {"l1": zero, "ce": zero, "loss": zero}, 0
        boxes, logits = self.split_outputs(outputs[found])
        l1 = F.l1_loss(boxes, target.boxes[found] * self.image_size)
        ce = F.cross_entropy(logits, target.labels[found])
        return {"l1": l1, "ce": ce, "loss": l1 + self.ce_weight * ce}, n

    def metric_inputs(self, outputs: Tensor, batch: dict[str, Tensor]) -> dict[str, tuple[Tensor, Tensor]]:
        target = _largest(batch)
        found = target.found
        if not found.any():
            return {}
        boxes, logits = self.split_outputs(outputs[found])
        return {
            "detn_acc": (logits, target.labels[found]),
            "detn_l1": (boxes, target.boxes[found] * self.image_size),
        }

    def detect(self, images: Tensor, score_threshold: float | None = None) -> list[dict[str, Tensor]]:
        """Per image ``boxes (1, 4)`` in ``[0, 1]``, ``labels (1,)`` and ``scores (1,)`` (the softmax
        probability of the class), or nothing when that probability is not above ``score_threshold``
        (default: always kept)."""
        outputs = self(images).float()
        boxes = outputs[:, :4].sigmoid()  # (B, 4) in [0, 1]
        preds = _keep_best(outputs[:, 4:].softmax(dim=1), score_threshold)
        for box, pred in zip(boxes, preds):
            pred["boxes"] = box[None].expand(len(pred["labels"]), 4)  # (N, 4), N = 0 or 1
        return preds
