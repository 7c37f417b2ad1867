"""``detector compare A B [C ...]``: did a changed idea help? Each side (a config, or a finished run
and its config) trained with the same number of seeds, every run evaluated on one split, and per
metric each side's mean and standard deviation over seeds with the paired bootstrap interval of its
difference from A (:mod:`detector.evaluation.bootstrap`), a verdict, a JSON with every number and
a picture of the tables in ``ROOT/compare/NAME/``.

What is not trained yet is trained first, one run at a time, each an ordinary run folder
``ROOT/NAME_sS/vN`` (:mod:`detector.research.seed_runs`); a finished run is never trained again, so
a second ``compare`` (more resamples, another split, a third side) only evaluates.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from detector.defaults import BOOTSTRAP_RESAMPLES, COMPARE_SEEDS, COMPARE_SPLIT, Split
from detector.errors import ConfigError
from detector.research.seed_runs import SeedRun, evaluated_checkpoint, file_sha256, find_finished, read_yaml, run_name, train_seed
from detector.training.runs import RunFolder, versions

if TYPE_CHECKING:
    from detector.evaluation.bootstrap import Comparison
    from detector.evaluation.evaluator import Evaluation

__all__ = ["METRIC_TITLES", "Side", "Outcome", "compare", "format_tables", "parse_seeds", "plan_sides", "write_outcome"]

METRIC_TITLES = {"map": "COCO mAP@[.5:.95]", "map_50": "mAP@0.5", "map_75": "mAP@0.75"}

_SEED_LIST = re.compile(r"^\d+(-\d+)?(,\d+(-\d+)?)*$")


def parse_seeds(text: str) -> list[int]:
    """``3-5`` -> ``[3, 4, 5]``; ``0,2,7`` -> ``[0, 2, 7]``; ranges and single seeds mixed."""
    if not _SEED_LIST.match(text):
        raise ConfigError(f"seeds {text!r}: write them as 3-5 or 0,2,7")
    seeds: list[int] = []
    for part in text.split(","):
        first, _, last = part.partition("-")
        seeds += range(int(first), int(last or first) + 1)
    if len(set(seeds)) != len(seeds) or not seeds:
        raise ConfigError(f"seeds {text!r}: each seed once")
    return seeds


@dataclass
class Side:
    """One side of a comparison.

    Attributes:
        label: ``A``, ``B``, ``C``, ... (A: the baseline every other side is compared with).
        given: what the command line said (``configs/x.yaml``, ``runs/x/v2``, ``x``, with ``@SEEDS``).
        name: its runs' name before ``_sS`` (the config's name, or the given run's).
        config: the config its runs are trained from (a given run's ``config.yaml``).
        runs: one per seed, in the order of the seeds.
    """

    label: str
    given: str
    name: str
    config: Path
    runs: list[SeedRun] = field(default_factory=list)

    @property
    def seeds(self) -> list[int]:
        return [r.seed for r in self.runs]


def _config_name(path: Path) -> str:
    """A config's runs' name: the file's name without ``.yaml``; for ``config.yaml`` (what
    ``detector data import`` writes), its folder's name."""
    return path.parent.resolve().name if path.stem == "config" else path.stem


def _given_run(target: str, root: Path) -> RunFolder | None:
    """The finished run folder ``target`` names: a folder ``.../NAME/vN``, ``NAME/vN`` under
    ``root``, or a run name (its newest version with a checkpoint); ``None`` if none of these."""
    for folder in (Path(target), root / target):
        if (folder / "config.yaml").is_file() and re.fullmatch(r"v\d+", folder.name):
            folder = folder.resolve()
            return RunFolder(folder.parent.parent, folder.parent.name, int(folder.name[1:]))
    for version in reversed(versions(root, target)):
        run = RunFolder(root, target, version)
        if (run.path / "config.yaml").is_file() and evaluated_checkpoint(run) is not None:
            return run
    return None


