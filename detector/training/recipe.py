"""The training recipe: stages of (epochs, frozen layer groups, learning-rate multiplier), each one
a fastai "1cycle" (``use_clr=(div, cut_div)``), and everything about freezing.

The lesson trains in two stages (pascal-multi.ipynb):

    learn.fit(lrs, 1, cycle_len=10, use_clr=(20, 10))        # body frozen: head only
    learn.freeze_to(-2)
    learn.fit(lrs / 4, 1, cycle_len=10, use_clr=(20, 10))    # layer group 1 + head

``use_clr=(20, 10)`` is fastai 0.7's ``CircularLR(div=20, cut_div=10)``: within a cycle of ``n``
steps the learning rate climbs linearly from ``lr / 20`` to ``lr`` over the first ``n // 10`` steps,
then falls linearly back to ``lr / 20``. The learning rates are discriminative: layer group ``i``
(body group 0, body group 1, head) gets ``lr * lr_mult[i]``, the lesson's ``[lr/100, lr/10, lr]``.

Everything here is a pure function of the global step or epoch, so a resumed run recomputes
exactly the learning rate and freezing it had; :class:`StagedFreezing` applies the freezing before
every training epoch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import lightning as L
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from detector.errors import ConfigError

__all__ = [
    "FREEZE",
    "OneCycle",
    "OptimizerConfig",
    "Recipe",
    "Stage",
    "StagedFreezing",
    "apply_freeze",
    "freeze_for_epoch",
    "lesson_stages",
    "scale_stages",
    "stage_at_epoch",
    "total_epochs",
]

# The layer groups (0: the body up to stride 8, 1: the rest of the body, 2: the head) each freeze
# setting leaves frozen; the head always trains. "body" is fastai's freeze() of a pretrained
# learner, "groups_0" its freeze_to(-2), "none" its unfreeze().
FREEZE: dict[str, tuple[int, ...]] = {"body": (0, 1), "groups_0": (0,), "none": ()}

_BATCHNORM = (nn.modules.batchnorm._BatchNorm,)


@dataclass
class Stage:
    """One stage of the recipe.

    Attributes:
        epochs: length of the stage (one 1cycle).
        freeze: which layer groups are frozen: ``body`` (both body groups: the head alone trains),
            ``groups_0`` (layer group 0, the body up to stride 8: the lesson's ``freeze_to(-2)``)
            or ``none``.
        lr_mult: multiplies every group's peak learning rate (the lesson's ``lrs / 4`` is 0.25).
    """

    epochs: int
    freeze: Literal["body", "groups_0", "none"] = "none"
    lr_mult: float = 1.0


def lesson_stages() -> list[Stage]:
    """The lesson's recipe: 10 epochs of the head alone, then 10 with ``freeze_to(-2)`` at ``lrs / 4``."""
    return [Stage(epochs=10, freeze="body", lr_mult=1.0), Stage(epochs=10, freeze="groups_0", lr_mult=0.25)]


@dataclass
class OptimizerConfig:
    """AdamW by default; group ``i`` gets ``lr * lr_mult[i]`` (the lesson's ``[lr/100, lr/10, lr]``).

    ``div`` and ``cut_div`` are fastai's ``use_clr=(div, cut_div)`` for every stage's 1cycle;
    ``end_div`` (default: ``div``) where each cycle ends, ``lr / end_div`` (fastai 1's ``div_final``).
    ``fused``: Adam/AdamW update all parameters in one fused kernel (torch's ``fused=True``) instead
    of one small op per tensor and step (on a 2-core CPU the shapes model's update 19 -> 11 ms).
    """

    name: Literal["adamw", "adam", "sgd"] = "adamw"
    lr: float = 1e-2
    lr_mult: tuple[float, float, float] = (0.01, 0.1, 1.0)
    weight_decay: float = 1e-4
    momentum: float = 0.9
    div: float = 20.0
    cut_div: float = 10.0
    end_div: float | None = None
    fused: bool = True


