"""Matching + SSD loss, forward and backward: the batched code vs the lesson's per-image loop.

    .venv/bin/python bench/loss.py [--threads 1] [--repeats 7] [--train-repeats 2] [--no-train-step] [--compile]

Batch 64 with 0..20 objects per image (random), C = 20, for the lesson's 189 anchors and for the
8,732 anchors of SSD300 (Liu et al. 2016). Each repeat times the batched ``SSDLoss`` and the loop
(``tests/reference.py``'s port of ``ssd_loss``) back to back, in alternating order; the table shows
the median. ``share_of_train_step`` divides the batched time at 189 anchors by one training step
(forward + loss + backward + Adam step) of ``detector.model.build_ssd(num_classes=20,
weights="none")`` at batch 64, 224 px. ``--compile`` adds a third column: the same ``SSDLoss``
under ``torch.compile(dynamic=True)`` (compiled once before timing; its one-time cost is printed),
which fuses the elementwise passes that bound the eager code at 189 anchors. Prints a table, then
one JSON line.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]  # run from anywhere, installed or not; the oracle lives in tests/
from detector.core.anchors import Anchors, make_anchors  # noqa: E402
from detector.core.loss import SSDLoss  # noqa: E402
from reference import random_targets, ssd_loss  # noqa: E402

BATCH, MAX_OBJECTS, NUM_CLASSES, IMAGE_SIZE = 64, 20, 20, 224


def ssd300_anchors() -> Anchors:
    """SSD300's 8,732 default boxes: grids 38, 19, 10, 5, 3, 1 with 4, 6, 6, 6, 4, 4 boxes per cell.

    Built with ``make_anchors`` one grid at a time and concatenated. Scales from ssd.pytorch's VOC
    config (``min_sizes`` 30, 60, 111, 162, 213, 264 and ``max_sizes`` 60 ... 315 on a 300 px image):
    per cell a square of side ``s = min/300``, a square of side ``sqrt(min * max)/300`` and the aspect
    ratios 2, 1/2 (and 3, 1/3 on the 6-box grids) at scale ``s``. ``Anchors.k`` holds one count
    per set, so the concatenation records 6, the most per cell; the loss never reads ``k``.
    """
    grids, ks = (38, 19, 10, 5, 3, 1), (4, 6, 6, 6, 4, 4)
    min_sizes, max_sizes = (30, 60, 111, 162, 213, 264), (60, 111, 162, 213, 264, 315)
    parts = []
    for g, k, lo, hi in zip(grids, ks, min_sizes, max_sizes):
        zoom = lo / 300 * g  # make_anchors' size = zoom * r / g
        big = math.sqrt(hi / lo)
        ratios = [(1.0, 1.0), (big, big), (1 / math.sqrt(2), math.sqrt(2)), (math.sqrt(2), 1 / math.sqrt(2))]
        if k == 6:
            ratios += [(1 / math.sqrt(3), math.sqrt(3)), (math.sqrt(3), 1 / math.sqrt(3))]
        parts.append(make_anchors(grids=(g,), zooms=(zoom,), ratios=ratios))
    anchors = Anchors(
        cxcywh=torch.cat([p.cxcywh for p in parts]),
        cell_size=torch.cat([p.cell_size for p in parts]),
        grids=grids,
        k=max(ks),
    )
    assert len(anchors) == 8732, len(anchors)
    return anchors


def batch(anchors: Anchors, seed: int):
    gen = torch.Generator().manual_seed(seed)
    counts = torch.randint(0, MAX_OBJECTS + 1, (BATCH,), generator=gen).tolist()
    boxes, labels = random_targets(counts, NUM_CLASSES, gen)
    cls_logits = torch.randn(BATCH, len(anchors), NUM_CLASSES, generator=gen) - 3
    box_deltas = torch.randn(BATCH, len(anchors), 4, generator=gen)
    return cls_logits.requires_grad_(), box_deltas.requires_grad_(), boxes, labels


def fwd_bwd(loss_fn: Callable, cls_logits, box_deltas, anchors, boxes, labels) -> float:
    cls_logits.grad = box_deltas.grad = None
    start = time.perf_counter()
    loss_fn(cls_logits, box_deltas, anchors, boxes, labels)["loss"].backward()
    return (time.perf_counter() - start) * 1e3


def loop_loss(cls_logits, box_deltas, anchors, boxes, labels) -> dict[str, torch.Tensor]:
    """The lesson's loop with the same ("mean") batch reduction as the batched default."""
    return ssd_loss(cls_logits, box_deltas, boxes, labels, anchors, reduction="mean")


