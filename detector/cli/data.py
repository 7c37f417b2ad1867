"""``detector data``: import a labelled folder, make the embedded shapes dataset, download PASCAL
VOC 2007, convert a VOCdevkit folder to the JSON layout training reads; look at a config's data
and the anchors it would choose."""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from pathlib import Path

from detector.cli import Parser
from detector.defaults import MAX_SKIPPED_FRACTION

__all__ = ["main"]

DESCRIPTION = """Get data into the layout training reads: one COCO-format JSON per split and an image folder.

  detector data import PATH --out data/NAME               VOC XML, YOLO txt or COCO JSON -> JSONs + config.yaml
                                                          (every image decoded once; a truncated JPEG restored)
  detector data shapes --root data/shapes                 the synthetic default (2,000 + 400 images)
  detector data download-voc --root data/voc              PASCAL VOC 2007 and the course's JSONs (online)
  detector data convert-voc --devkit DIR --out data/NAME  any VOCdevkit folder (Annotations, ImageSets, JPEGImages)

A look at a config's training data before training it:
  detector data report CONFIG [--out DIR]     PNGs: classes, box shapes, objects per image, examples, anchor coverage
  detector data anchors CONFIG                the image size and anchors that anchors: auto chooses, against the config's

Likely label errors, from k models that each predict the images they did not train on:
  detector data audit CONFIG [--folds 5] [--epochs N]   label_issues.csv and .png in audit/ beside the train JSON"""