@dataclass(frozen=True)
class Recipe:
    """How a body-and-head network is trained (see :class:`detector.training.tasks.staged.StagedModule`'s arguments).

    Attributes:
        stages: the staged 1cycles; their total is the run's length.
        optimizer: the optimiser, its learning rates and the cycles' shape.
        train_bn: BatchNorm in frozen groups keeps training (fastai's default); ``False`` freezes
            its affine parameters and statistics too.
        norm_eval: the body's BatchNorm normalises with its running statistics in training too
            and never updates them; its affine parameters still train where their group trains.
        train_depthwise: ``False`` keeps the body's depthwise conv kernels at their pretrained
            values (a CPU speed-up: :mod:`detector.training.depthwise`).
    """

    stages: tuple[Stage, ...] = field(default_factory=lambda: tuple(lesson_stages()))
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    train_bn: bool = True
    norm_eval: bool = False
    train_depthwise: bool = True

    def __post_init__(self) -> None:
        if not self.stages:
            raise ConfigError("stages: a recipe needs at least one stage")
        for i, stage in enumerate(self.stages):
            if stage.freeze not in FREEZE:
                raise ConfigError(
                    f"stages[{i}].freeze = {stage.freeze!r} names no frozen layer groups: use one of "
                    f"{', '.join(FREEZE)} (body: train the head only; groups_0: freeze group 0; none: train all)"
                )
            if stage.epochs < 1:
                raise ConfigError(f"stages[{i}].epochs = {stage.epochs}: a stage lasts at least one epoch")


def total_epochs(stages: Sequence[Stage]) -> int:
    """The number of epochs the whole recipe lasts (the trainer's ``max_epochs``)."""
    return sum(s.epochs for s in stages)


def scale_stages(stages: Sequence[Stage], epochs: int) -> list[Stage]:
    """The recipe stretched or shrunk to ``epochs`` in all: each stage keeps its share of the run,
    rounded by largest remainder so that the lengths sum to ``epochs``, and lasts at least one epoch.

    Raises:
        ConfigError: fewer epochs than stages.
    """
    if epochs < len(stages):
        raise ConfigError(f"trainer.max_epochs {epochs}: the recipe has {len(stages)} stages, each needs an epoch")
    total = total_epochs(stages)
    exact = [s.epochs * epochs / total for s in stages]
    lengths = [max(1, int(x)) for x in exact]
    by_remainder = sorted(range(len(stages)), key=lambda i: (exact[i] - int(exact[i]), -i), reverse=True)
    while sum(lengths) < epochs:  # hand the missing epochs to the largest remainders
        for i in by_remainder:
            if sum(lengths) < epochs:
                lengths[i] += 1
    while sum(lengths) > epochs:  # the one-epoch minimums overshot: take from the longest stage
        lengths[max(range(len(stages)), key=lambda i: (lengths[i], -i))] -= 1
    return [Stage(n, s.freeze, s.lr_mult) for n, s in zip(lengths, stages)]


def stage_at_epoch(stages: Sequence[Stage], epoch: int) -> int:
    """Index of the stage that ``epoch`` (0-based) falls in; epochs past the end stay in the last."""
    end = 0
    for i, stage in enumerate(stages):
        end += stage.epochs
        if epoch < end:
            return i
    return len(stages) - 1