def _side(given: str, label: str, seeds: list[int], epochs: int | None, root: Path) -> Side:
    """A command line's side: ``CONFIG``, ``RUN_FOLDER`` or ``RUN_NAME``, each with an optional
    ``@SEEDS`` (:func:`parse_seeds`); its runs, with those already finished filled in."""
    target, at, seed_text = given.rpartition("@")
    if not at or not _SEED_LIST.match(seed_text):
        target, seed_text = given, ""
    seeds = parse_seeds(seed_text) if seed_text else seeds
    path = Path(target)
    run = None if path.is_file() else _given_run(target, root)
    if path.is_file():
        read_yaml(path)
        side = Side(label, given, _config_name(path), path, [])
    elif run is not None:
        side = Side(label, given, run.name, run.path / "config.yaml", [])
    else:
        raise ConfigError(f"{given}: neither a config file, nor a run folder (runs/NAME/vN), nor the name of a finished run in {root}")
    sha256 = file_sha256(side.config)
    side.runs = [SeedRun(run_name(side.name, s), s, side.config, sha256, epochs) for s in seeds]
    if run is not None:  # the given run is its own seed's run; the other seeds train from its config.yaml
        config = read_yaml(side.config)
        seed = config.get("seed_everything")
        if seed not in seeds or isinstance(seed, bool):
            raise ConfigError(
                f"{given}: {run.path} was trained with seed_everything {seed}, not one of the seeds {', '.join(map(str, seeds))}: "
                f"name its seeds ({target}@{seed},...) or give --seeds"
            )
        length = (config.get("trainer") or {}).get("max_epochs")
        if epochs is not None and length != epochs:
            raise ConfigError(f"{given}: {run.path} trained {length} epochs, not --epochs {epochs}: leave --epochs out or compare configs")
        side.runs[seeds.index(seed)] = SeedRun(run.name, seed, side.config, sha256, None, run, given=True)
    for seed_run in side.runs:
        if seed_run.run is None:
            seed_run.run = find_finished(seed_run, root)
    return side


def plan_sides(given: Sequence[str], seeds: int = COMPARE_SEEDS, epochs: int | None = None, root: str | Path = "runs") -> list[Side]:
    """The sides of ``detector compare``, each with its runs (finished ones found, the others to train).

    Raises:
        ConfigError: fewer than two sides, a side that is no config or run, sides with different
            numbers of seeds.
    """
    if len(given) < 2:
        raise ConfigError("compare needs two sides or more: detector compare A B [C ...]")
    if len(given) > 26:
        raise ConfigError(f"compare takes at most 26 sides (A to Z); got {len(given)}")
    if seeds < 1:
        raise ConfigError(f"--seeds {seeds}: one seed or more")
    default = list(range(seeds))
    sides = [_side(g, chr(ord("A") + i), default, epochs, Path(root)) for i, g in enumerate(given)]
    counts = {len(s.runs) for s in sides}
    if len(counts) > 1:
        raise ConfigError(
            "every side needs the same number of seeds (seed s of A is paired with seed s of B): "
            + ", ".join(f"{s.given} has {len(s.runs)}" for s in sides)
        )
    return sides


def _check_split(side: Side, split: str) -> None:
    """Refuse, before any training, a side whose data has no ``split``."""
    data = read_yaml(side.config).get("data") or {}
    if not data.get(f"{split}_json"):
        raise ConfigError(f"{side.given}: its data ({side.config}) has no {split} split (data.{split}_json): give --split val")


EVALUATION_FILE = "compare_evaluation.pt"
"""A run's evaluation on a split, kept in ``results/SPLIT/`` for the next ``compare`` (what it was
computed from is in the file: it is read again only when all of that is unchanged)."""