def main(argv: Sequence[str]) -> int:
    parser = Parser(prog="detector data", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    shapes = commands.add_parser("shapes", help="write the synthetic shapes dataset")
    shapes.add_argument("--root", type=Path, default=Path("data/shapes"))
    shapes.add_argument("--n-train", type=int, default=2000)
    shapes.add_argument("--n-val", type=int, default=400)
    shapes.add_argument("--image-size", type=int, default=256, help="the images' longer side is about this")
    shapes.add_argument("--seed", type=int, default=0)
    shapes.add_argument("--workers", type=int, default=2, help="processes drawing images")
    fetch = commands.add_parser("download-voc", help="VOC 2007 trainval + test and the course's JSONs")
    fetch.add_argument("--root", type=Path, default=Path("data/voc"))
    convert = commands.add_parser("convert-voc", help="a VOCdevkit folder's XML -> the course's COCO-style JSONs")
    convert.add_argument("--devkit", type=Path, required=True, help="folder with Annotations/, ImageSets/Main/, JPEGImages/")
    convert.add_argument("--out", type=Path, required=True, help="folder for the JSONs")
    convert.add_argument("--splits", nargs="+", default=None, help="default: those of train, val, trainval, test that have a split file")
    convert.add_argument("--classes", nargs="+", default=None, help="the categories in this order (default: VOC's or sorted)")
    imp = commands.add_parser("import", help="a labelled folder (VOC XML, YOLO txt, COCO JSON) -> the JSONs and a ready config.yaml")
    imp.add_argument("path", type=Path, help="the dataset's folder (or a COCO .json, or a YOLO data.yaml)")
    imp.add_argument("--out", type=Path, required=True,
                     help="folder for the JSONs, split.json and config.yaml (data/NAME); restored/ holds whole copies of truncated images")
    imp.add_argument("--format", choices=("auto", "voc", "yolo", "coco"), default="auto")
    imp.add_argument("--name", default=None, help="the dataset's and its runs' name (default: --out's folder name)")
    imp.add_argument("--val-fraction", type=float, default=None, help="share of all images for a val split the source lacks (0.15)")
    imp.add_argument("--test-fraction", type=float, default=None, help="share of all images for a test split the source lacks (0.15)")
    imp.add_argument("--seed", type=int, default=0, help="seed of the stratified split")
    imp.add_argument("--on-bad-record", choices=("error", "skip"), default="error", help="skip: leave out the images of bad records")
    imp.add_argument("--max-skipped-fraction", type=float, default=MAX_SKIPPED_FRACTION, help="skip refuses to leave out more of a split's images or boxes")
    imp.add_argument("--no-flip", dest="flip", action="store_false", help="no horizontal flip in training (text, digits: not mirror-symmetric)")
    imp.add_argument("--classes", nargs="+", default=None, help="VOC: the class names in label order (default: sorted)")
    imp.add_argument("--images", type=Path, default=None, help="COCO: the image folder (default: found beside the JSON)")
    report = commands.add_parser("report", help="PNGs of a config's training data and how its anchors cover the boxes")
    report.add_argument("config", type=Path, help="a training config (YAML)")
    report.add_argument("--out", type=Path, default=None, help="folder for the PNGs (default: report/ beside the train JSON)")
    report.add_argument("--examples", type=int, default=16, help="example images to draw")
    anchors = commands.add_parser("anchors", help="the image size and anchors chosen from a config's training boxes")
    anchors.add_argument("config", type=Path, help="a training config (YAML)")
    anchors.add_argument("--target", type=float, default=0.99, help="share of the boxes an anchor must cover")
    anchors.add_argument("--image-size", type=int, default=None, help="keep this input size (default: chosen too)")
    audit = commands.add_parser("audit", help="likely label errors: k folds, held-out predictions, ranked by cleanlab")
    audit.add_argument("config", type=Path, help="a training config (YAML); its train split is audited")
    audit.add_argument("--folds", type=int, default=5, help="k: each fold trains on the others and predicts its own images")
    audit.add_argument("--epochs", type=int, default=None, help="each fold's recipe length (default: the config's, at most 10)")
    audit.add_argument("--seed", type=int, default=0, help="seed of the fold assignment")
    audit.add_argument("--show", type=int, default=16, help="images in label_issues.png")
    audit.add_argument("--high-score", type=float, default=None,
                       help="a prediction above this can flag a swap or a missing box (default: the fold models' scale; cleanlab's: 0.95)")
    audit.add_argument("--low-score", type=float, default=None,
                       help="predictions above this can flag a misplaced box (default: the fold models' scale; cleanlab's: 0.5)")
    audit.add_argument("--device", default="auto", help="where the fold models predict (auto, cpu, cuda)")
    audit.add_argument("--rank-only", action="store_true", help="rank the held-out predictions a previous audit saved, no training")
    args = parser.parse_args(argv)
    if args.command in ("report", "anchors"):
        return _look(args)
    if args.command == "audit":
        return _audit(args)
    if args.command == "shapes":
        from detector.data.shapes import ensure_shapes, summary

        start = time.perf_counter()
        ensure_shapes(args.root, args.n_train, args.n_val, args.image_size, args.seed, args.workers)
        print(summary(args.root))
        print(f"shapes ready in {args.root} ({time.perf_counter() - start:.1f} s)")
    elif args.command == "download-voc":
        from detector.data.download import download_voc2007

        download_voc2007(args.root)
    elif args.command == "import":
        from detector.data.importers.importer import import_dataset

        done = import_dataset(args.path, args.out, args.format, args.name, args.val_fraction, args.test_fraction, args.seed,
                              args.on_bad_record, args.max_skipped_fraction, args.flip, args.classes, args.images)
        print(done.summary)
        print(f"wrote {', '.join(str(p) for p in done.jsons.values())}, {args.out / 'split.json'}, {done.config}")
        print(f"next: detector train fit --config {done.config}")
    else:
        from detector.data.voc import convert_devkit

        convert_devkit(args.devkit, args.out, args.splits, args.classes)
    return 0


def _look(args: argparse.Namespace) -> int:
    """``report`` and ``anchors``: a config's training data, before training."""
    from detector.training.config import read_config

    config = read_config(args.config)
    if args.command == "anchors":
        from detector.autoanchor.choice import describe_choice

        print(describe_choice(config, str(args.config), args.target, args.image_size))
        return 0
    from detector.inspection.report import default_folder, write_report

    for path in write_report(config, str(args.config), args.out or default_folder(config), args.examples):
        print(f"wrote {path}")
    return 0


def _audit(args: argparse.Namespace) -> int:
    """``audit``: train the folds in this process (``detector train fit``), rank, print the worst."""
    from detector.cli.train import train
    from detector.research.audit import audit
    from detector.research.label_issues import CLEANLAB_HIGH_SCORE, CLEANLAB_LOW_SCORE, worst_of_kind

    given = None
    if args.high_score is not None or args.low_score is not None:
        given = (CLEANLAB_LOW_SCORE if args.low_score is None else args.low_score, CLEANLAB_HIGH_SCORE if args.high_score is None else args.high_score)
    done = audit(args.config, lambda argv: train(argv).run, args.folds, args.epochs, args.seed, args.show, given, args.device,
                 args.rank_only, echo=lambda line: print(line, flush=True))
    boxes = sum(i.annotation_id is not None for i in done.issues)
    images = {i.image_id for i in done.issues}
    flagged = {i.image_id for i in done.issues if i.image_flagged}
    low, high = done.thresholds
    print(f"scored {boxes} labelled boxes and {len(done.issues) - boxes} confident unlabelled predictions in {len(images)} images "
          f"(confident: score above {high:.3f}; misplaced: against predictions above {low:.3f}); cleanlab flags {len(flagged)} images")
    for kind, what in (("swap", "wrong class"), ("badloc", "misplaced box"), ("overlooked", "missing box")):
        rows = worst_of_kind(done.issues, kind)
        print(f"{kind} ({what}): " + (f"the worst of {len(rows)} below 1 (rank in the CSV, {kind} score: lower is more likely wrong)" if rows else "none"))
        for rank, issue, score in rows[:5]:
            box = f"annotation {issue.annotation_id}" if issue.annotation_id is not None else "no annotation"
            seen = f", model: {issue.predicted} {issue.predicted_score:.2f}" if issue.predicted else ""
            print(f"  #{rank:<5} {score:.3f}  {issue.file}  {box}, {issue.cls}{seen}")
    print(f"wrote {done.csv}, {done.picture}, {done.predictions}")
    return 0
