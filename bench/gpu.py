"""One GPU session's measurements of the lesson's configuration, and the checks that need CUDA.

On a GPU session, one call of the device tool's ``run``; it imports torch and torchvision only
(with what they import: numpy, pillow), all on the device machine's image: no data, no network,
nothing to carry. $OUT/gpu.txt comes back even if the timeout kills the pipeline:

    command:   set -o pipefail; PYTHONUNBUFFERED=1 python3 bench/gpu.py 2>&1 | tee $OUT/gpu.txt
    timeout_s: 480

Expected: 1-3 minutes on one H200, imports and cuDNN warm-up included (an estimate: it has not yet
run on a GPU; the "checks" line prints the wall time). Each part fails alone: its error is printed
and the other parts still run. On a CPU, in seconds (batch 4, 32 px: the same three
grids, from the stride-8 map; 2 steps; fp32, and bf16-mixed where the CPU has bf16 instructions):

    python bench/gpu.py --tiny --threads 1      # ~15-25 s on a shared 2-core CPU, imports included

The model is configs/lesson9_ssd.yaml's: ResNet-34 body (random init), the lesson's head, 224 px,
189 anchors, C = 20, batch 64, SSDLoss with the lesson's settings (tanh coder, IoU 0.4, focal
alpha 0.25 gamma 2, summed over the batch). Data is synthetic, made once and kept on the device:
images ~ N(0, 1), 0..20 random boxes and labels per image (``tests/reference.py``'s random_targets).

1. train: a plain loop (forward, matching + loss, backward, Adam step) in fp32 (PyTorch's
   defaults: cuDNN convolutions in TF32), bf16-mixed and 16-mixed (torch.autocast; GradScaler for
   fp16), as Lightning's precision plugins do it; the head's outputs cast to float32 before the
   loss, as DetectorModule.training_step does. Images/s with cudnn.benchmark off (the Trainer's
   default) and on; peak memory (torch.cuda.max_memory_allocated over the part).
2. where a step goes, timed with CUDA events: network forward, matching + loss forward and backward
   (on detached outputs, so their backward is apart from the network's), network backward,
   optimiser; and an evaluation step, forward then decode + NMS (detector.core.postprocess, score > 0.01).
3. loss_vs_loop: the batched SSDLoss against the lesson's per-image loop (tests/reference.py) on the
   device, both reductions: the terms and the gradients agree (relative 1e-4), and the speed ratio.
4. focal_fp16: SSDLoss's class term (FocalBCESum) under fp16 autocast, from fp16 logits as the head
   gives them, cast to float32 as DetectorModule does (so the gradient reaching the head is fp16),
   the loss scaled by GradScaler's first scale 2**16 before backward, against float32 on the same
   values: value and gradient agree to 1e-3 (gradient: max |diff| / max |grad|, and
   elementwise over the gradients above 1e-3 of the largest), no inf/NaN.
5. nms_vs_torchvision: detector.core.postprocess of a batch (logits ~ N(-6, 1.5)) against decoding by
   tests/reference.py's actn_to_bb + torchvision.ops.batched_nms (top 50 per class before NMS, IoU
   0.4, 100 per image): the same kept boxes, scores and labels in every image; both times.

6. with --ddp: the two-process DDP check (tests/multinode.py: one_machine_check), in a process of
   its own (it needs Lightning and the package): ``detector train fit --trainer.accelerator gpu
   --trainer.devices N`` over every GPU of the machine (no strategy flag) on tiny shapes data through
   a frozen and an unfrozen stage; every rank holds the same weights at every step, the logged val
   mAP equals a one-process ``detector eval`` of the checkpoint, no warning about logging under DDP.
   Needs two GPUs or more (with one, it is recorded as not run); --tiny runs it on 2 CPU processes.

Prints a table per part as it finishes, then one JSON line; --json PATH writes the same object to
PATH, with a "summary" (img/s, peak memory, the matching + loss share of a training step and the
decode + NMS share of an evaluation step, per precision). Exit status 1 when a check fails or a part
raised; 2 without a GPU (unless --tiny or --device cpu). On a machine with GPUs, all of it is

    make gpu-check        # bench/gpu.py --ddp --json gpu-check.json
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]  # run from anywhere, installed or not; the oracle lives in tests/
from detector.core.anchors import AnchorConfig, Anchors, make_anchors  # noqa: E402
from detector.core.loss import SSDLoss  # noqa: E402
from detector.core.postprocess import postprocess  # noqa: E402
from detector.model import build_ssd  # noqa: E402
from detector.model.head import HeadConfig  # noqa: E402
from reference import actn_to_bb, random_targets, ssd_loss  # noqa: E402

# configs/lesson9_ssd.yaml's model (tests/bench/test_bench_gpu.py checks these against the file).
BACKBONE, IMAGE_SIZE, BATCH, NUM_CLASSES, MAX_OBJECTS = "resnet34", 224, 64, 20, 20
HEAD = dict(dropout=0.4, head_dropout=0.4, bias=-4.0, channels=256)
LOSS = dict(coder="tanh", iou_threshold=0.4, focal=True, alpha=0.25, gamma=2.0, reduction="lesson_sum")
POST = dict(score_threshold=0.01, iou_threshold=0.4, topk_per_class=50, max_per_image=100)
PRECISIONS = {"fp32": None, "bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}
TOLERANCE = {"loss_vs_loop": 1e-4, "focal_fp16": 1e-3}


@dataclass
class Settings:
    device: torch.device
    batch: int
    size: int
    warmup: int
    steps: int
    repeats: int
    precisions: list[str]


class Clock:
    """CUDA events on a GPU (``ms`` waits for the later one), ``perf_counter`` on a CPU."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"

    def mark(self):
        if not self.cuda:
            return time.perf_counter()
        event = torch.cuda.Event(enable_timing=True)
        event.record()
        return event

    def ms(self, start, end) -> float:
        if not self.cuda:
            return (end - start) * 1e3
        end.synchronize()
        return start.elapsed_time(end)