def _evaluate(checkpoint: Path, split: str, device: Any) -> Evaluation:
    """A checkpoint over ``split`` of the data it was trained with, as ``detector eval`` evaluates
    it (images only resized; the network's input size and normalisation). Written here, not shared
    with ``detector eval``'s, because that one lives in the command's module above this room."""
    from detector.data.datamodule import DetectionDataModule
    from detector.deploy.loading import load_detector
    from detector.evaluation.evaluator import evaluate
    from detector.training.checkpoints import read_checkpoint

    model = load_detector(checkpoint, device)
    data = dict(read_checkpoint(checkpoint).get("datamodule_hyper_parameters") or {})
    data.pop("_instantiator", None)
    backbone = model.model.backbone
    data.update(image_size=model.image_size, mean=tuple(backbone.mean), std=tuple(backbone.std), generate=None, num_workers=0)
    dm = DetectionDataModule(**data)
    if not dm.jsons.get(split):
        raise ConfigError(f"{checkpoint}: its data has no {split} split: give --split val")
    return evaluate(model, dm, split, device, progress=False)


def _evaluation(seed_run: SeedRun, split: str, device: Any, say: Callable[[str], None]) -> Evaluation:
    """:func:`_evaluate`, or what it gave last time (:data:`EVALUATION_FILE`) when the checkpoint's
    bytes, the split's JSON (as the run's ``config.yaml`` names it), the split and the kind of
    device are the same: evaluating a run takes a minute or two on a CPU, a comparison many runs."""
    import torch

    from detector.evaluation.evaluator import Evaluation

    checkpoint = seed_run.checkpoint
    split_json = (read_yaml(seed_run.run.path / "config.yaml").get("data") or {}).get(f"{split}_json")
    key = {
        "checkpoint": file_sha256(checkpoint), "split": split, "device": str(getattr(device, "type", device)),
        "split_json": file_sha256(split_json) if split_json and Path(split_json).is_file() else None,
    }
    cache = seed_run.run.path / "results" / split / EVALUATION_FILE
    if cache.is_file():
        try:
            kept = torch.load(cache, map_location="cpu", weights_only=True)
            if kept.get("key") == key:
                say(f"evaluated before: {checkpoint} on {split} ({cache})")
                return Evaluation(**kept["evaluation"])
        except Exception:  # unreadable, or written by another version: evaluate again
            pass
    say(f"evaluating {checkpoint} on {split}")
    found = _evaluate(checkpoint, split, device)
    cache.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"key": key, "evaluation": vars(found)}, cache)
    return found


def _same_images(evaluations: list[Evaluation], runs: list[SeedRun]) -> None:
    """Every run must have been evaluated on the same images with the same objects (pairing)."""
    first = evaluations[0]
    for e, r in zip(evaluations[1:], runs[1:]):
        same = e.image_ids == first.image_ids and all(
            g["boxes"].shape == h["boxes"].shape and bool((g["boxes"] == h["boxes"]).all()) and bool((g["labels"] == h["labels"]).all())
            for g, h in zip(e.ground_truths, first.ground_truths)
        )
        if not same:
            raise ConfigError(
                f"{r.run.path} was evaluated on other images or objects than {runs[0].run.path}: the sides must share "
                "their data (the same split JSON)"
            )


@dataclass
class Outcome:
    """What :func:`compare` found (``as_dict`` is ``comparison.json``)."""

    name: str
    folder: Path
    split: str
    images: int
    resamples: int
    resample_seed: int
    resample_seeds: bool
    sides: list[Side]
    run_metrics: list[list[dict[str, Any]]]  # per side, per seed: the evaluator's summary of the run
    comparisons: list[Comparison]  # one per metric
    trained: int
    seconds: dict[str, float]

    def as_dict(self) -> dict[str, Any]:
        sides = []
        for side, metrics in zip(self.sides, self.run_metrics):
            sides.append({
                "label": side.label, "given": side.given, "name": side.name, "config": str(side.config),
                "sha256": side.runs[0].sha256, "epochs": side.runs[0].epochs,
                "runs": [{"seed": r.seed, "run": str(r.run.path), "checkpoint": str(r.checkpoint), "given": r.given,
                          "metrics": {k: m[k] for k in ("map", "map_50", "map_75", "voc07_map_50", "voc_map_50", "per_class")}}
                         for r, m in zip(side.runs, metrics)],
            })
        return {
            "name": self.name, "split": self.split, "images": self.images, "seeds": [s.seeds for s in self.sides],
            "resamples": self.resamples, "resample_seed": self.resample_seed, "resample_seeds": self.resample_seeds,
            "sides": sides, "metrics": {c.metric: c.as_dict() for c in self.comparisons},
            "verdicts": {c.metric: [d.verdict(s.label, self.sides[0].label) for d, s in zip(c.differences, self.sides[1:])]
                         for c in self.comparisons},
            "trained": self.trained, "seconds": self.seconds,
        }


