"""The stepping stones' networks: the backbone's stride-32 map and a small head, in the SSD's layer groups.

Lesson 8 puts every one of these heads on ResNet-34's conv body (224 px -> 512 x 7 x 7):

* the classifiers (largest object, Lesson 8; multi-label, Lesson 9) use what
  ``ConvLearner.pretrained`` adds by default, fastai 0.7's ``ConvnetBuilder`` head:
  concat pooling (max and average) -> BatchNorm1d -> dropout 0.25 -> Linear(2c, 512) -> ReLU ->
  BatchNorm1d -> dropout 0.5 -> Linear(512, outputs) (:func:`pooled_head`);
* the largest-box regressor uses ``head_reg4 = Flatten -> Linear(512*7*7, 4)`` (:func:`box_head`),
  no pooling, so the linear layer sees where each activation came from;
* the single-object detector uses Flatten -> ReLU -> dropout 0.5 -> Linear(25088, 256) -> ReLU ->
  BatchNorm1d -> dropout 0.5 -> Linear(256, 4 + C) (:func:`single_object_head`).

``25088 = 512 * 7 * 7`` generalises to ``c32 * ceil(S/32)**2`` for any backbone and image size
(:func:`feature_side`): 320 * 6 * 6 = 11520 for EfficientNet-Lite0 at 192 px.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from detector.model.ssd import BodyAndHead

__all__ = ["ConcatPool", "TaskNet", "box_head", "feature_side", "pooled_head", "single_object_head"]


def feature_side(image_size: int) -> int:
    """Side of the backbone's stride-32 map for ``S x S`` inputs: ``ceil(S / 32)`` (7 at 224 px)."""
    if image_size < 32:
        raise ValueError(f"image_size must be at least 32 px (the backbone's stride); got {image_size}")
    return math.ceil(image_size / 32)


class ConcatPool(nn.Module):
    """fastai's ``AdaptiveConcatPool2d``: ``(B, c, h, w) -> (B, 2c)``, max pooling then average pooling."""

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([x.amax(dim=(2, 3)), x.mean(dim=(2, 3))], dim=1)


def pooled_head(in_channels: int, outputs: int, hidden: int = 512, dropout: Sequence[float] = (0.25, 0.5)) -> nn.Sequential:
    """fastai 0.7's default classifier head: ``(B, c, h, w) -> (B, outputs)`` logits.

    ConcatPool -> BatchNorm1d(2c) -> Dropout(dropout[0]) -> Linear(2c, hidden) -> ReLU ->
    BatchNorm1d(hidden) -> Dropout(dropout[1]) -> Linear(hidden, outputs).
    """
    p0, p1 = dropout
    return nn.Sequential(
        ConcatPool(),
        nn.BatchNorm1d(2 * in_channels),
        nn.Dropout(p0),
        nn.Linear(2 * in_channels, hidden),
        nn.ReLU(),
        nn.BatchNorm1d(hidden),
        nn.Dropout(p1),
        nn.Linear(hidden, outputs),
    )


def box_head(in_channels: int, image_size: int) -> nn.Sequential:
    """The lesson's ``head_reg4``: ``(B, c, s, s) -> (B, 4)``, Flatten -> Linear(c * s * s, 4),
    with ``s = ceil(S / 32)``."""
    s = feature_side(image_size)
    return nn.Sequential(nn.Flatten(), nn.Linear(in_channels * s * s, 4))


def single_object_head(
    in_channels: int, image_size: int, num_classes: int, hidden: int = 256, dropout: float = 0.5
) -> nn.Sequential:
    """The lesson's single-object head: ``(B, c, s, s) -> (B, 4 + C)``; columns 0-3 are the box
    activations, 4.. the class logits.

    Flatten -> ReLU -> Dropout -> Linear(c * s * s, hidden) -> ReLU -> BatchNorm1d(hidden) ->
    Dropout -> Linear(hidden, 4 + C), ``s = ceil(S / 32)`` (the lesson: 25088 -> 256 -> 4 + 20).
    """
    s = feature_side(image_size)
    return nn.Sequential(
        nn.Flatten(),
        nn.ReLU(),
        nn.Dropout(dropout),
        nn.Linear(in_channels * s * s, hidden),
        nn.ReLU(),
        nn.BatchNorm1d(hidden),
        nn.Dropout(dropout),
        nn.Linear(hidden, 4 + num_classes),
    )


class TaskNet(BodyAndHead):
    """``backbone`` + ``head`` reading its stride-32 map; the SSD's three layer groups.

    ``forward(images (B, 3, S, S))``, normalised with ``backbone.mean`` / ``backbone.std`` -> the
    head's raw output ``(B, outputs)``.
    """

    def forward(self, images: Tensor) -> Tensor:
        """``(B, 3, S, S) -> (B, outputs)``."""
        return self.head(self.backbone(images)[-1])  # the stride-32 map, (B, c32, ceil(S/32), ceil(S/32))
