"""BatchNorm folded into the convolutions of a frozen body stage, to make training steps cheaper.

A stage of the body that trains nothing (no parameter requires grad) and whose BatchNorm layers are
in eval mode (``train_bn: false`` or ``norm_eval: true``) computes a fixed function: each BatchNorm
after a conv is an affine map per channel, ``(x - mean) / sqrt(var + eps) * gamma + beta``, which can
be folded into that conv's weights and bias (``torch.nn.utils.fusion.fuse_conv_bn_weights``). The
folded copy skips one pass over every activation map per BatchNorm; for the shapes config's frozen
stride-8 stage of EfficientNet-Lite0 that is 107 -> 65 ms of forward per batch of 16 at 192 px on a
2-core CPU (``bench/frozen_bn.py``). Outputs agree to float32 rounding (~1e-6), not bit for bit.

:class:`FoldedStages` keeps one folded copy per stage, outside the module tree (so ``state_dict``,
``.to()`` and the optimiser never see it), and rebuilds it whenever any of the stage's parameters,
buffers or train/eval flags differs from the snapshot it was built from (a loaded checkpoint, an
EMA swap, unfreezing). :class:`detector.model.backbones.Backbone` uses it in training mode only:
validation, ``eval.py`` and export run the stage itself, so they agree exactly with one another.

Written by hand because ``torch.fx.experimental.optimization.fuse`` matches only exact
``nn.BatchNorm2d`` modules and traces through timm's ``BatchNormAct2d`` (BatchNorm + activation).
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn
from torch.nn.utils.fusion import fuse_conv_bn_weights

__all__ = ["FoldedStages", "fold_batchnorm", "is_fixed"]

_BATCHNORM = nn.modules.batchnorm._BatchNorm


def is_fixed(stage: nn.Module) -> bool:
    """True when ``stage`` trains nothing and every BatchNorm in it is in eval mode (so has one)."""
    norms = [m for m in stage.modules() if isinstance(m, _BATCHNORM)]
    return bool(norms) and not any(m.training for m in norms) and not any(p.requires_grad for p in stage.parameters())


def _conv_bn_pairs(stage: nn.Module, example: Tensor) -> list[tuple[str, str]]:
    """``(conv name, BatchNorm name)`` for every BatchNorm that reads a conv's output directly, found
    by running ``stage`` (eval mode) once on ``example`` and following the tensors, not the names."""
    names = {m: n for n, m in stage.named_modules()}
    produced: dict[int, tuple[Tensor, str]] = {}  # id(conv output) -> (the tensor, kept alive; conv name)
    pairs: list[tuple[str, str]] = []

    def after_conv(module: nn.Module, args: tuple, out: Tensor) -> None:
        produced[id(out)] = (out, names[module])

    def before_bn(module: nn.Module, args: tuple) -> None:
        hit = produced.get(id(args[0]))
        if hit is not None and hit[0] is args[0]:
            pairs.append((hit[1], names[module]))

    hooks = [m.register_forward_hook(after_conv) for m in stage.modules() if type(m) is nn.Conv2d]
    hooks += [m.register_forward_pre_hook(before_bn) for m in stage.modules() if isinstance(m, nn.BatchNorm2d)]
    try:
        stage(example)
    finally:
        for hook in hooks:
            hook.remove()
    convs = [c for c, _ in pairs]
    return [(c, b) for c, b in pairs if convs.count(c) == 1]  # a conv read by two BatchNorms stays as it is


def _after_norm(bn: nn.BatchNorm2d) -> nn.Module:
    """What is left of a BatchNorm once its affine map is folded away: timm's ``BatchNormAct2d``
    keeps its dropout and activation; a plain BatchNorm leaves nothing."""
    if type(bn) is nn.BatchNorm2d:
        return nn.Identity()
    drop, act = getattr(bn, "drop", None), getattr(bn, "act", None)
    if isinstance(drop, nn.Module) and isinstance(act, nn.Module) and type(bn).__name__ == "BatchNormAct2d":
        return nn.Sequential(drop, act)
    raise TypeError(f"cannot fold {type(bn).__name__}: only nn.BatchNorm2d and timm's BatchNormAct2d")


def fold_batchnorm(stage: nn.Module, example: Tensor) -> tuple[nn.Module, int]:
    """An eval-mode copy of ``stage`` with each conv -> BatchNorm pair folded into the conv.

    ``example``: an input for one probing forward (one image is enough). Returns the copy and the
    number of BatchNorms folded; those of types it does not know are left in place.
    """
    folded = copy.deepcopy(stage).eval()
    with torch.no_grad():
        pairs = _conv_bn_pairs(folded, example)
        count = 0
        for conv_name, bn_name in pairs:
            conv, bn = folded.get_submodule(conv_name), folded.get_submodule(bn_name)
            try:
                rest = _after_norm(bn)
            except TypeError:
                continue
            nhwc = conv.weight.is_contiguous(memory_format=torch.channels_last)
            conv.weight, conv.bias = fuse_conv_bn_weights(  # the copy's own conv, changed in place
                conv.weight, conv.bias, bn.running_mean, bn.running_var, bn.eps, bn.weight, bn.bias
            )  # weight (O, I/g, kh, kw), bias (O,)
            if nhwc:  # keep NHWC weights NHWC
                conv.weight.data = conv.weight.data.contiguous(memory_format=torch.channels_last)
            conv.requires_grad_(False)
            folded.set_submodule(bn_name, rest)
            count += 1
    return folded, count


class FoldedStages:
    """A cache of folded copies of body stages, keyed by stage index.

    ``FoldedStages()(index, stage, x)`` runs ``stage`` on ``x`` through its folded copy, building or
    rebuilding the copy when the stage's tensors or train/eval flags changed since the last build.
    Call it only for stages where :func:`is_fixed` holds. The copy is a deep copy, hooks included:
    a forward hook on one of the stage's modules fires in the copy too, except on a folded-away
    BatchNorm (and once more during each build's probing forward).
    """

    def __init__(self) -> None:
        self._cache: dict[int, tuple[list[Tensor], list[bool], nn.Module]] = {}

    @staticmethod
    def _state(stage: nn.Module) -> tuple[list[Tensor], list[bool]]:
        return [*stage.parameters(), *stage.buffers()], [m.training for m in stage.modules()]

    def __call__(self, index: int, stage: nn.Module, x: Tensor) -> Tensor:
        tensors, flags = self._state(stage)
        hit = self._cache.get(index)
        if hit is None or hit[1] != flags or len(hit[0]) != len(tensors) or not all(
            a.shape == b.shape and a.device == b.device and a.dtype == b.dtype and torch.equal(a, b)
            for a, b in zip(hit[0], tensors)
        ):
            folded, _ = fold_batchnorm(stage, x[:1].detach())
            training = {name: m.training for name, m in stage.named_modules()}
            for name, m in folded.named_modules():  # the stage's own flags (dropout in train mode stays so)
                m.training = training.get(name, m.training)
            with torch.no_grad():
                snapshot = [t.detach().clone() for t in tensors]
            hit = self._cache[index] = (snapshot, flags, folded)
        return hit[2](x)