@dataclass(frozen=True)
class OneCycle:
    """Learning-rate multiplier per optimiser step for a staged recipe (use with ``LambdaLR``).

    Attributes:
        stages: the recipe.
        steps_per_epoch: optimiser steps in one epoch.
        div: the cycle starts and ends at ``lr / div`` (fastai's ``use_clr[0]``; the lesson uses 20).
        cut_div: the climb lasts ``1 / cut_div`` of the cycle (fastai's ``use_clr[1]``; the lesson
            uses 10).
        end_div: the fall ends at ``lr / end_div`` instead (None: at ``lr / div``, as fastai 0.7;
            fastai 1's ``fit_one_cycle`` has the same knob, ``div_final``).
    """

    stages: tuple[Stage, ...]
    steps_per_epoch: int
    div: float = 20.0
    cut_div: float = 10.0
    end_div: float | None = None

    def __call__(self, step: int) -> float:
        start = 0
        for stage in self.stages:
            n = stage.epochs * self.steps_per_epoch
            if step < start + n or stage is self.stages[-1]:
                return stage.lr_mult * self._cycle(min(step - start, n), n)
            start += n
        raise ValueError("a recipe needs at least one stage")

    def _cycle(self, i: int, n: int) -> float:
        """fastai 0.7 ``CircularLR.calc_lr`` as a fraction of the peak: ``(1 + pct * (div - 1)) / div``
        (``end_div`` in place of ``div`` on the way down)."""
        cut = max(int(n // self.cut_div), 1)
        if i <= cut:
            pct, div = i / cut, self.div
        else:
            pct, div = 1 - (i - cut) / max(n - cut, 1), self.div if self.end_div is None else self.end_div
        return (1 + pct * (div - 1)) / div


def apply_freeze(
    groups: Sequence[nn.Module],
    frozen: Sequence[int],
    train_bn: bool = True,
    norm_eval: Sequence[int] = (),
    fixed_depthwise: Sequence[int] = (),
) -> None:
    """Freeze the layer ``groups`` whose indices are in ``frozen``; make the others trainable.

    With ``train_bn`` (fastai's default), BatchNorm layers inside frozen groups keep training their
    affine parameters and running statistics; without it they are frozen and put in eval mode.
    BatchNorm layers in the groups listed in ``norm_eval`` normalise with their running statistics
    and leave them alone (eval mode), whether or not the group is frozen; their affine parameters
    still train where the group trains (mmdetection's ``norm_eval``). The depthwise convolutions of
    the groups listed in ``fixed_depthwise`` keep their kernels (:mod:`detector.training.depthwise`).
    """
    for i, group in enumerate(groups):
        freeze = i in frozen
        for module in group.modules():
            is_bn = isinstance(module, _BATCHNORM)
            for p in module.parameters(recurse=False):
                p.requires_grad_(not freeze or (is_bn and train_bn))
            if is_bn and ((freeze and not train_bn) or i in norm_eval):
                module.eval()
    if fixed_depthwise:
        from detector.training.depthwise import fix_depthwise_kernels

        for i in fixed_depthwise:
            fix_depthwise_kernels(groups[i])


def freeze_for_epoch(pl_module: Any, epoch: int) -> None:
    """:func:`apply_freeze` on ``pl_module.model.layer_groups`` as ``pl_module.recipe`` has it at
    ``epoch``, its ``norm_eval`` and ``train_depthwise: false`` applied to both body groups."""
    recipe: Recipe = pl_module.recipe
    body = (0, 1)
    apply_freeze(
        pl_module.model.layer_groups,
        FREEZE[recipe.stages[stage_at_epoch(recipe.stages, epoch)].freeze],
        recipe.train_bn,
        norm_eval=body if recipe.norm_eval else (),
        fixed_depthwise=body if not recipe.train_depthwise else (),
    )


class StagedFreezing(L.Callback):
    """Applies the recipe's freezing for the current epoch (:func:`freeze_for_epoch`) before every
    training epoch.

    The stage is a pure function of the epoch, so a run resumed from a checkpoint freezes exactly
    what the interrupted run froze, and the optimiser (which holds every group from the first step)
    never changes shape.

    Under DDP, parameters that a stage freezes get no gradient, which DDP treats as an error (at the
    second step) unless told to look for unused parameters each step; so a recipe that freezes
    anything is refused before the first step unless the strategy is
    ``ddp_find_unused_parameters_true``. (Building DDP around the first stage's trainable parameters
    only would not do: DDP would then never synchronise the groups a later stage unfreezes.)
    """

    def on_fit_start(self, trainer: L.Trainer, pl_module: Any) -> None:
        ddp = trainer.strategy.model
        if not isinstance(ddp, DistributedDataParallel) or ddp.find_unused_parameters:
            return
        recipe: Recipe = pl_module.recipe
        freezing = [i for i, s in enumerate(recipe.stages) if FREEZE[s.freeze]]
        if freezing:
            raise ConfigError(
                f"model.init_args.stages[{freezing[0]}] freezes layer groups, whose parameters then get no gradient, "
                "which DDP refuses: set trainer.strategy to ddp_find_unused_parameters_true"
            )
        if not recipe.train_depthwise:
            raise ConfigError(
                "model.init_args.train_depthwise: false leaves the body's depthwise kernels without a gradient, "
                "which DDP refuses: set trainer.strategy to ddp_find_unused_parameters_true"
            )

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: Any) -> None:
        freeze_for_epoch(pl_module, trainer.current_epoch)
