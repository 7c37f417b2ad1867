"""Depthwise convolution kernels kept at their pretrained values (``train_depthwise: false``).

On a CPU the kernel gradient of a depthwise convolution (EfficientNet's, MobileNet's) costs about
10x its forward pass (oneDNN; ``bench/depthwise.py``), and the kernels are 6 % of
EfficientNet-Lite0's body parameters. Fixing them makes a shapes training step 11-20 % faster;
everything else in their layer group still trains, and gradients still flow through them.
"""

from __future__ import annotations

from torch import nn

__all__ = ["fix_depthwise_kernels", "is_depthwise"]


def is_depthwise(module: nn.Module) -> bool:
    """True for a depthwise convolution: one group per input channel (``groups == in_channels > 1``)."""
    return isinstance(module, nn.Conv2d) and 1 < module.groups == module.in_channels


def fix_depthwise_kernels(group: nn.Module) -> None:
    """Stop the parameters of every depthwise convolution in ``group`` from training."""
    for module in group.modules():
        if is_depthwise(module):
            for p in module.parameters(recurse=False):
                p.requires_grad_(False)