def _default_name(sides: list[Side]) -> str:
    names = [s.name for s in sides]
    if len(set(names)) < len(names):  # one config against itself: tell the sides apart by their seeds
        names = [f"{s.name}_s{'-'.join(map(str, s.seeds))}" for s in sides]
    return re.sub(r"[^\w.-]", "_", "_vs_".join(names))


def compare(
    given: Sequence[str],
    seeds: int = COMPARE_SEEDS,
    epochs: int | None = None,
    name: str | None = None,
    split: Split = COMPARE_SPLIT,
    resamples: int = BOOTSTRAP_RESAMPLES,
    resample_seed: int = 0,
    resample_seeds: bool = True,
    root: str | Path = "runs",
    device: str = "auto",
    say: Callable[[str], None] = print,
) -> Outcome:
    """Train what is missing, evaluate every run on ``split``, bootstrap the differences from side A.

    Args:
        given: the sides: config files, run folders (``runs/NAME/vN``) or run names, each with an
            optional ``@SEEDS`` (``@3-5``) instead of ``seeds``.
        seeds: seeds 0 to ``seeds - 1`` for every side that names none.
        epochs: ``--epochs`` for every run trained (``None``: each config's own length).
        name: the comparison's folder ``ROOT/compare/NAME`` (default: the sides' names).
        split: the split every run is evaluated on.
        resamples, resample_seed, resample_seeds: the bootstrap's
            (:func:`detector.evaluation.bootstrap.compare_runs`).
        root: the folder of the runs.
        device: where the runs are evaluated (``auto``: a GPU when there is one).
        say: where progress lines go.
    """
    from detector.deploy.loading import resolve_device
    from detector.evaluation.bootstrap import compare_runs
    from detector.evaluation.coco_matches import match_images

    if resamples < 1:
        raise ConfigError(f"--resamples {resamples}: one or more")
    root = Path(root)
    sides = plan_sides(given, seeds, epochs, root)
    for side in sides:
        _check_split(side, split)
    device = resolve_device(device)
    name = name or _default_name(sides)
    seconds: dict[str, float] = {}
    to_train = [r for s in sides for r in s.runs if r.run is None]
    for side in sides:
        say(f"{side.label}: {side.given} ({side.config}), seeds {', '.join(map(str, side.seeds))}")
        for r in side.runs:
            say(f"  seed {r.seed}: " + (f"{r.run.path} ({'given' if r.given else 'finished, reused'})" if r.run else "to train"))
    started = time.perf_counter()
    for i, seed_run in enumerate(to_train, 1):
        say(f"training {i}/{len(to_train)}: {seed_run.name} (seed {seed_run.seed})")
        seed_run.run = train_seed(seed_run, root, say)
    seconds["train"] = time.perf_counter() - started

    started = time.perf_counter()
    runs = [r for s in sides for r in s.runs]
    evaluations = []
    for r in runs:
        evaluations.append(_evaluation(r, split, device, say))
    _same_images(evaluations, runs)
    seconds["evaluate"] = time.perf_counter() - started
    started = time.perf_counter()
    num_classes = len(evaluations[0].summary["per_class"])
    matches = [match_images(e.detections, e.ground_truths, num_classes) for e in evaluations]
    S = len(sides[0].runs)
    by_side = [matches[k * S:(k + 1) * S] for k in range(len(sides))]
    seconds["match"] = time.perf_counter() - started
    started = time.perf_counter()
    comparisons = compare_runs(by_side, resamples, resample_seed, resample_seeds)
    seconds["bootstrap"] = time.perf_counter() - started
    summaries = [e.summary for e in evaluations]
    return Outcome(
        name, root / "compare" / name, split, len(evaluations[0].image_ids), resamples, resample_seed, resample_seeds, sides,
        [summaries[k * S:(k + 1) * S] for k in range(len(sides))], comparisons, len(to_train), seconds,
    )


