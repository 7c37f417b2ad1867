"""``detector runs``: the run folders under ``runs/`` (or ``--root``), one line each: when each
started, how far it got, its best monitored value and epoch, its checkpoints and results. Reads
only the folders' files (:func:`detector.training.runs.list_runs`): no torch, no Lightning."""

from __future__ import annotations

from collections.abc import Sequence

from detector.cli import Parser

__all__ = ["main"]


def main(argv: Sequence[str]) -> int:
    parser = Parser(prog="detector runs", description="List the run folders: progress, best value, checkpoints, results.")
    parser.add_argument("name", nargs="?", help="only the versions of this run")
    parser.add_argument("--root", default="runs", help="the folder of every run (default: runs)")
    args = parser.parse_args(argv)

    from detector.errors import MissingFileError
    from detector.training.runs import list_runs

    runs = list_runs(args.root, args.name)
    if not runs:
        where = f"{args.root}/{args.name}" if args.name else args.root
        raise MissingFileError(f"no run folders in {where}: train one with detector train fit --config CONFIG")
    lines = ["| run | started | epochs | best | checkpoints | results |", "|---|---|---|---|---|---|"]
    for r in runs:
        started = r.started.strftime("%Y-%m-%d %H:%M") if r.started else "-"
        done, total = r.epochs
        epochs = f"{done}/{total}" if total else str(done)
        best = f"{r.monitor} {r.best[0]:.4f} (epoch {r.best[1]})" if r.best else (f"{r.monitor}: not yet" if r.monitor else "-")
        lines.append(f"| {r.run.name}/v{r.run.version} | {started} | {epochs} | {best} | "
                     f"{', '.join(r.checkpoints) or '-'} | {', '.join(r.results) or '-'} |")
    print("\n".join(lines))
    return 0