def compare(anchors: Anchors, repeats: int, compiled: bool = False) -> dict[str, float]:
    """Median ms of batched, loop (and compiled batched), timed back to back in rotating order."""
    inputs = batch(anchors, seed=0)
    fns = {"batched": SSDLoss(), "loop": loop_loss}  # the defaults: tanh coder, focal, mean reduction
    if compiled:
        fns["compiled"] = torch.compile(SSDLoss(), dynamic=True)
    warm_up = {name: fwd_bwd(fn, *inputs[:2], anchors, *inputs[2:]) for name, fn in fns.items()}
    runs = {name: [] for name in fns}
    names = list(fns)
    for r in range(repeats):
        for name in names[r % len(names):] + names[: r % len(names)]:
            runs[name].append(fwd_bwd(fns[name], *inputs[:2], anchors, *inputs[2:]))
    b, l = statistics.median(runs["batched"]), statistics.median(runs["loop"])
    out = {"batched_ms": round(b, 3), "loop_ms": round(l, 3), "speedup": round(l / b, 1)}
    if compiled:
        c = statistics.median(runs["compiled"])
        out.update(compiled_ms=round(c, 3), compiled_speedup=round(l / c, 1), compile_s=round(warm_up["compiled"] / 1e3, 1))
    return out


TRAIN_STEP = "detector.model.build_ssd(num_classes=20, weights='none') (ResNet-34 + the lesson's head)"


def train_step_ms(repeats: int) -> float:
    """Median ms of one training step of :data:`TRAIN_STEP`: forward, loss, backward, Adam step."""
    from detector.model import build_ssd  # here, so that --no-train-step runs without the model

    model = build_ssd(num_classes=NUM_CLASSES, weights="none")
    anchors = make_anchors()
    criterion, optimizer = SSDLoss(), torch.optim.Adam(model.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(1)
    images = torch.randn(BATCH, 3, IMAGE_SIZE, IMAGE_SIZE, generator=gen)
    counts = torch.randint(0, MAX_OBJECTS + 1, (BATCH,), generator=gen).tolist()
    boxes, labels = random_targets(counts, NUM_CLASSES, gen)
    model.train()
    times = []
    for _ in range(repeats + 1):  # the first is a warm-up
        start = time.perf_counter()
        optimizer.zero_grad()
        cls_logits, box_deltas = model(images)
        criterion(cls_logits, box_deltas, anchors, boxes, labels)["loss"].backward()
        optimizer.step()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times[1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (default 1: the CPU is shared)")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--train-repeats", type=int, default=2)
    parser.add_argument("--no-train-step", action="store_true", help="skip the (slow) ResNet-34 training step")
    parser.add_argument("--compile", action="store_true", help="also time SSDLoss under torch.compile")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    results = {
        "anchors_189": compare(make_anchors(), args.repeats, args.compile),
        "anchors_8732": compare(ssd300_anchors(), args.repeats, args.compile),
    }
    print(f"matching + loss, forward + backward, batch {BATCH}, <= {MAX_OBJECTS} objects, C = {NUM_CLASSES}, "
          f"torch threads = {args.threads}, median of {args.repeats}")
    extra = f" {'compiled ms':>12} {'speedup':>8} {'compile s':>10}" if args.compile else ""
    print(f"{'anchors':>8} {'batched ms':>11} {'loop ms':>10} {'speedup':>8}" + extra)
    for name, r in results.items():
        row = f"{name.split('_')[1]:>8} {r['batched_ms']:>11.2f} {r['loop_ms']:>10.1f} {r['speedup']:>7.1f}x"
        if args.compile:
            row += f" {r['compiled_ms']:>12.2f} {r['compiled_speedup']:>7.1f}x {r['compile_s']:>10.1f}"
        print(row)
    share = None
    if not args.no_train_step:
        step_ms = train_step_ms(args.train_repeats)
        share = round(results["anchors_189"]["batched_ms"] / step_ms, 5)
        print(f"one training step of {TRAIN_STEP}, batch {BATCH}, {IMAGE_SIZE} px: {step_ms:.0f} ms "
              f"(median of {args.train_repeats}); batched matching + loss = {100 * share:.3f} % of it")
    print(json.dumps({**results, "share_of_train_step": share}))


if __name__ == "__main__":
    main()
