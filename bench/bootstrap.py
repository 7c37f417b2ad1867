"""A bootstrap resample's COCO mAP: pycocotools on the resampled split against
``detector.evaluation.coco_matches`` (pycocotools' per-image matches once, re-accumulated per resample).

    .venv/bin/python bench/bootstrap.py [--images 72] [--objects 14] [--detections 100] [--resamples 1000] [--threads 1]

A synthetic split shaped like BCCD's test split (72 images, about 14 objects of 3 classes per image,
100 detections per image as the imported configs keep): the detections are jittered copies of the
objects, some with the wrong class, with random scores. Times, on one resample written out as copies
of the images, (1) ``DetectionMetrics`` (torchmetrics + pycocotools + the VOC AP, what ``detector
eval`` runs) and (2) pycocotools' ``COCOeval`` alone (evaluate, accumulate, summarize); then (3)
``match_images`` once per run and (4) ``CocoMatches.metrics`` for ``--resamples`` resamples at
once; checks that (4) gives (1)'s numbers on the first resample. Prints a table, then one JSON line.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
import time
from pathlib import Path

import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO)]  # run from anywhere, installed or not

from detector.evaluation.bootstrap import draw_counts  # noqa: E402
from detector.evaluation.coco_matches import METRICS, match_images  # noqa: E402
from detector.evaluation.metrics import DetectionMetrics  # noqa: E402

CLASSES = 3


def synthetic_split(images: int, objects: int, detections: int, seed: int = 0) -> tuple[list[dict], list[dict]]:
    """Per image ``objects`` boxes (Poisson count) in a 640x480 picture and ``detections`` detections."""
    g = torch.Generator().manual_seed(seed)
    preds, targets = [], []
    for _ in range(images):
        m = int(torch.poisson(torch.tensor(float(objects)), generator=g))
        xy = torch.rand(m, 2, generator=g) * torch.tensor([560.0, 400.0])
        boxes = torch.cat([xy, xy + 20 + torch.rand(m, 2, generator=g) * 80], 1)
        labels = torch.randint(0, CLASSES, (m,), generator=g)
        copies = torch.randint(0, max(m, 1), (detections,), generator=g)
        d_boxes = (boxes[copies] if m else torch.zeros(detections, 4)) + torch.randn(detections, 4, generator=g) * 12
        d_boxes[:, 2:] = torch.maximum(d_boxes[:, 2:], d_boxes[:, :2] + 2)
        d_labels = labels[copies] if m else torch.zeros(detections, dtype=torch.int64)
        wrong = torch.rand(detections, generator=g) < 0.2
        d_labels = torch.where(wrong, torch.randint(0, CLASSES, (detections,), generator=g), d_labels)
        preds.append({"boxes": d_boxes, "scores": torch.rand(detections, generator=g), "labels": d_labels})
        targets.append({"boxes": boxes, "labels": labels, "difficult": torch.zeros(m, dtype=torch.bool)})
    return preds, targets


def pycocotools_map(preds: list[dict], targets: list[dict]) -> float:
    """COCOeval's mAP of per-image boxes (image ids 0..N-1), as its own API computes it."""
    gt, dt = [], []
    for i, (p, t) in enumerate(zip(preds, targets)):
        for box, label in zip(t["boxes"].tolist(), t["labels"].tolist()):
            w, h = box[2] - box[0], box[3] - box[1]
            gt.append({"id": len(gt) + 1, "image_id": i, "category_id": label, "bbox": [box[0], box[1], w, h], "area": w * h, "iscrowd": 0})
        for box, label, score in zip(p["boxes"].tolist(), p["labels"].tolist(), p["scores"].tolist()):
            dt.append({"image_id": i, "category_id": label, "bbox": [box[0], box[1], box[2] - box[0], box[3] - box[1]], "score": score})
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = {"images": [{"id": i} for i in range(len(targets))], "annotations": gt,
                        "categories": [{"id": c} for c in range(CLASSES)]}
        coco.createIndex()
        evaluation = COCOeval(coco, coco.loadRes(dt), "bbox")
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    return float(evaluation.stats[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=72)
    parser.add_argument("--objects", type=int, default=14)
    parser.add_argument("--detections", type=int, default=100)
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (default 1: the CPU is shared)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    preds, targets = synthetic_split(args.images, args.objects, args.detections)
    counts = draw_counts(args.images, args.resamples, torch.Generator().manual_seed(0))

    started = time.perf_counter()
    metric = DetectionMetrics(CLASSES)
    first = counts[0].long().tolist()
    metric.update(
        [p for p, n in zip(preds, first) for _ in range(n)], [t for t, n in zip(targets, first) for _ in range(n)]
    )
    expected = metric.compute()
    metrics_s = time.perf_counter() - started
    started = time.perf_counter()
    coco_map = pycocotools_map(
        [p for p, n in zip(preds, first) for _ in range(n)], [t for t, n in zip(targets, first) for _ in range(n)]
    )
    pycocotools_s = time.perf_counter() - started

    started = time.perf_counter()
    matches = match_images(preds, targets, CLASSES)
    match_s = time.perf_counter() - started
    started = time.perf_counter()
    found = matches.metrics(counts)
    resample_s = time.perf_counter() - started
    gap = max(abs(float(found[k][0]) - float(expected[k])) for k in METRICS)

    gap = max(gap, abs(float(found["map"][0]) - coco_map))
    rows = [
        ("DetectionMetrics (torchmetrics, pycocotools, VOC AP) on one resample", metrics_s, metrics_s * args.resamples),
        ("COCOeval alone on one resample", pycocotools_s, pycocotools_s * args.resamples),
        ("match_images once (pycocotools evaluate)", match_s, match_s),
        (f"CocoMatches.metrics, {args.resamples} resamples", resample_s / args.resamples, resample_s),
    ]
    print(f"{args.images} images, {sum(len(t['labels']) for t in targets)} objects, {args.images * args.detections} detections, "
          f"{CLASSES} classes; {args.threads} thread(s)")
    print("| what | per resample (s) | per run, all resamples (s) |\n|---|---|---|")
    for what, each, total in rows:
        print(f"| {what} | {each:.4f} | {total:.1f} |")
    print(f"largest difference from pycocotools on the first resample: {gap:.2e} (map {float(expected['map']):.4f})")
    print(json.dumps({"images": args.images, "resamples": args.resamples, "detection_metrics_s": metrics_s, "pycocotools_s": pycocotools_s, "match_s": match_s,
                      "resamples_s": resample_s, "max_abs_difference": gap}))


if __name__ == "__main__":
    main()
