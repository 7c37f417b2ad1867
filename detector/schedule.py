"""The training recipe: stages of (epochs, frozen layer groups, learning-rate multiplier), each one
a fastai "1cycle" (``use_clr=(div, cut_div)``).

The lesson trains in two stages (pascal-multi.ipynb):

    learn.fit(lrs, 1, cycle_len=10, use_clr=(20, 10))        # body frozen: head only
    learn.freeze_to(-2)
    learn.fit(lrs / 4, 1, cycle_len=10, use_clr=(20, 10))    # layer group 1 + head

``use_clr=(20, 10)`` is fastai 0.7's ``CircularLR(div=20, cut_div=10)``: within a cycle of ``n``
steps the learning rate climbs linearly from ``lr / 20`` to ``lr`` over the first ``n // 10`` steps,
then falls linearly back to ``lr / 20``. Everything here is a pure function of the global step or
epoch, so a resumed run recomputes exactly the learning rate and freezing it had.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Sequence

__all__ = ["Stage", "FREEZE", "OneCycle", "stage_at_epoch", "total_epochs"]

# Which body stages (0, 1, 2: the maps at strides 8, 16, 32) each freeze setting leaves frozen; the
# head always trains. Layer group 0 is stage 0 and group 1 stages 1 and 2, so "body" = fastai's
# freeze() of a pretrained learner, "groups_0" = freeze_to(-2), "none" = unfreeze(); "to_stride_16"
# (mmdetection's frozen_stages, beyond fastai) also freezes group 1's stride-16 stage.
FREEZE: dict[str, tuple[int, ...]] = {"body": (0, 1, 2), "to_stride_16": (0, 1), "groups_0": (0,), "none": ()}


@dataclass
class Stage:
    """One stage of the recipe.

    Attributes:
        epochs: length of the stage (one 1cycle).
        freeze: which body stages are frozen: ``body`` (all: head only), ``to_stride_16`` (the
            stages up to the stride-16 map: the stride-32 stage and the head train), ``groups_0``
            (layer group 0, the stage up to stride 8: the lesson's ``freeze_to(-2)``) or ``none``.
        lr_mult: multiplies every group's peak learning rate (the lesson's ``lrs / 4`` is 0.25).
    """

    epochs: int
    freeze: Literal["body", "to_stride_16", "groups_0", "none"] = "none"
    lr_mult: float = 1.0


def total_epochs(stages: Sequence[Stage]) -> int:
    """The number of epochs the whole recipe lasts (the trainer's ``max_epochs``)."""
    return sum(s.epochs for s in stages)


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
            fastai 1's ``fit_one_cycle`` has the same knob, ``div_final``). A cycle that ends higher
            keeps learning in its last epochs; on shapes, with an EMA of the weights, ``lr / 2.5``
            did not help (README: run K, 0.825 after 23 epochs, against G's 0.830 after 22).
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
