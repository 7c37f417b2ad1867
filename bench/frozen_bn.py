"""What folding BatchNorm into the convolutions would save in the frozen part of the shapes body.

    .venv/bin/python bench/frozen_bn.py [--repeats 7] [--batch-size 16] [--image-size 192]

configs/shapes.yaml trains with ``train_bn: false`` and layer group 0 of EfficientNet-Lite0 (stem +
blocks 0-2, the stride-8 stage) frozen, so that stage is pure inference in every step: each conv's
BatchNorm in eval mode is an affine map that could be folded into the conv's weights and bias
(``w * g / sqrt(v + eps)``, ``(b - m) * g / sqrt(v + eps) + beta``). Not done in training yet; this
measures what it would buy. Times the stage as built and a folded copy (random weights: the cost
does not depend on them), back to back, alternating which goes first; medians. Checks the two agree.
Prints a table, then one JSON line.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time

import torch
from torch import nn

from detector.model.backbones import build_backbone

# timm's block layouts: each conv and the BatchNorm(+activation) right after it.
CONV_BN = [("conv_stem", "bn1"), ("conv_dw", "bn1"), ("conv_pw", "bn2"), ("conv_pw", "bn1"), ("conv_dw", "bn2"), ("conv_pwl", "bn3")]


def fold_batchnorm(stage: nn.Module) -> tuple[nn.Module, int]:
    """A copy of ``stage`` (eval mode) with every conv -> BatchNorm pair folded into the conv; the
    BatchNorm's activation (timm's ``BatchNormAct2d``) is kept. Returns the copy and the pair count."""
    folded, count = copy.deepcopy(stage), 0
    for module in list(folded.modules()):
        children = dict(module.named_children())
        order = list(children)
        for conv_name, bn_name in CONV_BN:
            conv, bn = children.get(conv_name), children.get(bn_name)
            if not isinstance(conv, nn.Conv2d) or not isinstance(bn, nn.BatchNorm2d):
                continue
            if order.index(bn_name) != order.index(conv_name) + 1:
                continue
            scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)  # (C,)
            conv.weight.mul_(scale.view(-1, 1, 1, 1))
            bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
            conv.bias = nn.Parameter((bias - bn.running_mean) * scale + bn.bias)
            setattr(module, bn_name, getattr(bn, "act", nn.Identity()))
            children = dict(module.named_children())
            count += 1
    return folded, count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--image-size", type=int, default=192)
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    stage = build_backbone("efficientnet_lite0", "none").body[0].eval().to(memory_format=torch.channels_last)
    folded, pairs = fold_batchnorm(stage)
    x = torch.rand(args.batch_size, 3, args.image_size, args.image_size).contiguous(memory_format=torch.channels_last)
    diff = (stage(x) - folded(x)).abs().max().item()
    assert diff < 1e-3, f"folded stage disagrees by {diff}"
    times: dict[str, list[float]] = {"as built": [], "folded": []}
    for _ in range(2):
        stage(x), folded(x)  # warm-up
    for r in range(args.repeats):
        for name in (("as built", "folded") if r % 2 == 0 else ("folded", "as built")):
            module = stage if name == "as built" else folded
            start = time.perf_counter()
            module(x)
            times[name].append((time.perf_counter() - start) * 1000)
    built, fast = statistics.median(times["as built"]), statistics.median(times["folded"])
    print(f"EfficientNet-Lite0 stride-8 stage, batch {args.batch_size} at {args.image_size} px, {torch.get_num_threads()} threads, {pairs} conv+BN pairs")
    print("| forward | ms (median) |\n|---|---|")
    print(f"| as built (conv, BatchNorm) | {built:.1f} |\n| BatchNorm folded | {fast:.1f} |")
    print(json.dumps({"built_ms": round(built, 2), "folded_ms": round(fast, 2), "saved_ms": round(built - fast, 2), "max_abs_diff": diff}))


if __name__ == "__main__":
    main()
