"""The learning-rate range test (Smith 2015; fastai's ``learn.lr_find(lrs / 1000, 1.)``).

Hand-written rather than Lightning's ``Tuner.lr_find`` because that one sets every parameter group
to the same learning rate, which loses the lesson's discriminative ``[lr/100, lr/10, lr]`` ratios.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from detector.training.recipe import freeze_for_epoch

__all__ = ["LRFinderResult", "lr_range_test"]


@dataclass
class LRFinderResult:
    """Head learning rates tried, their smoothed losses, and the suggested head learning rate."""

    lrs: list[float]
    losses: list[float]
    suggestion: float

    def plot(self, path: str | Path) -> Path:
        """Save the loss-vs-lr curve (log x axis) with the suggestion marked; returns the path."""
        from detector.pictures import lr_finder_figure, save_figure

        return save_figure(lr_finder_figure(self.lrs, self.losses, self.suggestion), path, dpi=100)


def lr_range_test(
    module: Any,
    train_loader: Any,
    min_lr: float = 1e-5,
    max_lr: float = 1.0,
    num_steps: int = 100,
    beta: float = 0.98,
    diverge: float = 4.0,
    device: str | torch.device = "cpu",
) -> LRFinderResult:
    """Sweep the head learning rate exponentially from ``min_lr`` to ``max_lr`` over ``num_steps``
    training steps of the recipe's first stage (its freezing, its optimiser, the groups' lr ratios),
    on a copy of ``module``; stop early once the smoothed loss exceeds ``diverge`` x its minimum.

    The suggestion is the learning rate at the steepest descent of the smoothed loss (Lightning's
    rule), a point where the loss still falls fast.
    """
    model = copy.deepcopy(module).to(device).train()
    freeze_for_epoch(model, 0)
    cfg = model.recipe.optimizer
    opt = model.build_optimizer(min_lr)
    gamma = (max_lr / min_lr) ** (1 / max(num_steps - 1, 1))
    lrs, losses, avg, best = [], [], 0.0, math.inf
    step = 0
    while step < num_steps:
        for batch in train_loader:
            if step >= num_steps:
                break
            lr = min_lr * gamma**step
            for g, m in zip(opt.param_groups, cfg.lr_mult):
                g["lr"] = lr * m
            batch = {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}
            terms = model.loss(batch)
            opt.zero_grad(set_to_none=True)
            terms["loss"].backward()
            opt.step()
            value = terms["loss"].item()
            avg = beta * avg + (1 - beta) * value
            smooth = avg / (1 - beta ** (step + 1))  # bias-corrected exponential moving average
            lrs.append(lr)
            losses.append(smooth)
            step += 1
            best = min(best, smooth)
            if not math.isfinite(smooth) or smooth > diverge * best:
                step = num_steps
                break
    if len(losses) < 3:
        raise RuntimeError(f"the range test ran only {len(losses)} steps; give it more data or steps")
    slopes = [(losses[i + 1] - losses[i - 1]) / (math.log(lrs[i + 1]) - math.log(lrs[i - 1])) for i in range(1, len(lrs) - 1)]
    suggestion = lrs[1 + min(range(len(slopes)), key=slopes.__getitem__)]
    return LRFinderResult(lrs, losses, suggestion)