def median_ms(clock: Clock, spans: list[tuple]) -> float:
    return statistics.median(clock.ms(a, b) for a, b in spans)


def targets(batch: int, gen: torch.Generator, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """``boxes (B, M, 4)``, ``labels (B, M)`` with 0..MAX_OBJECTS objects per image, on ``device``."""
    counts = torch.randint(0, MAX_OBJECTS + 1, (batch,), generator=gen).tolist()
    boxes, labels = random_targets(counts, NUM_CLASSES, gen)
    return boxes.to(device), labels.to(device)


def train_part(s: Settings, precision: str, clock: Clock) -> dict:
    """Throughput, step sections, evaluation step and peak memory for one precision."""
    dev, dtype = s.device, PRECISIONS[precision]
    torch.manual_seed(0)
    if dev.type == "cuda":
        gc.collect()  # the last precision's model and optimiser state, before the peak is reset
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    model = build_ssd(NUM_CLASSES, BACKBONE, weights="none", image_size=s.size, anchors=AnchorConfig(),
                      head=HeadConfig(**HEAD)).to(dev).train()
    anchors = make_anchors().to(dev)
    criterion = SSDLoss(**LOSS)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    scaler = torch.amp.GradScaler(dev.type, enabled=dtype is torch.float16)
    gen = torch.Generator().manual_seed(0)
    batches = [(torch.randn(s.batch, 3, s.size, s.size, generator=gen).to(dev), *targets(s.batch, gen, dev))
               for _ in range(2)]

    def autocast():
        return torch.autocast(dev.type, dtype=dtype, enabled=dtype is not None)

    def step(i: int) -> torch.Tensor:
        images, boxes, labels = batches[i % len(batches)]
        with autocast():
            cls_logits, box_deltas = (t.float() for t in model(images))  # as DetectorModule: the loss in float32
            loss = criterion(cls_logits, box_deltas, anchors, boxes, labels)["loss"]
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
        return loss.detach()

    def throughput(benchmark: bool) -> float:
        torch.backends.cudnn.benchmark = benchmark
        for i in range(s.warmup):
            step(i)
        start = clock.mark()
        for i in range(s.steps):
            last = step(i)
        ms = clock.ms(start, clock.mark()) / s.steps
        losses.append(float(last))
        return ms

    losses: list[float] = []
    out: dict = {"step_ms": round(throughput(False), 2)}
    out["img_s"] = round(s.batch * 1e3 / out["step_ms"], 1)
    if dev.type == "cuda":
        ms = throughput(True)
        out["img_s_cudnn_benchmark"] = round(s.batch * 1e3 / ms, 1)
        torch.backends.cudnn.benchmark = False

    # One step in four sections (the loss's backward apart from the network's).
    names = ("forward", "matching+loss", "backward", "optimizer")
    marks = []
    for i in range(s.steps):
        images, boxes, labels = batches[i % len(batches)]
        m = [clock.mark()]
        with autocast():
            cls_logits, box_deltas = model(images)
        m.append(clock.mark())
        cls_d, box_d = (t.detach().float().requires_grad_() for t in (cls_logits, box_deltas))
        with autocast():
            loss = criterion(cls_d, box_d, anchors, boxes, labels)["loss"]
        scaler.scale(loss).backward()
        m.append(clock.mark())
        torch.autograd.backward([cls_logits, box_deltas], [cls_d.grad.to(cls_logits.dtype), box_d.grad.to(box_deltas.dtype)])
        m.append(clock.mark())
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
        m.append(clock.mark())
        marks.append(m)
    section = {n: median_ms(clock, [(m[j], m[j + 1]) for m in marks]) for j, n in enumerate(names)}
    total = sum(section.values())
    out["sections_ms"] = {n: round(v, 2) for n, v in section.items()}
    out["matching_loss_share"] = round(section["matching+loss"] / total, 4)

    # An evaluation step: forward, then decode + NMS on float32 activations (as DetectorModule does).
    model.eval()
    spans = []
    with torch.inference_mode():
        for i in range(s.warmup + s.steps):
            m0 = clock.mark()
            with autocast():
                cls_logits, box_deltas = model(batches[i % len(batches)][0])
            m1 = clock.mark()
            postprocess(cls_logits.float(), box_deltas.float(), anchors, coder=LOSS["coder"], **POST)
            m2 = clock.mark()
            if i >= s.warmup:
                spans.append((m0, m1, m2))
    forward, decode = median_ms(clock, [(a, b) for a, b, _ in spans]), median_ms(clock, [(b, c) for _, b, c in spans])
    out["eval_ms"] = {"forward": round(forward, 2), "decode+nms": round(decode, 2)}
    out["decode_nms_share"] = round(decode / (forward + decode), 4)
    out["loss_finite"] = all(torch.isfinite(torch.tensor(losses)).tolist())
    out["peak_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 3) if dev.type == "cuda" else None
    return out


def loss_vs_loop(s: Settings, clock: Clock) -> dict:
    """Batched SSDLoss vs the lesson's per-image loop on the device: terms, gradients, time."""
    dev = s.device
    anchors = make_anchors().to(dev)
    gen = torch.Generator().manual_seed(1)
    boxes, labels = targets(s.batch, gen, dev)
    cls_logits = (torch.randn(s.batch, len(anchors), NUM_CLASSES, generator=gen) - 3).to(dev).requires_grad_()
    box_deltas = torch.randn(s.batch, len(anchors), 4, generator=gen).to(dev).requires_grad_()
    kwargs = dict(threshold=LOSS["iou_threshold"], focal=LOSS["focal"], alpha=LOSS["alpha"], gamma=LOSS["gamma"])

    def fwd_bwd(fn: Callable) -> tuple[dict, torch.Tensor, torch.Tensor]:
        cls_logits.grad = box_deltas.grad = None
        terms = fn()
        terms["loss"].backward()
        return {k: v.detach() for k, v in terms.items()}, cls_logits.grad, box_deltas.grad

    out: dict = {}
    for reduction in ("lesson_sum", "mean"):
        criterion = SSDLoss(**{**LOSS, "reduction": reduction})
        fns = {  # called in this iteration only
            "batched": lambda criterion=criterion: criterion(cls_logits, box_deltas, anchors, boxes, labels),
            "loop": lambda r=reduction: ssd_loss(cls_logits, box_deltas, boxes, labels, anchors, reduction=r, **kwargs),
        }
        (tb, gcb, gbb), (tl, gcl, gbl) = fwd_bwd(fns["batched"]), fwd_bwd(fns["loop"])
        value = max(float((tb[k] - tl[k]).abs() / tl[k].abs().clamp(min=1e-12)) for k in tl)
        grad = max(float((gb - gl).abs().max() / gl.abs().max().clamp(min=1e-12)) for gb, gl in ((gcb, gcl), (gbb, gbl)))
        r = {"loss_batched": round(float(tb["loss"]), 6), "loss_loop": round(float(tl["loss"]), 6),
             "value_rel_diff": float(f"{value:.3g}"), "grad_rel_diff": float(f"{grad:.3g}")}
        r["pass"] = bool(value <= TOLERANCE["loss_vs_loop"] and grad <= TOLERANCE["loss_vs_loop"])
        if reduction == LOSS["reduction"]:  # time the configuration's reduction, alternating which goes first
            spans: dict[str, list] = {"batched": [], "loop": []}
            for rep in range(s.repeats):
                for name in ("batched", "loop") if rep % 2 == 0 else ("loop", "batched"):
                    start = clock.mark()
                    fwd_bwd(fns[name])
                    spans[name].append((start, clock.mark()))
            b, l = median_ms(clock, spans["batched"]), median_ms(clock, spans["loop"])
            r.update(batched_ms=round(b, 3), loop_ms=round(l, 3), speedup=round(l / b, 1))
        out[reduction] = r
    out["pass"] = all(r["pass"] for r in out.values())
    return out


def focal_fp16(s: Settings, clock: Clock) -> dict:
    """SSDLoss's class term and its gradient under fp16 autocast vs float32 on the same values."""
    dev = s.device
    anchors = make_anchors().to(dev)
    gen = torch.Generator().manual_seed(2)
    boxes, labels = targets(s.batch, gen, dev)
    logits = -4 + 2 * torch.randn(s.batch, len(anchors), NUM_CLASSES, generator=gen)
    extremes = torch.tensor([30.0, -30.0, 15.0, -15.0, 8.0, -8.0])  # saturated sigmoids, far from fp16's limits
    logits.view(-1)[torch.randperm(logits.numel(), generator=gen)[: len(extremes)]] = extremes
    logits16 = logits.half().to(dev)
    deltas16 = torch.randn(s.batch, len(anchors), 4, generator=gen).half().to(dev)
    criterion, scale = SSDLoss(**LOSS), 2.0**16  # GradScaler's first scale

    x32 = logits16.float().requires_grad_()
    v32 = criterion(x32, deltas16.float(), anchors, boxes, labels)["cls"]
    (v32 * scale).backward()
    x16 = logits16.clone().requires_grad_()
    with torch.autocast(dev.type, dtype=torch.float16):  # as DetectorModule: fp16 activations cast to float32
        v16 = criterion(x16.float(), deltas16.float(), anchors, boxes, labels)["cls"]
    (v16 * scale).backward()
    g32, g16 = x32.grad / scale, x16.grad.float() / scale

    diff = (g16 - g32).abs()
    big = g32.abs().max()
    above = g32.abs() >= 1e-3 * big
    out = {
        "value_fp32": float(v32.detach()), "value_fp16": float(v16.detach()),
        "value_rel_diff": float(f"{float((v16 - v32).detach().abs() / v32.detach().abs()):.3g}"),
        "grad_max_abs_diff": float(f"{float(diff.max()):.3g}"),
        "grad_rel_diff": float(f"{float(diff.max() / big):.3g}"),  # max |diff| / max |grad|
        "grad_max_elem_rel_diff": float(f"{float((diff[above] / g32.abs()[above]).max()):.3g}"),
        "finite": bool(torch.isfinite(v16) and torch.isfinite(x16.grad).all()),
        "value_dtype": str(v16.dtype).removeprefix("torch."), "grad_dtype": str(x16.grad.dtype).removeprefix("torch."),
    }
    tol = TOLERANCE["focal_fp16"]
    out["pass"] = out["finite"] and max(out["value_rel_diff"], out["grad_rel_diff"], out["grad_max_elem_rel_diff"]) <= tol
    return out


def nms_vs_torchvision(s: Settings, clock: Clock) -> dict:
    """detector.core.postprocess vs reference actn_to_bb + torchvision.ops.batched_nms: same detections?"""
    from torchvision.ops import batched_nms

    dev = s.device
    anchors = make_anchors().to(dev)
    A, B, C = len(anchors), s.batch, NUM_CLASSES
    gen = torch.Generator().manual_seed(3)
    cls_logits = (-6.0 + 1.5 * torch.randn(B, A, C, generator=gen)).to(dev)
    box_deltas = torch.randn(B, A, 4, generator=gen).to(dev)
    tiled = Anchors(anchors.cxcywh.repeat(B, 1), anchors.cell_size.repeat(B, 1), anchors.grids, anchors.k)

    def ours() -> list[dict]:
        return postprocess(cls_logits, box_deltas, anchors, coder=LOSS["coder"], **POST)

    def theirs() -> list[dict]:
        boxes = actn_to_bb(box_deltas.reshape(-1, 4), tiled).clamp(0, 1).view(B, A, 4)  # (B, A, 4)
        top_scores, top_anchors = cls_logits.sigmoid().transpose(1, 2).topk(min(POST["topk_per_class"], A), dim=2)
        image, label, rank = (top_scores > POST["score_threshold"]).nonzero(as_tuple=True)  # (K,) each
        scores, cand = top_scores[image, label, rank], boxes[image, top_anchors[image, label, rank]]  # (K,), (K, 4)
        keep = batched_nms(cand, scores, image * C + label, POST["iou_threshold"])  # score-descending
        keep = keep[torch.sort(image[keep], stable=True).indices]  # grouped by image, still score-descending
        counts = torch.bincount(image[keep], minlength=B)  # (B,)
        place = torch.arange(len(keep), device=dev) - (counts.cumsum(0) - counts)[image[keep]]  # rank in its image
        keep = keep[place < POST["max_per_image"]]
        per_image = counts.clamp(max=POST["max_per_image"]).tolist()
        parts = (t[keep].split(per_image) for t in (cand, scores, label))
        return [{"boxes": b, "scores": sc, "labels": lb} for b, sc, lb in zip(*parts)]

    def canonical(det: dict) -> dict:  # score-descending, ties by label
        order = torch.sort(det["labels"], stable=True).indices
        order = order[torch.sort(det["scores"][order], descending=True, stable=True).indices]
        return {k: v[order] for k, v in det.items()}

    with torch.inference_mode():
        results = {"ours": ours(), "torchvision": theirs()}  # also the warm-up
        spans: dict[str, list] = {name: [] for name in results}
        fns = {"ours": ours, "torchvision": theirs}
        for rep in range(s.repeats):
            for name in ("ours", "torchvision") if rep % 2 == 0 else ("torchvision", "ours"):
                start = clock.mark()
                fns[name]()
                spans[name].append((start, clock.mark()))
    same = 0
    for o, t in zip(results["ours"], results["torchvision"]):
        o, t = canonical(o), canonical(t)
        same += int(len(o["labels"]) == len(t["labels"]) and torch.equal(o["labels"], t["labels"])
                    and torch.allclose(o["scores"], t["scores"]) and torch.allclose(o["boxes"], t["boxes"], atol=1e-6))
    ours_ms, tv_ms = median_ms(clock, spans["ours"]), median_ms(clock, spans["torchvision"])
    return {
        "candidates_per_image": round(float((cls_logits.sigmoid() > POST["score_threshold"]).sum()) / B, 1),
        "detections_per_image": round(sum(len(d["scores"]) for d in results["ours"]) / B, 1),
        "images_same": same, "images": B, "ours_ms": round(ours_ms, 3), "torchvision_ms": round(tv_ms, 3),
        "pass": same == B,
    }


def default_precisions(device: torch.device) -> list[str]:
    """All three on a GPU (bf16 where it has it); on a CPU fp32, and bf16-mixed only where the CPU
    has bf16 instructions (without them, one bf16 ResNet-34 backward takes ~10 s on one core)."""
    if device.type == "cuda":
        return [p for p in PRECISIONS if p != "bf16-mixed" or torch.cuda.is_bf16_supported()]
    # private, so looked up with a fallback: the public get_cpu_capability() does not say bf16
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    native_bf16 = any(getattr(torch.cpu, probe, lambda: False)() for probe in probes)
    return ["fp32", "bf16-mixed"] if native_bf16 else ["fp32"]


def third_party_imports() -> list[str]:
    """Top-level modules loaded that are neither the standard library's nor this repository's."""
    names = {m.split(".")[0] for m, module in list(sys.modules.items()) if module is not None}  # None: blocked
    return sorted(n for n in names - set(sys.stdlib_module_names) - {"detector", "reference"} if not n.startswith("_"))


def print_train(name: str, r: dict) -> None:
    bench = f"{r['img_s_cudnn_benchmark']:>10.1f}" if "img_s_cudnn_benchmark" in r else f"{'-':>10}"
    mem = f"{r['peak_memory_gib']:>9.2f}" if r["peak_memory_gib"] is not None else f"{'-':>9}"
    sec = r["sections_ms"]
    print(f"{name:<11}{r['step_ms']:>9.1f}{r['img_s']:>9.1f}{bench}{mem}"
          + "".join(f"{sec[k]:>9.1f}" for k in sec)
          + f"{r['matching_loss_share']:>8.1%}{r['eval_ms']['forward']:>9.1f}{r['eval_ms']['decode+nms']:>9.1f}"
          + f"{r['decode_nms_share']:>8.1%}  {r['loss_finite']}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="batch 4, 32 px, 2 steps: a CPU smoke run in seconds")
    parser.add_argument("--device", default=None, help="default: cuda when available, else cpu (with --tiny only)")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--steps", type=int, default=None, help="timed steps per measurement (default 30; --tiny 2)")
    parser.add_argument("--precision", action="append", choices=list(PRECISIONS),
                        help="repeatable (default: all three on a GPU; on a CPU fp32, and bf16-mixed where it has bf16 "
                             "instructions)")
    parser.add_argument("--ddp", action="store_true",
                        help="also the two-process DDP check over every GPU (--tiny: 2 CPU processes); see 6. above")
    parser.add_argument("--json", metavar="PATH", help="write the result (the last line's JSON, with a summary) to PATH")
    args = parser.parse_args()
    started = time.perf_counter()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type != "cuda" and not args.tiny and args.device is None:
        print("bench/gpu.py: no GPU here (torch.cuda.is_available() is False): nothing measured. Run it on a machine "
              "with CUDA GPUs, or with --tiny on a CPU (or --device cpu for the full sizes)", file=sys.stderr)
        sys.exit(2)
    precisions = args.precision or default_precisions(device)
    if args.tiny:
        s = Settings(device, batch=4, size=32, warmup=1, steps=2, repeats=2, precisions=precisions)
    else:
        s = Settings(device, batch=BATCH, size=IMAGE_SIZE, warmup=5, steps=30, repeats=5, precisions=precisions)
    s.steps = args.steps or s.steps
    clock = Clock(device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"bench/gpu.py on {name}: torch {torch.__version__}, cuDNN {torch.backends.cudnn.version()}, "
          f"cudnn.allow_tf32 {torch.backends.cudnn.allow_tf32}, matmul.allow_tf32 {torch.backends.cuda.matmul.allow_tf32}, "
          f"torch threads {torch.get_num_threads()}; {BACKBONE} random init, {s.size} px, batch {s.batch}, "
          f"189 anchors, C = {NUM_CLASSES}, <= {MAX_OBJECTS} objects; {s.warmup} warm-up + {s.steps} timed steps",
          flush=True)

    errors: dict[str, str] = {}

    def part(label: str, fn: Callable, *fn_args):
        try:
            return fn(*fn_args)
        except Exception as error:  # noqa: BLE001 (one part's failure must not cost the session the others)
            traceback.print_exc()
            errors[label] = f"{type(error).__name__}: {error}"[:500]
            print(f"{label}: FAILED ({errors[label]})", flush=True)
            if device.type == "cuda":
                torch.cuda.empty_cache()
            return None

    results: dict = {}
    results["focal_fp16"] = r = part("focal_fp16", focal_fp16, s, clock)
    if r:
        print(f"\nfocal BCE under fp16 autocast vs float32 (same fp16 logits, grads scaled by 2**16): "
              f"value {r['value_fp32']:.6g} vs {r['value_fp16']:.6g} (rel {r['value_rel_diff']:.2g}); grad max abs diff "
              f"{r['grad_max_abs_diff']:.2g}, / max grad {r['grad_rel_diff']:.2g}, "
              f"elementwise {r['grad_max_elem_rel_diff']:.2g}; "
              f"finite {r['finite']}; tolerance {TOLERANCE['focal_fp16']:g}: {'PASS' if r['pass'] else 'FAIL'}", flush=True)
    results["loss_vs_loop"] = r = part("loss_vs_loop", loss_vs_loop, s, clock)
    if r:
        print(f"\nbatched SSDLoss vs the lesson's per-image loop on {device.type}, forward + backward, "
              f"median of {s.repeats}")
        print(f"{'reduction':<11}{'loss':>12}{'loop loss':>12}{'value rel':>11}{'grad rel':>10}{'batched ms':>12}"
              f"{'loop ms':>10}{'speedup':>9}  check")
        for red in ("lesson_sum", "mean"):
            x = r[red]
            times = f"{x['batched_ms']:>12.2f}{x['loop_ms']:>10.1f}{x['speedup']:>8.1f}x" if "speedup" in x else f"{'':>31}"
            print(f"{red:<11}{x['loss_batched']:>12.5g}{x['loss_loop']:>12.5g}{x['value_rel_diff']:>11.2g}"
                  f"{x['grad_rel_diff']:>10.2g}{times}  {'PASS' if x['pass'] else 'FAIL'}", flush=True)
    results["nms_vs_torchvision"] = r = part("nms_vs_torchvision", nms_vs_torchvision, s, clock)
    if r:
        print(f"\ndecode + NMS, batch {s.batch}: {r['candidates_per_image']:.0f} candidates -> "
              f"{r['detections_per_image']:.0f} detections per image; same as actn_to_bb + torchvision batched_nms in "
              f"{r['images_same']}/{r['images']} images: {'PASS' if r['pass'] else 'FAIL'}; "
              f"detector {r['ours_ms']:.2f} ms, torchvision {r['torchvision_ms']:.2f} ms (median of {s.repeats})",
              flush=True)

    print(f"\ntraining, per step (ms; sections median of {s.steps} steps, CUDA events on a GPU) and evaluation step")
    print(f"{'precision':<11}{'step ms':>9}{'img/s':>9}{'img/s cb':>10}{'peak GiB':>9}{'forward':>9}{'match+ls':>9}"
          f"{'backward':>9}{'optim':>9}{'m+l %':>8}{'eval fwd':>9}{'dec+nms':>9}{'d+n %':>8}  loss finite")
    skipped = [p for p in PRECISIONS if p not in s.precisions]
    if skipped:
        print(f"(not run here: {', '.join(skipped)}; --precision NAME asks for one)")
    results["train"] = {}
    for precision in s.precisions:
        results["train"][precision] = r = part(f"train {precision}", train_part, s, precision, clock)
        if r:
            print_train(precision, r)
    print("img/s cb: with cudnn.benchmark on; m+l %: matching + loss (forward and backward) of the sectioned step; "
          "d+n %: decode + NMS of the evaluation step (forward + decode + NMS)")

    trained = [r for r in results["train"].values() if r]
    peaks = [r["peak_memory_gib"] for r in trained if r["peak_memory_gib"] is not None]
    checks = {k: bool(results[k] and results[k]["pass"]) for k in ("focal_fp16", "loss_vs_loop", "nms_vs_torchvision")}
    checks["train_loss_finite"] = bool(trained) and all(r["loss_finite"] for r in trained)
    if args.ddp:
        results["ddp"] = r = part("ddp", ddp_check, device)
        if r and "not_run" not in r:
            checks["ddp"] = bool(r["passed"])
        elif not r:
            checks["ddp"] = False
    passed = all(checks.values()) and not errors
    wall = time.perf_counter() - started
    print(f"checks: {checks}; errors: {len(errors)}; wall {wall:.1f} s: {'PASS' if passed else 'FAIL'}")
    result = {
        "device": name, "torch": torch.__version__, "tiny": args.tiny,
        "config": {"backbone": BACKBONE, "image_size": s.size, "batch": s.batch, "steps": s.steps,
                   "precisions": s.precisions, "skipped_precisions": skipped},
        **results,
        "peak_memory_gib": max(peaks) if peaks else None,
        "imports": third_party_imports(), "checks": checks, "errors": errors, "passed": passed, "wall_s": round(wall, 1),
    }
    print(json.dumps(result))
    if args.json:
        write_json(Path(args.json), result)
        print(f"written: {args.json}")
    sys.exit(0 if passed else 1)


def ddp_check(device: torch.device) -> dict:
    """Part 6: tests/multinode.py's one-machine DDP check over every GPU (2 CPU processes on a CPU),
    run as a process of its own; prints one line."""
    import subprocess

    devices = torch.cuda.device_count() if device.type == "cuda" else 2
    if devices < 2:
        print(f"\nDDP check: not run ({devices} GPU: DDP needs two or more)", flush=True)
        return {"not_run": f"{devices} GPU: DDP needs two or more", "devices": devices}
    accelerator = "gpu" if device.type == "cuda" else "cpu"
    command = [sys.executable, str(REPO / "tests" / "multinode.py"), "--accelerator", accelerator, "--devices", str(devices)]
    proc = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=1800)
    lines = proc.stdout.strip().splitlines()
    try:
        out = json.loads(lines[-1])
    except (IndexError, json.JSONDecodeError):
        raise RuntimeError(f"{' '.join(command[1:])} exited {proc.returncode}: {(proc.stdout + proc.stderr)[-1500:]}") from None
    print(f"\nDDP check, {devices} x {accelerator}, no strategy flag: fit {out['fit_wall_s']} s, "
          f"rank differences {out.get('rank_differences')}, val mAP@0.5 logged {out.get('val_map_50_logged')} / "
          f"one-process eval {out.get('val_map_50_eval')}, sync_dist warning {out.get('sync_dist_warning')}: "
          f"{'PASS' if out['passed'] else 'FAIL'}", flush=True)
    return out


def summary(result: dict) -> dict:
    """Per precision: img/s (cudnn.benchmark off, and on where measured), peak memory, the matching +
    loss share of a training step and the decode + NMS share of an evaluation step."""
    keys = ("img_s", "img_s_cudnn_benchmark", "peak_memory_gib", "matching_loss_share", "decode_nms_share")
    return {precision: {k: r.get(k) for k in keys} for precision, r in (result.get("train") or {}).items() if r}


def write_json(path: Path, result: dict) -> None:
    """``result`` with its :func:`summary` first, as indented JSON at ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"summary": summary(result), **result}, indent=1) + "\n")


if __name__ == "__main__":
    main()
