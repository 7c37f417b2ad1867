"""Decode + per-class NMS of a batch: ``detector.core.postprocess`` vs the lesson's per-image, per-class loop.

    .venv/bin/python bench/postprocess.py [--threads 1] [--repeats 7] [--score-threshold 0.01]

Batch 64, the lesson's 189 anchors, C = 20. Class logits ~ N(-6, 1.5), so about 650 (anchor, class)
pairs per image pass the evaluation threshold 0.01 (about 2 per image pass the picture threshold
0.25: ``--score-threshold 0.25``); box activations ~ N(0, 1). The loop is ``tests/reference.py``'s
port of the lesson's ``show_nmf`` + ssd.pytorch's greedy ``nms`` (the kept box against all the
remaining ones at each step). Each repeat times both back to back, alternating which goes first; the table shows medians.
Prints a table, then one JSON line.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]  # run from anywhere, installed or not; the oracle lives in tests/
from detector.core.anchors import make_anchors  # noqa: E402
from detector.core.postprocess import postprocess  # noqa: E402
from reference import postprocess as loop_postprocess  # noqa: E402

BATCH, NUM_CLASSES = 64, 20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (default 1: the CPU is shared)")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--score-threshold", type=float, default=0.01)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    anchors = make_anchors()
    gen = torch.Generator().manual_seed(0)
    cls_logits = -6.0 + 1.5 * torch.randn(BATCH, len(anchors), NUM_CLASSES, generator=gen)
    box_deltas = torch.randn(BATCH, len(anchors), 4, generator=gen)
    kwargs = dict(score_threshold=args.score_threshold, iou_threshold=0.4, topk_per_class=50, max_per_image=100)
    runs = {
        "batched": lambda: postprocess(cls_logits, box_deltas, anchors, **kwargs),
        "loop": lambda: loop_postprocess(cls_logits, box_deltas, anchors, **kwargs),
    }
    times: dict[str, list[float]] = {name: [] for name in runs}
    with torch.inference_mode():
        outputs = {name: fn() for name, fn in runs.items()}  # warm-up
        for r in range(args.repeats):
            for name in ("batched", "loop") if r % 2 == 0 else ("loop", "batched"):
                start = time.perf_counter()
                runs[name]()
                times[name].append((time.perf_counter() - start) * 1e3)
    same = all(
        torch.equal(b["labels"], l["labels"]) and torch.allclose(b["scores"], l["scores"])
        for b, l in zip(outputs["batched"], outputs["loop"])
    )
    candidates = (cls_logits.sigmoid() > args.score_threshold).sum().item() / BATCH
    detections = sum(len(d["scores"]) for d in outputs["batched"]) / BATCH
    b, l = statistics.median(times["batched"]), statistics.median(times["loop"])

    print(f"decode + NMS, batch {BATCH}, {len(anchors)} anchors, C = {NUM_CLASSES}, score > {args.score_threshold}: "
          f"{candidates:.0f} candidates -> {detections:.0f} detections per image; "
          f"torch threads = {args.threads}, median of {args.repeats}; same detections as the loop: {same}")
    print(f"{'batched ms':>11} {'loop ms':>10} {'speedup':>8}")
    print(f"{b:>11.2f} {l:>10.1f} {l / b:>7.1f}x")
    print(json.dumps({"batched_ms": round(b, 3), "loop_ms": round(l, 3), "speedup": round(l / b, 1)}))


if __name__ == "__main__":
    main()
