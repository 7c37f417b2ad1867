"""The lesson's SSD head (``SSD_Head`` / ``SSD_MultiHead``, fast.ai 2018 Part 2, Lessons 8-9), by config.

From the backbone's stride-32 map (7 x 7 at 224 px): ReLU -> dropout -> ``sconv0`` (stride 1, same
size) -> ``sconv1`` (stride 2) -> ``sconv2`` -> ... ; a 3x3 / stride 2 / padding 1 conv maps a side
``s`` to ``ceil(s / 2)``, so at 224 px the chain gives 7, 4, 2, 1. ``out{i}`` is an :class:`OutConv`
reading ``sconv{i}``'s output; only the convs needed by the requested grids are built, so grids
``[4, 2, 1]`` give exactly the lesson's ``drop, sconv0..sconv3, out1..out3`` and grids ``[4]`` the
single-grid ``SSD_Head`` (whose 4x4 conv the lesson happened to call ``sconv2``; here ``sconv1``).

Beyond the lesson: grids finer than ``S/32`` come from the backbone's stride-16 (``S/16``) and
stride-8 (``S/8``) maps, each through the same ReLU -> dropout, its own stride-1 ``StdConv``
(``sconv_s16`` / ``sconv_s8``) and its own ``OutConv`` (``out_s16`` / ``out_s8``), for small objects.
With ``top_down`` those finer maps first get the coarser map's context added, the top-down pathway
of a feature pyramid (Lin et al. 2017, "Feature Pyramid Networks for Object Detection"): the coarser
map through a 1x1 conv (``lateral_s16``: stride 32 -> the stride-16 map's channels; ``lateral_s8``:
the merged stride-16 map -> stride 8's), nearest-neighbour upsampled x2 and summed in. The 1x1 convs
start at zero, so a pretrained body's maps are what the head first sees, as without ``top_down``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["HeadConfig", "OutConv", "SSDHead", "StdConv", "flatten_conv", "grid_problem", "head_grid_sizes"]


@dataclass
class HeadConfig:
    """The SSD head's settings: ``dropout`` in each StdConv and ``head_dropout`` at its input (the
    lesson's ``SSD_MultiHead``: ``drop = 0.4`` for both), the class-logit ``bias`` at init (-4 in that
    run, for k = 9; its single-grid ``SSD_Head`` used -3), the width ``channels`` (256), and
    ``top_down``: FPN's top-down pathway into the grids finer than stride 32 (beyond the lesson)."""

    dropout: float = 0.4
    head_dropout: float = 0.4
    bias: float = -4.0
    channels: int = 256
    top_down: bool = False


