"""How well an anchor set fits a split's objects: positive anchors per object, each object's best
IoU with any anchor, and the objects that only their forced anchor covers or that no anchor covers
(``detector inspect matches`` prints it for a config's training split)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from detector.core.anchors import Anchors
from detector.core.boxes import batched_box_iou
from detector.core.matching import FORCED_OVERLAP, Matching, match
from detector.data.records import LoadedSplit
from detector.defaults import ATSS_TOPK

__all__ = ["format_statistics", "match_statistics"]


@torch.no_grad()
def match_statistics(
    split: LoadedSplit,
    anchors: Anchors,
    iou_threshold: float,
    chunk: int = 256,
    matching: Matching = "fixed",
    atss_topk: int = ATSS_TOPK,
) -> dict[str, Any]:
    """How the anchors match every object of ``split``, images squashed to a square as the network
    sees them (so a box's ``[0, 1]`` coordinates are its pixels divided by the image's size), by the
    loss's matching (``matching``, ``atss_topk``: :func:`detector.core.matching.match`).

    Returns:
        ``objects``; ``positives_per_object`` (mean, min, max positive anchors per object);
        ``best_iou``: the mean over objects of their best IoU with any anchor; ``forced_only``:
        objects whose only positive is an anchor forced to them (``"fixed"``: their best IoU with
        any anchor is ``<= iou_threshold``; ``"atss"``: no candidate passed their adaptive
        threshold with its centre inside them); ``unmatched``: objects with no positive anchor at
        all (``"fixed"``: their best anchor went to a later object, as the lesson's rule has it,
        and no anchor passes the threshold); ``per_class``: ``{name: (objects, forced_only, unmatched)}``.
    """
    positives: list[torch.Tensor] = []
    best_iou: list[torch.Tensor] = []
    labels_all: list[torch.Tensor] = []
    forced_all: list[torch.Tensor] = []
    records = [r for r in split.records if len(r.boxes)]
    for start in range(0, len(records), chunk):
        batch = records[start : start + chunk]
        M = max(len(r.boxes) for r in batch)
        boxes = torch.zeros(len(batch), M, 4)  # (B, M, 4) in [0, 1]
        labels = torch.full((len(batch), M), -1, dtype=torch.int64)  # (B, M)
        for i, r in enumerate(batch):
            scale = np.array([r.width, r.height, r.width, r.height], dtype=np.float32)
            boxes[i, : len(r.boxes)] = torch.tensor(r.boxes / scale)
            labels[i, : len(r.boxes)] = torch.tensor(r.labels)  # a copy: records hold read-only arrays
        m = match(anchors, boxes, labels, iou_threshold, matching, atss_topk)
        real = labels >= 0  # (B, M)
        owned = torch.nn.functional.one_hot(m.matched_idx, M).bool() & m.positive[:, :, None]  # (B, A, M)
        positives.append(owned.sum(dim=1)[real])  # (N,) positive anchors per object
        if matching != "fixed":  # ATSS forces only the objects it leaves without a positive
            forced = owned & (m.overlap == FORCED_OVERLAP)[:, :, None]  # (B, A, M)
            forced_all.append(forced.any(dim=1)[real])  # (N,)
        best_iou.append(batched_box_iou(boxes, anchors.xyxy).amax(dim=2)[real])  # (N,)
        labels_all.append(labels[real])
    if not positives:
        return {"objects": 0, "positives_per_object": (0.0, 0, 0), "best_iou": float("nan"), "forced_only": 0,
                "unmatched": 0, "per_class": {}}
    count, iou, labels = torch.cat(positives), torch.cat(best_iou), torch.cat(labels_all)  # (N,) each
    only = torch.cat(forced_all) if forced_all else (iou <= iou_threshold) & (count > 0)  # (N,)
    none = count == 0  # (N,)
    per_class = {
        name: (int((labels == c).sum()), int((only & (labels == c)).sum()), int((none & (labels == c)).sum()))
        for c, name in enumerate(split.class_names)
    }
    return {
        "objects": len(count),
        "positives_per_object": (float(count.float().mean()), int(count.min()), int(count.max())),
        "best_iou": float(iou.mean()),
        "forced_only": int(only.sum()),
        "unmatched": int(none.sum()),
        "per_class": per_class,
    }


def format_statistics(
    stats: dict[str, Any],
    anchors: Anchors,
    iou_threshold: float,
    split: LoadedSplit,
    source: str = "",
    matching: Matching = "fixed",
    atss_topk: int = ATSS_TOPK,
) -> str:
    """:func:`match_statistics`' numbers as text: a summary, then a table per class; ``source`` (e.g.
    the config's path and a colon) starts the first line."""
    n = stats["objects"]
    mean, low, high = stats["positives_per_object"]

    def pct(part: int, whole: int) -> str:
        return f"{100 * part / whole:.1f} %" if whole else "n/a"

    if matching == "fixed":
        rule, forced_why = f"IoU threshold {iou_threshold}", f"best IoU <= {iou_threshold}"
        none_why = "their best anchor went to another object"
    else:
        rule, forced_why = f"ATSS, {atss_topk} candidates per grid", "no candidate passed their ATSS threshold"
        none_why = "no anchor left to force"
    lines = [
        f"{source}{len(anchors)} anchors (grids {list(anchors.grids)}, k = {anchors.k}), {rule}, {split.json_path}",
        f"objects: {n}; positive anchors per object: mean {mean:.2f}, min {low}, max {high}; "
        f"best anchor IoU per object: mean {stats['best_iou']:.3f}",
        f"objects covered only by their forced anchor ({forced_why}): "
        f"{stats['forced_only']} ({pct(stats['forced_only'], n)})",
        f"objects with no positive anchor ({none_why}): {stats['unmatched']} ({pct(stats['unmatched'], n)})",
        "",
        "| class | objects | forced only | no anchor |",
        "|---|---|---|---|",
    ]
    lines += [f"| {name} | {c} | {f} ({pct(f, c)}) | {u} ({pct(u, c)}) |" for name, (c, f, u) in stats["per_class"].items()]
    return "\n".join(lines)
