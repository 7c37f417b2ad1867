"""The single-shot detector network: a backbone body and the lesson's SSD head, raw tensors out.

Matching, loss and decoding live outside the network (:mod:`detector.matching`, :mod:`detector.loss`,
:mod:`detector.postprocess`); the LightningModule wires them together.
"""

from __future__ import annotations

from typing import Sequence

from torch import Tensor, nn

from detector.anchors import anchors_per_cell, make_anchors
from detector.model.backbones import Backbone, build_backbone
from detector.model.head import SSDHead

__all__ = ["SSD", "BodyAndHead", "build_ssd"]


class BodyAndHead(nn.Module):
    """A backbone body and a head, split into fastai's three layer groups; the SSD and the
    stepping-stone networks of :mod:`detector.tasks` share this."""

    def __init__(self, backbone: Backbone, head: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head

    @property
    def layer_groups(self) -> list[nn.Module]:
        """fastai's three groups for freezing: ``[body group 0, body group 1, head]``."""
        return [*self.backbone.layer_groups, self.head]

    @property
    def freeze_parts(self) -> list[nn.Module]:
        """What freezing addresses: ``[body stage 0, 1, 2 (strides 8, 16, 32), head]``, finer than
        the layer groups (group 1 is stages 1 and 2), so that a stage can freeze the stride-16 stage
        alone (:data:`detector.schedule.FREEZE`)."""
        return [*self.backbone.body, self.head]

    def param_groups(self) -> list[list[nn.Parameter]]:
        """Parameters of :attr:`layer_groups`, in the same order (the lesson's lrs ``[lr/100, lr/10, lr]``)."""
        return [list(group.parameters()) for group in self.layer_groups]


class SSD(BodyAndHead):
    """``backbone`` + ``head``.

    ``forward(images (B, 3, S, S))`` with images normalised by ``backbone.mean`` / ``backbone.std``
    -> ``(cls_logits (B, A, C), box_deltas (B, A, 4))`` raw activations, row ``a`` belonging to
    anchor ``a`` of ``make_anchors(head.grids, zooms, ratios)``.
    """

    def __init__(self, backbone: Backbone, head: SSDHead) -> None:
        if tuple(backbone.out_channels) != head.in_channels:
            raise ValueError(
                f"head expects channels {head.in_channels} at strides 8, 16, 32; backbone gives {backbone.out_channels}"
            )
        super().__init__(backbone, head)

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """``(B, 3, S, S)`` -> ``(cls_logits (B, A, C), box_deltas (B, A, 4))``."""
        return self.head(self.backbone(images))


def build_ssd(
    num_classes: int,
    backbone: str = "resnet34",
    weights: str = "imagenet",
    image_size: int = 224,
    grids: Sequence[int] = (4, 2, 1),
    zooms: Sequence[float] = (0.75, 1.0, 1.3),
    ratios: Sequence[Sequence[float]] = ((1.0, 1.0), (1.0, 0.5), (0.5, 1.0)),
    dropout: float = 0.4,
    head_dropout: float = 0.4,
    bias: float = -3.0,
    channels: int = 256,
    top_down: bool = False,
) -> SSD:
    """The SSD for ``num_classes`` real classes; the defaults are the lesson's multi-grid model.

    Defaults: ResNet-34 at 224 px, grids 4x4/2x2/1x1 with k = 9 anchors per cell (189 anchors), and
    ``SSD_MultiHead``'s ``drop=0.4`` for both dropouts (Lesson 9). The lesson's single-grid
    ``SSD_Head`` is ``grids=(4,), zooms=(1.0,), ratios=((1.0, 1.0),), dropout=0.1, head_dropout=0.25``.
    ``weights`` as in :func:`detector.model.backbones.build_backbone`.
    """
    body = build_backbone(backbone, weights)
    k = anchors_per_cell(zooms, ratios)
    head = SSDHead(body.out_channels, image_size, grids, k, num_classes, dropout, head_dropout, bias, channels, top_down)
    num_anchors = len(make_anchors(grids, zooms, ratios))
    if num_anchors != head.num_anchors:
        raise ValueError(
            f"make_anchors({grids}, {zooms}, {ratios}) gives {num_anchors} anchors, the head {head.num_anchors} outputs"
        )
    return SSD(body, head)