def _number(x: float | None, sign: bool = False) -> str:
    return "" if x is None else f"{x:+.3f}" if sign else f"{x:.3f}"


def table_rows(outcome: Outcome, comparison: Comparison) -> tuple[list[str], list[list[str]]]:
    """One metric's table: the header and a row per side (what :func:`format_tables` prints and
    the picture draws)."""
    level = f"{comparison.differences[0].level:.0%}".replace("%", " %") if comparison.differences else "95 %"
    header = ["side", "trained from", "seeds", "mean", "sd", "per seed", "X - A", f"{level} CI of X - A"]
    rows = []
    for k, side in enumerate(outcome.sides):
        d = comparison.differences[k - 1] if k else None
        rows.append([
            side.label, side.given, ", ".join(map(str, side.seeds)), _number(comparison.means[k]), _number(comparison.sds[k]),
            " ".join(_number(v) for v in comparison.per_seed[k]),
            _number(d.difference, True) if d else "", f"{d.low:+.3f} to {d.high:+.3f}" if d else "",
        ])
    return header, rows


def _what(outcome: Outcome) -> str:
    seeds = len(outcome.sides[0].runs)
    what = "images and seeds" if outcome.resample_seeds else "images (every seed kept)"
    return (f"{outcome.split} split ({outcome.images} images), {seeds} seed{'s' if seeds > 1 else ''} per side; "
            f"intervals from {outcome.resamples} paired bootstrap resamples of the {what}")


def verdicts(outcome: Outcome, comparison: Comparison) -> list[str]:
    """One line per side after A: ``B better than A (+0.031, 95 % CI +0.012 to +0.050)`` or
    ``no difference shown between B and A (...)``."""
    return [d.verdict(s.label, outcome.sides[0].label) for d, s in zip(comparison.differences, outcome.sides[1:])]


def format_tables(outcome: Outcome) -> str:
    """The markdown tables, one per metric, each followed by its verdicts."""
    lines = [_what(outcome), ""]
    for comparison in outcome.comparisons:
        header, rows = table_rows(outcome, comparison)
        lines += [f"{METRIC_TITLES[comparison.metric]}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(row) + " |" for row in rows]
        lines += [""] + [f"{METRIC_TITLES[comparison.metric]}: {v}" for v in verdicts(outcome, comparison)] + [""]
    return "\n".join(lines).rstrip()


def write_outcome(outcome: Outcome) -> list[Path]:
    """``comparison.json`` (every number, every run's folder), ``comparison.md`` (the tables) and
    ``comparison.png`` (the tables and the intervals) in the comparison's folder."""
    from detector.pictures.comparison import comparison_figure
    from detector.pictures.draw import save_figure

    outcome.folder.mkdir(parents=True, exist_ok=True)
    written = [outcome.folder / "comparison.json", outcome.folder / "comparison.md", outcome.folder / "comparison.png"]
    written[0].write_text(json.dumps(outcome.as_dict(), indent=1) + "\n")
    written[1].write_text(format_tables(outcome) + "\n")
    tables = []
    for c in outcome.comparisons:
        header, rows = table_rows(outcome, c)
        intervals = [(d.difference, d.low, d.high, d.shown) for d in c.differences]
        tables.append((METRIC_TITLES[c.metric], header, rows, c.per_seed, intervals, verdicts(outcome, c)))
    figure = comparison_figure(tables, f"detector compare {outcome.name}: {_what(outcome)}")
    save_figure(figure, written[2])
    return written
