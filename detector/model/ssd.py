"""The single-shot detector network: a backbone body and the lesson's SSD head, raw tensors out.

Matching, loss and decoding live outside the network (:mod:`detector.core.matching`, :mod:`detector.core.loss`,
:mod:`detector.core.postprocess`); the LightningModule wires them together.
"""

from __future__ import annotations

from torch import Tensor, nn

from detector.core.anchors import AnchorConfig, anchors_per_cell
from detector.defaults import IMAGE_SIZE
from detector.model.backbones import Backbone, build_backbone
from detector.model.head import HeadConfig, SSDHead

__all__ = ["SSD", "BodyAndHead", "build_ssd"]


class BodyAndHead(nn.Module):
    """A backbone body and a head, split into fastai's three layer groups; the SSD and the
    stepping-stone networks of :mod:`detector.training.tasks` share this."""

    def __init__(self, backbone: Backbone, head: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head

    @property
    def layer_groups(self) -> list[nn.Module]:
        """fastai's three groups for freezing and learning rates: ``[body group 0, body group 1, head]``
        (:data:`detector.training.recipe.FREEZE` names which are frozen)."""
        return [*self.backbone.layer_groups, self.head]

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
    image_size: int = IMAGE_SIZE,
    anchors: AnchorConfig | None = None,
    head: HeadConfig | None = None,
) -> SSD:
    """The SSD for ``num_classes`` real classes; the defaults are the lesson's multi-grid model.

    Defaults: ResNet-34 at 224 px, :class:`~detector.core.anchors.AnchorConfig`'s grids 4x4/2x2/1x1 with
    k = 9 anchors per cell (189 anchors), and :class:`~detector.model.head.HeadConfig`'s
    ``SSD_MultiHead`` (``drop=0.4`` for both dropouts, Lesson 9). The lesson's single-grid
    ``SSD_Head`` is ``AnchorConfig([4], [1.0], [(1.0, 1.0)])`` with ``HeadConfig(dropout=0.1,
    head_dropout=0.25, bias=-3)``. ``weights`` as in :func:`detector.model.backbones.build_backbone`.
    """
    anchors, head = anchors or AnchorConfig(), head or HeadConfig()
    body = build_backbone(backbone, weights)
    k = anchors_per_cell(anchors.zooms, anchors.ratios)
    ssd_head = SSDHead(
        body.out_channels, image_size, anchors.grids, k, num_classes,
        head.dropout, head.head_dropout, head.bias, head.channels, head.top_down,
    )
    num_anchors = len(anchors.make())
    if num_anchors != ssd_head.num_anchors:
        raise ValueError(f"{anchors} gives {num_anchors} anchors, the head {ssd_head.num_anchors} outputs")
    return SSD(body, ssd_head)
