"""A trained detector over a whole split: the metrics as a JSON-ready summary, COCO-format
detections, and the markdown table the commands print and the dashboards show.

``summary`` layout (what ``detector eval`` writes to ``metrics.json``): ``map``, ``map_50``,
``map_75``, ``voc07_map_50``, ``voc_map_50`` and ``per_class``: ``{class: {ap, ap_50, ap_75,
voc07_ap_50, voc_ap_50, objects}}``, with ``None`` for a value that is undefined (a class without
objects in the split).
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import torch
from tqdm import tqdm

from detector.core.boxes import xyxy_to_xywh
from detector.core.postprocess import to_pixels
from detector.data.dataset import targets_in_pixels
from detector.evaluation.metrics import DetectionMetrics, per_class

if TYPE_CHECKING:
    from detector.data.datamodule import DetectionDataModule

__all__ = ["Evaluation", "evaluate", "format_table", "summarize"]

_SUMMARY_KEYS = ("map", "map_50", "map_75", "voc07_map_50", "voc_map_50")


class Detects(Protocol):
    """What :func:`evaluate` needs of a model (a :class:`~detector.training.DetectorModule` is one)."""

    num_classes: int
    class_names: Sequence[str]

    def detect(self, images: torch.Tensor) -> list[dict[str, torch.Tensor]]:
        """``(B, 3, S, S)`` normalised images -> per image ``boxes`` ``(N, 4)`` xyxy in ``[0, 1]``,
        ``scores`` ``(N,)``, ``labels`` ``(N,)``."""
        ...

    def eval(self) -> Any: ...


def _number(x: Any) -> float | None:
    x = float(x)
    return None if math.isnan(x) else x


def summarize(result: dict[str, Any], class_names: Sequence[str]) -> dict[str, Any]:
    """:meth:`DetectionMetrics.compute`'s result -> the JSON-ready summary (module docstring)."""
    pc = per_class(result)
    summary: dict[str, Any] = {key: _number(result[key]) for key in _SUMMARY_KEYS}
    summary["per_class"] = {
        name: {
            "ap": _number(pc["map"][i]),
            "ap_50": _number(pc["map_50"][i]),
            "ap_75": _number(pc["map_75"][i]),
            "voc07_ap_50": _number(pc["voc07_map_50"][i]),
            "voc_ap_50": _number(pc["voc_map_50"][i]),
            "objects": int(pc["num_positives"][i]),
        }
        for i, name in enumerate(class_names)
    }
    return summary


@dataclass
class Evaluation:
    """What :func:`evaluate` found.

    Attributes:
        summary: the summary (module docstring) plus ``split``, ``json``, ``images`` (evaluated) and
            ``skipped_images`` (ids of images unreadable under ``on_bad_record: skip``).
        coco: the COCO results: ``image_id``, ``category_id`` (the JSON's id), ``bbox``
            ``[x, y, w, h]`` in original-image pixels, ``score``, which pycocotools'
            ``COCO.loadRes`` reads.
        detections, ground_truths: per evaluated image, in the split's order, in original-image
            pixels (what the curves of :mod:`detector.evaluation.curves` take).
        image_ids: the JSON's id of each of those images.
    """

    summary: dict[str, Any]
    coco: list[dict[str, Any]]
    detections: list[dict[str, torch.Tensor]]
    ground_truths: list[dict[str, torch.Tensor]]
    image_ids: list[int]


@torch.no_grad()
def evaluate(
    model: Detects, dm: DetectionDataModule, split: str, device: torch.device | str = "cpu", progress: bool = True
) -> Evaluation:
    """Run ``model`` over ``split`` of ``dm`` exactly as validation does (images only resized)."""
    dm.setup({"val": "validate", "test": "test"}.get(split, "fit"))
    loaded = dm.splits[split]
    metric = DetectionMetrics(model.num_classes).to(device)
    results: list[dict[str, Any]] = []
    skipped: list[int] = []
    image_ids: list[int] = []
    model.eval().to(device)
    for batch in tqdm(dm.eval_dataloader(split), desc=f"eval {split}", file=sys.stderr, disable=not progress):
        skipped += batch["skipped_ids"].tolist()
        if not len(batch["images"]):  # every image of the batch was skipped as unreadable
            continue
        batch = {k: v.to(device) for k, v in batch.items()}
        dets = to_pixels(model.detect(batch["images"]), batch["sizes"])
        metric.update(dets, targets_in_pixels(batch))
        image_ids += batch["image_ids"].tolist()
        for image_id, det in zip(batch["image_ids"].tolist(), dets):
            boxes, scores, labels = xyxy_to_xywh(det["boxes"]).tolist(), det["scores"].tolist(), det["labels"].tolist()
            for box, score, label in zip(boxes, scores, labels):
                results.append(
                    {
                        "image_id": image_id,
                        "category_id": loaded.category_ids[label],
                        "bbox": [round(v, 2) for v in box],
                        "score": round(score, 5),
                    }
                )
    summary = summarize(metric.compute(), model.class_names)
    summary.update(split=split, json=str(loaded.json_path), images=len(loaded.records) - len(skipped), skipped_images=skipped)
    detections, ground_truths = metric.per_image()
    return Evaluation(summary, results, detections, ground_truths, image_ids)


def format_table(summary: dict[str, Any]) -> str:
    """The summary's overall and per-class numbers as markdown tables, headed by the split and its
    image count when the summary has them (:func:`evaluate`'s does)."""

    def f(x: float | None) -> str:
        return "  n/a" if x is None else f"{x:.3f}"

    lines = []
    if "split" in summary:
        skipped = summary.get("skipped_images")
        note = f", {len(skipped)} skipped as unreadable" if skipped else ""
        lines += [f"{summary['split']}: {summary['images']} images ({summary['json']}){note}", ""]
    lines += [
        "| metric | value |",
        "|---|---|",
        f"| COCO mAP@[.5:.95] | {f(summary['map'])} |",
        f"| mAP@0.5 | {f(summary['map_50'])} |",
        f"| mAP@0.75 | {f(summary['map_75'])} |",
        f"| VOC07 11-point mAP@0.5 | {f(summary['voc07_map_50'])} |",
        f"| VOC all-point mAP@0.5 | {f(summary['voc_map_50'])} |",
        "",
        "| class | objects | AP | AP@0.5 | AP@0.75 | VOC07 AP@0.5 |",
        "|---|---|---|---|---|---|",
    ]
    for name, c in summary["per_class"].items():
        lines.append(f"| {name} | {c['objects']} | {f(c['ap'])} | {f(c['ap_50'])} | {f(c['ap_75'])} | {f(c['voc07_ap_50'])} |")
    return "\n".join(lines)
