"""What each freeze setting of the recipe costs a shapes training step: configs/shapes.yaml's model
(its ``norm_eval``, fixed depthwise kernels and folds) with the stage after the head-only epoch set
to ``groups_0`` (the config's), ``to_stride_16`` (the stride-16 stage frozen too) and ``body``
(head only), whole steps interleaved in one process (``bench/shapes_step.py``); medians.

    .venv/bin/python bench/freeze_depth.py [--steps 10] [--batch-size 16]

Prints a table, then one JSON line ``{"groups_0": ms, "to_stride_16": ms, "body": ms}``.
"""

from __future__ import annotations

import argparse
import json

from shapes_step import interleaved_step_ms, main_stage_model, random_batch, shapes_init

SETTINGS = ("groups_0", "to_stride_16", "body")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args()
    models = {
        freeze: main_stage_model(stages=[{"epochs": 1, "freeze": "body"}, {"epochs": 1, "freeze": freeze}])
        for freeze in SETTINGS
    }
    ms = interleaved_step_ms(models, random_batch(args.batch_size, shapes_init()["image_size"]), args.steps)
    print(f"| main-stage freeze | training step ms (batch {args.batch_size}) | vs groups_0 |")
    print("|---|---|---|")
    for freeze in SETTINGS:
        print(f"| {freeze} | {ms[freeze]:.0f} | {ms[freeze] / ms['groups_0']:.2f} |")
    print(json.dumps({k: round(v, 1) for k, v in ms.items()}))


if __name__ == "__main__":
    main()
