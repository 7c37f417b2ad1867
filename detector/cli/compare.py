"""``detector compare``: configs (or finished runs) trained with several seeds, compared on one
split with paired bootstrap intervals (:mod:`detector.research.compare`)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from detector.cli import Parser
from detector.defaults import BOOTSTRAP_RESAMPLES, COMPARE_SEEDS, COMPARE_SPLIT, SPLITS

__all__ = ["main"]

DESCRIPTION = """Did an idea help? Train each side with several seeds (what is not trained yet), evaluate
every run on one split, and print per metric (COCO mAP, mAP@0.5, mAP@0.75) each side's mean and
standard deviation over seeds, the difference from A with its 95 % paired bootstrap interval, and
a verdict; the tables, a picture and a JSON with every number go to RUNS/compare/NAME/.

  detector compare configs/bccd.yaml my_anchors.yaml --seeds 5
  detector compare data/bccd/config.yaml bccd_lesson_anchors.yaml --seeds 3 --epochs 10
  detector compare data/bccd/config.yaml data/bccd/config.yaml@3-5 --seeds 3   (a config against itself)
  detector compare runs/bccd/v2 my_anchors.yaml --seeds 3       (a finished run and its config.yaml)

A side is a config file, a run folder RUNS/NAME/vN or a run's name (its newest finished version:
the run counts for its own seed, the other seeds train from its config.yaml); SIDE@3-5 or
SIDE@0,2,7 gives that side its own seeds (every side needs as many; seed s of A is paired with seed
s of B). Each seed is an ordinary run, detector train fit --config CONFIG --seed_everything S
--data.seed S --name NAME_sS, in RUNS/NAME_sS/vN (the data seed orders the images and draws the
augmentations); a finished one (its source.json: the same config bytes, seed and --epochs) is
reused, never trained again. The interval resamples the split's images (the same draw
for every run) and the seeds (the same seed indices on every side); --no-resample-seeds resamples
the images only: the noise of the test split without that of training."""


def main(argv: Sequence[str]) -> int:
    parser = Parser(prog="detector compare", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sides", nargs="+", metavar="SIDE", help="A B [C ...]: configs, run folders or run names, each [@SEEDS]")
    parser.add_argument("--seeds", type=int, default=COMPARE_SEEDS, help=f"seeds 0..N-1 per side (default: {COMPARE_SEEDS})")
    parser.add_argument("--epochs", type=int, help="train every run this many epochs (the recipe scaled; default: each config's)")
    parser.add_argument("--name", help="the comparison's folder RUNS/compare/NAME (default: the sides' names)")
    parser.add_argument("--split", default=COMPARE_SPLIT, choices=SPLITS, help=f"the split every run is evaluated on (default: {COMPARE_SPLIT})")
    parser.add_argument("--resamples", type=int, default=BOOTSTRAP_RESAMPLES, help=f"bootstrap resamples (default: {BOOTSTRAP_RESAMPLES})")
    parser.add_argument("--resample-seed", type=int, default=0, help="the bootstrap's random seed (default: 0)")
    parser.add_argument(
        "--resample-seeds", action=argparse.BooleanOptionalAction, default=True,
        help="resample the seeds as well as the images (default: yes)",
    )
    parser.add_argument("--runs", default="runs", help="the folder of the runs (default: runs)")
    parser.add_argument("--device", default="auto", help="where the runs are evaluated: cpu, cuda, ... or auto")
    args = parser.parse_args(argv)
    if args.epochs is not None and args.epochs < 1:
        parser.error(f"--epochs must be 1 or more; got {args.epochs}")

    from detector.research.compare import compare, format_tables, write_outcome

    outcome = compare(
        args.sides, seeds=args.seeds, epochs=args.epochs, name=args.name, split=args.split, resamples=args.resamples,
        resample_seed=args.resample_seed, resample_seeds=args.resample_seeds, root=args.runs, device=args.device,
    )
    written = write_outcome(outcome)
    print()
    print(format_tables(outcome))
    print(f"\ntrained {outcome.trained} run{'s' if outcome.trained != 1 else ''}; wrote " + ", ".join(str(p) for p in written))
    return 0
