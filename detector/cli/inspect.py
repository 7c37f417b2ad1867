"""``detector inspect``: pictures of a config's anchors, matches and batches, or of a checkpoint's
predictions (:mod:`detector.inspection.views`)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from detector.cli import Parser

__all__ = ["main"]

DESCRIPTION = """Draw what a config and a checkpoint do, to check them by eye.

  detector inspect anchors --config configs/shapes.yaml [--image photo.jpg]      (into runs/inspect/shapes)
  detector inspect matches --config configs/shapes.yaml [--images 8]
  detector inspect batch --config configs/shapes.yaml [--batches 2]
  detector inspect predictions --config configs/shapes.yaml --checkpoint CKPT   (into the run's inspect/)

--out FOLDER puts the pictures elsewhere; by default they go to runs/inspect/NAME (NAME: the config's
run.name, else its file name), or for predictions of a checkpoint in a run folder, runs/NAME/vN/inspect.

anchors:      anchors.png, the anchor grids, all anchors of a few cells (on --image if given).
matches:      matches.png, the first training images' objects and the anchors matched to them, and
              matches.txt: over the whole training split, positive anchors per object and the objects
              that only their one forced anchor covers or no anchor covers, per class.
batch:        batch_0.png, ...: training batches augmented exactly as training sees them (epoch 0).
predictions:  raw_predictions.png (the 10 best-scoring anchors' boxes before NMS) and detections.png
              (after NMS, above --score, ground truth dashed), on the first validation images, with
              the checkpoint's image size and normalisation.
--palette 256 writes 256-colour PNGs, about 3x smaller (for pictures kept in a repository)."""


def default_out(config: str, checkpoint: str | None) -> Path:
    """Where the pictures go without ``--out``: beside the run, as the other commands write theirs."""
    import yaml

    from detector.training.runs import run_of_checkpoint

    run = run_of_checkpoint(Path(checkpoint)) if checkpoint else None
    if run is not None:
        return run.path / "inspect"
    text = yaml.safe_load(Path(config).read_text()) if Path(config).is_file() else None
    name = ((text or {}).get("run") or {}).get("name") if isinstance(text, dict) else None
    return Path("runs") / "inspect" / (name or Path(config).stem)


def main(argv: Sequence[str]) -> int:
    parser = Parser(prog="detector inspect", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=("anchors", "matches", "batch", "predictions"))
    parser.add_argument("--config", required=True, help="a training config (YAML)")
    parser.add_argument(
        "--out", help="folder for the pictures (default: the checkpoint's run folder's inspect/, else runs/inspect/NAME, "
        "NAME the config's run.name or file name)"
    )
    parser.add_argument("--images", type=int, default=8, help="images per picture (matches, batch, predictions)")
    parser.add_argument("--batches", type=int, default=1, help="training batches to draw (batch)")
    parser.add_argument("--image", help="anchors: draw them on this picture, squashed to the input size")
    parser.add_argument("--checkpoint", help="predictions: a .ckpt written by detector train")
    parser.add_argument("--score", type=float, help="predictions: the score threshold (default: the checkpoint's)")
    parser.add_argument("--palette", type=int, help="reduce the PNGs to this many colours (e.g. 256)")
    args = parser.parse_args(argv)
    if args.what == "predictions" and not args.checkpoint:
        parser.error("predictions needs --checkpoint")

    from detector.inspection.views import inspect_anchors, inspect_batches, inspect_matches, inspect_predictions, load_config

    cfg = load_config(args.config)
    cfg.data.update(num_workers=0, persistent_workers=False)  # a few batches: no worker start-up
    out = Path(args.out) if args.out else default_out(args.config, args.checkpoint)
    out.mkdir(parents=True, exist_ok=True)
    if args.what == "anchors":
        written = inspect_anchors(cfg, out, args.image, args.palette)
    elif args.what == "matches":
        written = inspect_matches(cfg, out, args.images, args.palette)
    elif args.what == "batch":
        written = inspect_batches(cfg, out, args.batches, args.images, args.palette)
    else:
        written = inspect_predictions(cfg, out, args.checkpoint, args.images, args.score, args.palette)
    for path in written:
        print(f"wrote {path}", file=sys.stderr)
    return 0
