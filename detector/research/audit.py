"""``detector data audit CONFIG``: likely label errors in a config's training split.

1. The train split (the images training keeps) is cut into k folds (:mod:`detector.research.folds`),
   written beside the dataset's JSONs in ``audit/folds/``.
2. Each fold trains a normal run, ``RUNS/audit/NAME/fold_K/vN``, on the other folds with the
   config's recipe scaled to ``epochs`` (a short one by default), validating on its own fold.
3. Its ``last.ckpt`` (never chosen by a held-out score) predicts its own fold's images down to
   score 0.01: every training image is predicted once by a model that never saw it. The
   predictions are saved (``audit/heldout_predictions.json``, COCO results), so the ranking can be
   redone without training (``--rank-only``).
4. cleanlab ranks every labelled box and every confident unlabelled prediction
   (:mod:`detector.research.label_issues`): ``audit/label_issues.csv``, worst first, and
   ``audit/label_issues.png``, the worst images (:mod:`detector.research.audit_picture`).

Training goes through ``fit`` (``detector train fit ARGS`` in this process, handed in by the
command: the training command lives above this room).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from detector.core.boxes import xywh_to_xyxy
from detector.data.image import load_image
from detector.data.records import LoadedSplit, load_records
from detector.defaults import EVAL_SCORE
from detector.deploy.loading import load_model, resolve_device
from detector.errors import MissingFileError
from detector.evaluation.evaluator import evaluate
from detector.pictures.draw import save_figure
from detector.research.audit_picture import issue_grid
from detector.research.config_file import load_yaml, run_section
from detector.research.folds import Fold, write_folds
from detector.research.label_issues import ImageBoxes, Issue, model_thresholds, rank_issues, write_issues
from detector.training.config import build, read_config
from detector.training.plan import recipe_stages
from detector.training.recipe import total_epochs
from detector.training.runs import RunFolder

__all__ = ["AUDIT_EPOCHS", "AuditResult", "audit", "audit_folder", "duration"]

AUDIT_EPOCHS = 10  # the default recipe length of each fold: the config's recipe scaled down to this, if longer

Fit = Callable[[list[str]], RunFolder]  # ``detector train ARGS`` in this process -> the run's folder


@dataclass
class AuditResult:
    """What an audit wrote and found."""

    folder: Path
    csv: Path
    picture: Path
    predictions: Path
    issues: list[Issue]
    runs: list[RunFolder]
    thresholds: tuple[float, float]  # (low, high): cleanlab's thresholds as used


def audit_folder(train_json: str | Path) -> Path:
    """Where the audit of a train split goes: ``audit/`` beside its JSON (``data/NAME/audit``)."""
    return Path(train_json).parent / "audit"


def duration(seconds: float) -> str:
    """``75.2`` -> ``1m15s``; under a minute ``12.3s``."""
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, s = divmod(round(seconds), 60)
    return f"{minutes // 60}h{minutes % 60:02d}m{s:02d}s" if minutes >= 60 else f"{minutes}m{s:02d}s"


def _epochs(config: Path, parsed: Any) -> int:
    """The config's recipe length (``trainer.max_epochs``, else the stages' sum), at most :data:`AUDIT_EPOCHS`."""
    given = (load_yaml(config).get("trainer") or {}).get("max_epochs")
    total = given if isinstance(given, int) and given > 0 else total_epochs(recipe_stages(parsed))
    return min(total, AUDIT_EPOCHS)


def _train_split(parsed: Any) -> tuple[LoadedSplit, dict[int, str]]:
    """The config's train records (after ``prepare_data``: a ``generate`` config writes its data
    first) and each image's ``file_name`` as the JSON has it."""
    _, dm = build(parsed, data_only=True)
    dm.prepare_data()
    train_json = parsed.data.train_json
    if not train_json or not Path(train_json).is_file():
        raise MissingFileError(f"data.train_json: {train_json} does not exist; the audit reads the config's train split")
    split = load_records(train_json, parsed.data.image_dir, on_bad_record=parsed.data.on_bad_record)
    names = {int(im["id"]): str(im["file_name"]) for im in json.loads(Path(train_json).read_text())["images"]}
    return split, names


def _predict_fold(fold: Fold, run: RunFolder, device: Any) -> tuple[list[dict[str, Any]], list[int], float | None]:
    """The fold's ``last.ckpt`` over its held-out images, kept down to :data:`EVAL_SCORE`: COCO
    results (``image_id``, ``category_id``, ``bbox`` xywh pixels, ``score``), the ids of the images
    predicted (an unreadable one is skipped) and the held-out mAP@0.5. The data are read as the
    run's own ``config.yaml`` has them (``anchors: auto`` chose the input size there)."""
    model = load_model(run.checkpoints / "last.ckpt", device)
    model.post_cfg = replace(model.post_cfg, score_threshold=EVAL_SCORE)
    _, dm = build(read_config(run.path / "config.yaml", ["--data.val_json", str(fold.heldout)]), data_only=True)
    found = evaluate(model, dm, "val", device, progress=False)
    return found.coco, found.image_ids, found.summary.get("map_50")


