"""BatchNorm folded into the convolutions of body stages whose BatchNorm is in eval mode, to make
training steps cheaper.

A BatchNorm in eval mode (``train_bn: false`` in a frozen group, or ``norm_eval: true``) is an affine
map per channel, ``(x - mean) / sqrt(var + eps) * gamma + beta``; after a conv it can be folded into
that conv: weight ``w * s`` and bias ``(b - mean) * s + beta`` with ``s = gamma / sqrt(var + eps)``.
:class:`FoldedConv` runs the pair that way, recomputing the folded weight and bias from the conv's
and the BatchNorm's own tensors at every call (a pass over the weights, not over the activations),
so gradients reach ``w``, ``gamma`` and ``beta`` exactly as through the two layers: it serves a
frozen stage and a training one alike. What it saves is the BatchNorm's pass over every activation
map, forward and backward: for the shapes config's frozen stride-8 stage of EfficientNet-Lite0 that
is 111 -> 68 ms of forward per batch of 16 at 192 px on a 2-core CPU, and with ``norm_eval`` the
training stages' BatchNorm passes too (a shapes training step 9-14 % faster than with the training
stages' BatchNorm in train mode; ``bench/frozen_bn.py``). Outputs and gradients agree to float32
rounding (~1e-6), not bit for bit.

:class:`FoldedStages` keeps one folded view per stage, outside the module tree (so ``state_dict``,
``.to()`` and the optimiser never see it). A view is a copy of the stage's modules that shares the
stage's parameters and buffers (no tensor is copied), so training, a loaded checkpoint or an EMA
swap, all of which change those tensors in place, reach it at once; it is rebuilt when a tensor is
replaced by another (``.to()`` of buffers) or a train/eval flag or ``requires_grad`` changes
(freezing, unfreezing).
:class:`FoldedStages` is a :class:`detector.model.backbones.Backbone`'s ``stage_runner`` when the recipe
leaves BatchNorm in eval mode (``train_bn: false`` or ``norm_eval``; :class:`detector.training.tasks.staged.StagedModule`
installs it), and folds only in training mode: validation, evaluation and export run the stage
itself, so they agree exactly with one another.

Written by hand because ``torch.fx.experimental.optimization.fuse`` matches only exact
``nn.BatchNorm2d`` modules, traces through timm's ``BatchNormAct2d`` (BatchNorm + activation), and
folds fixed weights only.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["FoldedConv", "FoldedStages", "fold_batchnorm", "norms_fixed"]

_BATCHNORM = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)


def norms_fixed(stage: nn.Module) -> bool:
    """True when ``stage`` has BatchNorm layers and every one of them is in eval mode."""
    norms = [m for m in stage.modules() if isinstance(m, _BATCHNORM)]
    return bool(norms) and not any(m.training for m in norms)


class FoldedConv(nn.Module):
    """``bn(conv(x))`` for an eval-mode ``bn`` computed as one conv, its weight and bias folded
    from both modules' current tensors at every call (differentiable in all of them)."""

    def __init__(self, conv: nn.Conv2d, bn: nn.BatchNorm2d):
        super().__init__()
        self.conv, self.bn = conv, bn

    def forward(self, x: Tensor) -> Tensor:
        conv, bn = self.conv, self.bn
        scale = torch.rsqrt(bn.running_var + bn.eps)  # (O,)
        if bn.weight is not None:
            scale = scale * bn.weight
        shift = -bn.running_mean * scale if conv.bias is None else (conv.bias - bn.running_mean) * scale  # (O,)
        if bn.bias is not None:
            shift = shift + bn.bias
        weight = conv.weight * scale.reshape(-1, 1, 1, 1)  # (O, I/g, kh, kw)
        return F.conv2d(x, weight, shift, conv.stride, conv.padding, conv.dilation, conv.groups)


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

    # Exact nn.Conv2d with zero padding only: FoldedConv runs F.conv2d (a subclass may pad itself).
    candidates = [m for m in stage.modules() if type(m) is nn.Conv2d and m.padding_mode == "zeros"]
    hooks = [m.register_forward_hook(after_conv) for m in candidates]
    hooks += [m.register_forward_pre_hook(before_bn) for m in stage.modules() if isinstance(m, nn.BatchNorm2d)]
    try:
        with torch.no_grad():
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
    """A view of ``stage`` with each conv -> BatchNorm pair run as a :class:`FoldedConv`.

    The view's modules are copies, with the stage's train/eval flags, but its parameters and buffers
    are the stage's own tensors. ``example``: an input for one probing forward (one image is enough).
    Returns the view and the number of BatchNorms folded; those of types it does not know are left
    in place, and so is a pair whose conv kernel is fixed while the BatchNorm's affine trains (the
    fold would need that kernel's gradient: for a depthwise conv on a CPU, ~10x its forward, more
    than the BatchNorm costs). Meant for a stage whose BatchNorm layers are in eval mode
    (:func:`norms_fixed`): a folded BatchNorm always normalises with its running statistics.
    """
    shared = {id(t): t for t in (*stage.parameters(), *stage.buffers())}
    view = copy.deepcopy(stage, memo=shared)  # deepcopy returns what memo holds: the tensors are shared
    flags = {name: m.training for name, m in stage.named_modules()}
    count = 0
    for conv_name, bn_name in _conv_bn_pairs(view.eval(), example):
        conv, bn = view.get_submodule(conv_name), view.get_submodule(bn_name)
        if not conv.weight.requires_grad and any(p.requires_grad for p in bn.parameters()):
            continue  # folded, the fixed kernel would need its gradient: see the docstring
        try:
            rest = _after_norm(bn)
        except TypeError:
            continue
        view.set_submodule(conv_name, FoldedConv(conv, bn))
        view.set_submodule(bn_name, rest)
        count += 1
    for name, m in view.named_modules():  # the stage's own flags (dropout in train mode stays so)
        m.training = flags.get(name, m.training)
    return view, count


class FoldedStages:
    """A backbone's ``stage_runner``: runs a body stage in training mode whose BatchNorm layers are
    all in eval mode (:func:`norms_fixed`) through a cached folded view; any other stage, and every
    stage in eval mode, runs as it is.

    ``FoldedStages()(index, stage, x)`` builds or rebuilds stage ``index``'s view when one of the
    stage's tensors was replaced, or a tensor's ``requires_grad`` or a module's train/eval flag
    changed, since the last build. The view is a copy of the modules, hooks included: a forward hook
    on one of the stage's modules fires in the view too, except on a folded conv or BatchNorm (and
    once more during each build's probing forward).
    """

    def __init__(self) -> None:
        self._cache: dict[int, tuple[list, nn.Module]] = {}

    @staticmethod
    def _state(stage: nn.Module) -> list:
        # The view holds the tensors themselves, so these ids stay theirs while it exists.
        tensors = (*stage.parameters(), *stage.buffers())
        return [[id(t) for t in tensors], [t.requires_grad for t in tensors], [m.training for m in stage.modules()]]

    def __call__(self, index: int, stage: nn.Module, x: Tensor) -> Tensor:
        if not (stage.training and norms_fixed(stage)):
            return stage(x)
        state = self._state(stage)
        hit = self._cache.get(index)
        if hit is None or hit[0] != state:
            view, _ = fold_batchnorm(stage, x[:1].detach())
            hit = self._cache[index] = (state, view)
        return hit[1](x)
