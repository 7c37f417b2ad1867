"""What folding BatchNorm into the convolutions saves in the shapes body: its frozen stage, and
with ``norm_eval`` its training stages.

    .venv/bin/python bench/frozen_bn.py [--repeats 7] [--batch-size 16] [--image-size S] [--train-step STEPS]

configs/shapes.yaml trains with ``train_bn: false`` and layer group 0 of EfficientNet-Lite0 (stem +
blocks 0-2, the stride-8 stage) frozen, so that stage is pure inference in every step: each conv's
BatchNorm in eval mode is an affine map that could be folded into the conv's weights and bias
(``w * g / sqrt(v + eps)``, ``(b - m) * g / sqrt(v + eps) + beta``); training does that
(``detector.training.fold``). Times the stage as built and ``fold_batchnorm``'s copy (random weights:
the cost does not depend on them), back to back, alternating which goes first; medians. Checks
the two agree.

With ``--train-step`` it also times whole training steps of configs/shapes.yaml's model in its main
stage (``bench/shapes_step.py``) with the fold and without it (``Backbone.stage_runner``), each with the
training stages' BatchNorm as the config has it and with ``norm_eval`` (eval-mode BatchNorm, which
the fold then covers too), alternating step by step in one process.
Prints a table, then one JSON line.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
from shapes_step import interleaved_step_ms, main_stage_model, random_batch, shapes_init

from detector.model.backbones import build_backbone
from detector.training.fold import FoldedStages, fold_batchnorm

STEP_MODELS = {  # name: (norm_eval, fold)
    "as built": (False, False),
    "frozen stage folded": (False, True),
    "norm_eval": (True, False),
    "norm_eval, all stages folded": (True, True),
}


def train_step_ms(steps: int, batch_size: int) -> dict[str, float]:
    """Median ms of a shapes training step (main stage) of each of :data:`STEP_MODELS`, interleaved."""
    models = {}
    for name, (norm_eval, fold) in STEP_MODELS.items():
        models[name] = main_stage_model(norm_eval=norm_eval)
        models[name].model.backbone.stage_runner = FoldedStages() if fold else None
    return interleaved_step_ms(models, random_batch(batch_size, shapes_init()["image_size"]), steps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--image-size", type=int, default=shapes_init()["image_size"])
    parser.add_argument("--train-step", type=int, default=0, metavar="STEPS", help="also time STEPS training steps each way")
    args = parser.parse_args()
    steps = train_step_ms(args.train_step, args.batch_size) if args.train_step else {}
    torch.set_grad_enabled(False)
    stage = build_backbone("efficientnet_lite0", "none").body[0].eval().to(memory_format=torch.channels_last)
    x = torch.rand(args.batch_size, 3, args.image_size, args.image_size).contiguous(memory_format=torch.channels_last)
    folded, pairs = fold_batchnorm(stage, x[:1])
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
    result = {"built_ms": round(built, 2), "folded_ms": round(fast, 2), "saved_ms": round(built - fast, 2), "max_abs_diff": diff}
    if steps:
        print(f"\nshapes training step (main stage, batch {args.batch_size}, {args.train_step} steps each, interleaved)")
        print("| training step | ms (median) |\n|---|---|")
        for name, ms in steps.items():
            print(f"| {name} | {ms:.0f} |")
        result["step_ms"] = {name: round(ms, 1) for name, ms in steps.items()}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