class StdConv(nn.Module):
    """The lesson's ``StdConv``: conv 3x3 (padding 1) -> ReLU -> BatchNorm -> dropout.

    ``(B, nin, s, s) -> (B, nout, ceil(s / stride), ceil(s / stride))``.
    """

    def __init__(self, nin: int, nout: int, stride: int = 2, drop: float = 0.1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(nin, nout, 3, stride=stride, padding=1)
        self.bn = nn.BatchNorm2d(nout)
        self.drop = nn.Dropout(drop)

    def forward(self, x: Tensor) -> Tensor:
        return self.drop(self.bn(F.relu(self.conv(x))))


def flatten_conv(x: Tensor, k: int) -> Tensor:
    """``(B, k*X, H, W) -> (B, H*W*k, X)``: row ``(h*W + w)*k + a`` holds channels ``a*X .. a*X+X-1``
    of cell ``(h, w)``, which is anchor ``a`` of that cell in :func:`detector.core.anchors.make_anchors`."""
    B, channels, H, W = x.shape
    if channels % k:
        raise ValueError(f"{channels} channels cannot be split among k = {k} anchors per cell")
    return x.permute(0, 2, 3, 1).reshape(B, H * W * k, channels // k)


class OutConv(nn.Module):
    """The lesson's ``OutConv``: separate 3x3 convs for class logits (``oconv1``) and box activations
    (``oconv2``) on one grid.

    ``(B, nin, g, g) -> (cls_logits (B, g*g*k, num_classes), box_deltas (B, g*g*k, 4))``.
    The lesson's class conv had ``C + 1`` outputs per anchor and its BCE loss ignored the background
    column; this one has exactly ``C`` (background = all classes off). The class bias starts at
    ``bias`` (the lesson: -3 or -4; sigmoid(-3) ~ 0.047, so the untrained head predicts "nothing").
    """

    def __init__(self, nin: int, k: int, num_classes: int, bias: float) -> None:
        super().__init__()
        self.k = k
        self.oconv1 = nn.Conv2d(nin, k * num_classes, 3, padding=1)
        self.oconv2 = nn.Conv2d(nin, k * 4, 3, padding=1)
        nn.init.constant_(self.oconv1.bias, bias)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return flatten_conv(self.oconv1(x), self.k), flatten_conv(self.oconv2(x), self.k)


def grid_problem(grids: Sequence[int], image_size: int) -> str | None:
    """What is wrong with anchor ``grids`` for ``image_size`` px images (None: nothing): a grid the
    head cannot produce, or grids not listed once each, finest first."""
    try:
        sizes = head_grid_sizes(image_size)
    except ValueError as e:
        return str(e)
    grids = [int(g) for g in grids]
    wrong = [g for g in grids if g not in sizes]
    if not grids or wrong:
        what = f"a {wrong[0]}x{wrong[0]} grid" if wrong else "no grid"
        return (
            f"grids {grids}: the SSD head cannot make {what} from {image_size} px images (its grids are "
            f"ceil(S / 8), then halved down to 1: {list(sizes)}); choose the grids among those, finest first, "
            "or change image_size"
        )
    if any(a <= b for a, b in zip(grids, grids[1:])):
        return (
            f"grids {grids}: list each grid once, finest first (e.g. {sorted(set(grids), reverse=True)}): "
            "the anchors and the head's outputs are concatenated in that order"
        )
    return None


def head_grid_sizes(image_size: int) -> tuple[int, ...]:
    """Grid sides the head can produce for ``image_size`` px images, finest first.

    Entry ``p`` is ``ceil(S / 2**(p + 3))``: the backbone's stride-8 and stride-16 maps, its
    stride-32 map (``sconv0``), then each stride-2 ``StdConv`` down to 1 (224 -> 28, 14, 7, 4, 2, 1).
    """
    if image_size < 32:
        raise ValueError(f"image_size must be at least 32 px (the backbone's stride); got {image_size}")
    sizes = [math.ceil(image_size / 8)]
    while sizes[-1] > 1:
        sizes.append(math.ceil(sizes[-1] / 2))
    return tuple(sizes)


class SSDHead(nn.Module):
    """The lesson's ``SSD_MultiHead`` generalised to any producible ``grids``.

    Args:
        in_channels: the backbone's channels at strides 8, 16, 32.
        image_size: S, the side of the square input images.
        grids: grid sides in strictly decreasing order, each in :func:`head_grid_sizes`; the outputs
            are concatenated in this order (the order of :func:`detector.core.anchors.make_anchors`).
        k: anchors per cell.
        num_classes: C, real classes only.
        dropout, head_dropout, bias, channels, top_down: see :class:`HeadConfig` (the lesson's
            ``SSD_Head`` had dropout 0.1, head_dropout 0.25 and bias -3).

    Forward: ``[(B, c8, S/8, S/8), (B, c16, S/16, S/16), (B, c32, S/32, S/32)]`` (sides rounded up)
    -> ``(cls_logits (B, A, C), box_deltas (B, A, 4))`` raw activations, ``A = k * sum(g*g)``.
    """

    def __init__(
        self,
        in_channels: Sequence[int],
        image_size: int,
        grids: Sequence[int],
        k: int,
        num_classes: int,
        dropout: float = HeadConfig.dropout,
        head_dropout: float = HeadConfig.head_dropout,
        bias: float = HeadConfig.bias,
        channels: int = HeadConfig.channels,
        top_down: bool = HeadConfig.top_down,
    ) -> None:
        super().__init__()
        if len(in_channels) != 3:
            raise ValueError(f"in_channels must list the channels at strides 8, 16, 32; got {in_channels}")
        if k < 1 or num_classes < 1:
            raise ValueError(f"k and num_classes must be >= 1; got {k=}, {num_classes=}")
        problem = grid_problem(grids, image_size)
        if problem:
            raise ValueError(problem)
        sizes = head_grid_sizes(image_size)
        grids = tuple(int(g) for g in grids)
        self.in_channels = tuple(in_channels)
        self.image_size, self.grids, self.k, self.num_classes = image_size, grids, k, num_classes
        self.feature_sizes = sizes[:3]  # expected sides of the backbone maps at strides 8, 16, 32
        levels = [sizes.index(g) for g in grids]  # 0: stride 8, 1: stride 16, 2 + i: sconv{i}
        c8, c16, c32 = in_channels

        self.drop = nn.Dropout(head_dropout)
        if top_down and min(levels) > 1:
            raise ValueError(
                f"top_down adds context to the grids read from the stride-16 and stride-8 maps "
                f"({sizes[1]} and {sizes[0]} at {image_size} px); grids {list(grids)} have neither"
            )
        self.top_down = top_down
        if top_down:
            self.lateral_s16 = nn.Conv2d(c32, c16, 1)
            if 0 in levels:
                self.lateral_s8 = nn.Conv2d(c16, c8, 1)
            for conv in (getattr(self, name) for name in ("lateral_s16", "lateral_s8") if hasattr(self, name)):
                nn.init.zeros_(conv.weight)
                nn.init.zeros_(conv.bias)
        if 0 in levels:
            self.sconv_s8 = StdConv(c8, channels, stride=1, drop=dropout)
        if 1 in levels:
            self.sconv_s16 = StdConv(c16, channels, stride=1, drop=dropout)
        self.chain_length = max(max(levels) - 1, 0)  # number of sconv{i} built
        for i in range(self.chain_length):
            nin, stride = (c32, 1) if i == 0 else (channels, 2)
            self.add_module(f"sconv{i}", StdConv(nin, channels, stride=stride, drop=dropout))
        self.out_names = tuple({0: "out_s8", 1: "out_s16"}.get(level, f"out{level - 2}") for level in levels)
        for name in self.out_names:
            self.add_module(name, OutConv(channels, k, num_classes, bias))

    @property
    def num_anchors(self) -> int:
        """A = k * sum(g * g for g in grids)."""
        return self.k * sum(g * g for g in self.grids)

    def forward(self, features: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
        """Backbone maps at strides 8, 16, 32 -> ``(cls_logits (B, A, C), box_deltas (B, A, 4))``."""
        sides = tuple(tuple(f.shape[-2:]) for f in features)
        if sides != tuple((s, s) for s in self.feature_sizes):
            raise ValueError(
                f"head built for {self.image_size} px images expects maps of sides {self.feature_sizes} at strides "
                f"8, 16, 32; got {sides}: resize the images or build the model with their image_size"
            )
        f8, f16, f32 = features
        if self.top_down:  # FPN's top-down pathway: (B, c32, s32, s32) -> (B, c16, s16, s16) -> (B, c8, s8, s8)
            f16 = f16 + F.interpolate(self.lateral_s16(f32), size=f16.shape[-2:], mode="nearest")
            if "out_s8" in self.out_names:
                f8 = f8 + F.interpolate(self.lateral_s8(f16), size=f8.shape[-2:], mode="nearest")
        maps: dict[str, Tensor] = {}  # OutConv name -> the map it reads
        if "out_s8" in self.out_names:
            maps["out_s8"] = self.sconv_s8(self.drop(F.relu(f8)))
        if "out_s16" in self.out_names:
            maps["out_s16"] = self.sconv_s16(self.drop(F.relu(f16)))
        if self.chain_length:
            x = self.drop(F.relu(f32))
            for i in range(self.chain_length):
                x = self.get_submodule(f"sconv{i}")(x)
                maps[f"out{i}"] = x
        cls_logits, box_deltas = zip(*(self.get_submodule(name)(maps[name]) for name in self.out_names))
        return torch.cat(cls_logits, dim=1), torch.cat(box_deltas, dim=1)  # (B, A, C), (B, A, 4)
