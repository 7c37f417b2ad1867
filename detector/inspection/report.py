"""A look at a config's training data before training it (``detector data report CONFIG``): PNGs of
objects per class, box sizes and aspect ratios relative to the image, objects per image, example
images with their boxes, and how well the config's anchors cover the boxes (``anchors: auto``: the
anchors it chooses); ``report.txt`` holds the numbers. The pictures are drawn by
:mod:`detector.pictures.report`, lazily imported.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from jsonargparse import Namespace

from detector.autoanchor.choice import AUTO, anchor_settings, resolve_auto_anchors, squashed_boxes, train_split
from detector.autoanchor.fit import best_anchor_iou
from detector.data.image import load_image
from detector.data.records import LoadedSplit

__all__ = ["default_folder", "write_report"]


def default_folder(config: Namespace) -> Path:
    """Where the report goes without ``--out``: ``report/`` beside the training JSON."""
    return Path(config.data.train_json).parent / "report"


def write_report(config: Namespace, source: str, out: Path, examples: int = 16) -> list[Path]:
    """Write the report of the parsed ``config`` (read from ``source``) into ``out``; returns the files.

    Files: ``classes.png``, ``box_shapes.png``, ``objects_per_image.png``, ``examples.png``,
    ``anchor_coverage.png``, ``report.txt``.
    """
    from detector.pictures import ground_truth_grid, save_figure
    from detector.pictures.report import (
        anchor_coverage_figure,
        box_shape_figure,
        class_count_figure,
        objects_per_image_figure,
    )

    auto = anchor_settings(config.model)[0] == AUTO
    resolve_auto_anchors(config)
    anchors, size, threshold = anchor_settings(config.model)
    split = train_split(config.data.as_dict())
    names, C = split.class_names, len(split.class_names)
    boxes_t, labels_t = squashed_boxes(split)
    boxes, labels = boxes_t.numpy(), labels_t.numpy()  # (N, 4), (N,)
    made = anchors.make()
    best = best_anchor_iou(boxes_t, made).numpy()  # (N,)
    counts = np.array([len(r.labels) for r in split.records])  # (I,)
    objects = np.bincount(labels, minlength=C)  # (C,)
    images = np.array([sum(bool((r.labels == c).any()) for r in split.records) for c in range(C)])  # (C,)
    where = f"{split.json_path.name} ({len(split.records)} images, {len(boxes)} boxes)"
    anchor_text = (f"{'anchors: auto -> ' if auto else ''}{len(made)} anchors at {size} px "
                   f"(grids {list(anchors.grids)}, k = {made.k})")
    covered = float((best > threshold).mean()) if len(best) else float("nan")
    out.mkdir(parents=True, exist_ok=True)
    shapes = torch.unique(made.cxcywh[:, 2:], dim=0).numpy()  # (K, 2) distinct anchor widths and heights
    figures = {
        "classes.png": class_count_figure(objects, images, names, f"{where}: objects per class"),
        "box_shapes.png": box_shape_figure(boxes, labels, names, size, shapes, f"{where}: box sizes relative to the image; {anchor_text}"),
        "objects_per_image.png": objects_per_image_figure(counts, f"{where}: objects per image"),
        "examples.png": _examples(split, examples, ground_truth_grid),
        "anchor_coverage.png": anchor_coverage_figure(
            best, labels, names, threshold,
            f"{where}: {anchor_text}: {100 * covered:.1f} % of the boxes have an anchor at IoU > {threshold:g}",
        ),
    }
    # the photographs in 256 colours: a third of the size, the same to the eye
    written = [save_figure(fig, out / name, dpi=100, palette=256 if name == "examples.png" else None) for name, fig in figures.items()]
    text = _numbers(where, anchor_text, boxes, labels, names, counts, objects, images, best, threshold)
    (out / "report.txt").write_text(text + "\n")
    return [*written, out / "report.txt"]


def _examples(split: LoadedSplit, n: int, grid):  # -> Figure
    """``n`` images spread evenly through the split, drawn at their own shape with their boxes."""
    pick = sorted(set(np.linspace(0, len(split.records) - 1, min(n, len(split.records))).round().astype(int)))
    pictures, targets, titles = [], [], []
    for i in pick:
        r = split.records[i]
        image = load_image(r.path, min_side=400)  # large photos decoded at a fraction of their size
        scale = np.array([image.shape[1] / r.width, image.shape[0] / r.height] * 2, dtype=np.float32)
        pictures.append(image)
        targets.append({"boxes": r.boxes * scale, "labels": r.labels, "difficult": r.difficult})
        titles.append(f"{r.path.name} ({len(r.labels)} object{'' if len(r.labels) == 1 else 's'})")
    fig = grid(pictures, targets, split.class_names, titles=titles)
    fig.suptitle(f"{split.json_path.name}: {len(pick)} of {len(split.records)} images, evenly spaced (dashed: difficult)", fontsize=11)
    fig.tight_layout(rect=(0, 0, 1, 0.98))
    return fig


def _numbers(
    where: str, anchor_text: str, boxes: np.ndarray, labels: np.ndarray, names: list[str], counts: np.ndarray,
    objects: np.ndarray, images: np.ndarray, best: np.ndarray, threshold: float,
) -> str:
    """``report.txt``: the pictures' numbers as a few lines and a per-class table."""
    wh = boxes[:, 2:] - boxes[:, :2]  # (N, 2)
    q = (0.01, 0.5, 0.99)

    def quantiles(v: np.ndarray) -> str:
        return ", ".join(f"{x:.3f}" for x in np.quantile(v, q)) if len(v) else "n/a"

    lines = [
        where,
        f"objects per image: mean {counts.mean():.2f}, max {counts.max(initial=0)}, images without objects {int((counts == 0).sum())}",
        f"box width / image width, 1 % / median / 99 %: {quantiles(wh[:, 0])}",
        f"box height / image height, 1 % / median / 99 %: {quantiles(wh[:, 1])}",
        f"height / width after the squash, 1 % / median / 99 %: {quantiles(wh[:, 1] / wh[:, 0])}",
        f"{anchor_text}: {100 * float((best > threshold).mean()):.1f} % of the boxes have an anchor at IoU > {threshold:g}",
        "",
        f"| class | objects | images | boxes with no anchor at IoU > {threshold:g} |",
        "|---|---|---|---|",
    ]
    for c, name in enumerate(names):
        missed = int((best[labels == c] <= threshold).sum())
        share = f"{100 * missed / objects[c]:.1f} %" if objects[c] else "n/a"
        lines.append(f"| {name} | {objects[c]} | {images[c]} | {missed} ({share}) |")
    return "\n".join(lines)
