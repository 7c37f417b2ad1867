"""The ``detector`` command: one entry point, a subcommand per job.

Each subcommand is a module here with a ``main(argv) -> exit status``, imported only when it runs
(so ``detector --help`` is quick). A :class:`~detector.errors.UserError` (a missing file, a bad
setting or record, a checkpoint that does not fit) ends any of them with one line on stderr that
names the thing, and exit status 2; anything else keeps its traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence
from typing import NoReturn

__all__ = ["COMMANDS", "Parser", "main", "run", "shim"]

# name -> (module, one line of help)
COMMANDS: dict[str, tuple[str, str]] = {
    "train": ("detector.cli.train", "train, validate or test with a config in a versioned run folder; find a learning rate"),
    "eval": ("detector.cli.eval", "evaluate a run or checkpoint on a split: the mAP table and the results folder (curves, confusion matrix)"),
    "predict": ("detector.cli.predict", "detect objects in image files: pictures and detections.json"),
    "inspect": ("detector.cli.inspect", "draw a config's anchors, matches or batches, or a checkpoint's predictions"),
    "export": ("detector.cli.export", "export a checkpoint to ONNX"),
    "compare": ("detector.cli.compare", "did an idea help? configs trained with several seeds, compared with paired bootstrap intervals"),
    "tune": ("detector.cli.tune", "search a config's settings with Optuna (one run per trial; several workers share a study)"),
    "runs": ("detector.cli.runs", "list the run folders: progress, best value, checkpoints, results"),
    "data": ("detector.cli.data", "import a labelled folder (VOC, YOLO, COCO); shapes, VOC 2007; a data report, anchors; an audit of the labels"),
}

USAGE = "usage: detector COMMAND [ARGS]   (detector COMMAND --help for a command's options)\n\ncommands:\n" + "\n".join(
    f"  {name:<9} {text}" for name, (_, text) in COMMANDS.items()
)


def one_line(message: object) -> str:
    """``message`` with its line breaks and runs of spaces made single spaces."""
    return " ".join(str(message).split())


class Parser(argparse.ArgumentParser):
    """``argparse`` for the subcommands: a usage mistake is one line on stderr and exit status 2
    (argparse's own prints the whole usage first)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {one_line(message)} (see {self.prog} --help)\n")


def run(name: str, entry: Callable[[Sequence[str]], int | None], argv: Sequence[str]) -> int:
    """Call a subcommand's ``entry(argv)``; a user mistake becomes one line and status 2."""
    from detector.errors import UserError

    try:
        return entry(argv) or 0
    except UserError as e:
        print(f"detector {name}: {one_line(e)}", file=sys.stderr)
        return 2


def main(argv: Sequence[str] | None = None) -> int:
    """``detector COMMAND [ARGS]``; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if argv else 2
    if argv[0] == "--version":
        from importlib.metadata import PackageNotFoundError, version

        try:
            print(f"detector {version('detector')}")
        except PackageNotFoundError:
            print("detector (not installed: run from a checkout)")
        return 0
    name = argv[0]
    if name not in COMMANDS:
        print(f"detector: no command {name!r}; the commands are {', '.join(COMMANDS)} (see detector --help)", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    return run(name, module.main, argv[1:])


def shim(name: str) -> NoReturn:
    """``python NAME.py ARGS`` as ``detector NAME ARGS`` (the repository's top-level scripts)."""
    sys.exit(main([name, *sys.argv[1:]]))