def _boxes(
    split: LoadedSplit, names: dict[int, str], predicted: set[int], coco: Sequence[dict[str, Any]]
) -> tuple[list[ImageBoxes], list[ImageBoxes]]:
    """The labels of every record in ``predicted`` (the images a fold model predicted, with or
    without detections) and its predictions, in the same order."""
    label_of = {cid: i for i, cid in enumerate(split.category_ids)}
    by_image: dict[int, list[dict[str, Any]]] = {}
    for det in coco:
        by_image.setdefault(int(det["image_id"]), []).append(det)
    labels, predictions = [], []
    for r in split.records:
        if r.image_id not in predicted:
            continue
        dets = by_image.get(r.image_id, [])
        xywh = torch.tensor([d["bbox"] for d in dets], dtype=torch.float32).reshape(-1, 4)
        file = names.get(r.image_id, r.path.name)
        labels.append(ImageBoxes(r.image_id, file, r.boxes, r.labels, ann_ids=r.ann_ids))
        predictions.append(ImageBoxes(
            r.image_id, file, xywh_to_xyxy(xywh).numpy(),
            np.array([label_of[d["category_id"]] for d in dets], dtype=np.int64),
            scores=np.array([d["score"] for d in dets], dtype=np.float64),
        ))
    return labels, predictions


def audit(
    config: str | Path,
    fit: Fit | None,
    folds: int = 5,
    epochs: int | None = None,
    seed: int = 0,
    show: int = 16,
    thresholds: tuple[float, float] | None = None,
    device: str = "auto",
    rank_only: bool = False,
    echo: Callable[[str], None] = print,
) -> AuditResult:
    """Audit the train split of ``config`` (module docstring); ``echo`` gets the progress lines.

    Args:
        fit: ``detector train ARGS`` in this process, returning the run's folder (unused with
            ``rank_only``).
        folds: k; each image is held out by exactly one fold.
        epochs: each fold's recipe length (default: the config's, at most :data:`AUDIT_EPOCHS`).
        seed: of the fold assignment.
        show: images in the picture.
        thresholds: cleanlab's ``(low, high)`` score thresholds (default: scaled to the fold
            models' scores, :func:`~detector.research.label_issues.model_thresholds`).
        rank_only: rank the predictions a previous audit saved, without training.
    """
    config = Path(config)
    parsed = read_config(config)
    split, names = _train_split(parsed)
    out = audit_folder(parsed.data.train_json)
    saved = out / "heldout_predictions.json"
    runs: list[RunFolder] = []
    if rank_only:
        if not saved.is_file():
            raise MissingFileError(f"{saved}: no saved held-out predictions; run the audit without --rank-only first")
        held = json.loads(saved.read_text())
    else:
        held = _train_folds(config, parsed, split, out, fit, folds, epochs, seed, device, runs, echo)
        saved.write_text(json.dumps(held))
    labels, predictions = _boxes(split, names, set(held["image_ids"]), held["detections"])
    low, high = thresholds or model_thresholds(labels, predictions)
    issues = rank_issues(labels, predictions, split.class_names, high_score=high, low_score=low)
    csv_path = write_issues(issues, out / "label_issues.csv")
    by_id = {r.image_id: r for r in split.records}
    figure = issue_grid(issues, {b.image_id: b for b in labels}, {b.image_id: b for b in predictions}, split.class_names,
                        lambda image_id: load_image(by_id[image_id].path), n=show)
    picture = save_figure(figure, out / "label_issues.png", dpi=100)
    return AuditResult(out, csv_path, picture, saved, issues, runs, (low, high))


def _train_folds(
    config: Path, parsed: Any, split: LoadedSplit, out: Path, fit: Fit | None, k: int, epochs: int | None, seed: int,
    device: str, runs: list[RunFolder], echo: Callable[[str], None],
) -> dict[str, Any]:
    """Train the k folds and predict each one's held-out images: ``{"image_ids", "detections",
    "runs"}`` (what ``heldout_predictions.json`` holds)."""
    if fit is None:
        raise ValueError("training the folds needs fit (detector train in this process)")
    name, root = run_section(config)
    epochs = epochs or _epochs(config, parsed)
    written = write_folds(Path(parsed.data.train_json), [r.image_id for r in split.records], k, out / "folds", seed)
    target = resolve_device(device)
    image_ids: list[int] = []
    detections: list[dict[str, Any]] = []
    for fold in written:
        echo(f"fold {fold.index}/{k}: training on {fold.train_images} images for {epochs} epochs, "
             f"holding out {fold.heldout_images} ({fold.heldout})")
        start = time.perf_counter()
        run = fit([
            "fit", "--config", str(config), "--run.root", str(root / "audit" / name), "--run.name", f"fold_{fold.index}",
            "--data.train_json", str(fold.train), "--data.val_json", str(fold.heldout), "--data.generate", "null",
            "--trainer.max_epochs", str(epochs),
        ])
        runs.append(run)
        coco, predicted, map_50 = _predict_fold(fold, run, target)
        image_ids += predicted
        detections += coco
        score = f"held-out mAP@0.5 {map_50:.3f}" if map_50 is not None else "no held-out mAP"
        echo(f"fold {fold.index}/{k} done in {duration(time.perf_counter() - start)}: {run.path} ({score}, "
             f"{len(coco)} held-out detections above {EVAL_SCORE})")
    return {"image_ids": image_ids, "detections": detections, "runs": [str(r.path) for r in runs]}
