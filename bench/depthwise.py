"""What fixing the body's depthwise kernels (``train_depthwise: false``) saves in a shapes training step.

    .venv/bin/python bench/depthwise.py [--steps 12] [--batch-size 16]

On this CPU (oneDNN, channels_last) the backward pass of a depthwise convolution costs ~10x its
forward, almost all of it in the kernel's gradient; the input's gradient costs about one forward.
Times, for each depthwise conv shape in configs/shapes.yaml's trainable body group, the forward,
the backward with both gradients and the backward with the input's gradient only; then whole
training steps of the shapes model in its main stage (``bench/shapes_step.py``) with the depthwise
kernels training and fixed, and with ``norm_eval`` on top, interleaved step by step in one
process; medians. Prints tables, then one
JSON line.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from shapes_step import interleaved_step_ms, main_stage_model, random_batch, shapes_init
from torch import nn

from detector.training.tasks.detection import DetectorModule

VARIANTS = {  # name: (train_depthwise, norm_eval)
    "depthwise kernels train": (True, False),
    "depthwise kernels fixed": (False, False),
    "fixed + norm_eval": (False, True),
}


def median_ms(fn: Callable[[], object], repeats: int) -> float:
    for _ in range(2):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def depthwise_convs(model: DetectorModule, images: torch.Tensor) -> list[tuple[nn.Conv2d, torch.Tensor]]:
    """Each depthwise conv of the trainable body group, with the input it gets from ``images``."""
    convs = [m for m in model.model.layer_groups[1].modules() if isinstance(m, nn.Conv2d) and 1 < m.groups == m.in_channels]
    inputs: dict[nn.Conv2d, torch.Tensor] = {}
    hooks = [c.register_forward_pre_hook(lambda m, a: inputs.setdefault(m, a[0].detach())) for c in convs]
    with torch.no_grad():
        model(images)
    for h in hooks:
        h.remove()
    return [(c, inputs[c]) for c in convs]


def layer_table(model: DetectorModule, images: torch.Tensor, repeats: int) -> list[dict]:
    rows = []
    for conv, x in depthwise_convs(model, images):
        w = conv.weight.detach()
        args = (conv.stride, conv.padding, conv.dilation, False, [0, 0], conv.groups)
        y = F.conv2d(x, w, None, conv.stride, conv.padding, conv.dilation, conv.groups)
        g = torch.randn_like(y)

        def backward(mask: list[bool], g=g, x=x, w=w, args=args) -> Callable[[], object]:  # this layer's tensors
            return lambda: torch.ops.aten.convolution_backward(g, x, w, None, *args, mask)

        rows.append({
            "shape": f"{tuple(x.shape[1:])} k{w.shape[-1]} s{conv.stride[0]}",
            "forward": median_ms(lambda x=x, w=w, c=conv: F.conv2d(x, w, None, c.stride, c.padding, c.dilation, c.groups), repeats),
            "backward": median_ms(backward([True, True, False]), repeats),
            "input grad only": median_ms(backward([True, False, False]), repeats),
        })
    return rows


def train_step_ms(steps: int, batch_size: int) -> dict[str, float]:
    models = {name: main_stage_model(train_depthwise=dw, norm_eval=ne) for name, (dw, ne) in VARIANTS.items()}
    return interleaved_step_ms(models, random_batch(batch_size, shapes_init()["image_size"]), steps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=12, help="training steps per variant")
    parser.add_argument("--repeats", type=int, default=10, help="repeats per layer timing")
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args()
    size = shapes_init()["image_size"]
    images, _, _ = random_batch(args.batch_size, size)
    model = main_stage_model(train_depthwise=True, norm_eval=False)
    rows = layer_table(model, images.contiguous(memory_format=torch.channels_last), args.repeats)
    print(f"depthwise convs of the trainable body group, batch {args.batch_size} at {size} px, {torch.get_num_threads()} threads (ms, medians)")
    print("| input (C, H, W), kernel, stride | forward | backward | backward, input grad only |\n|---|---|---|---|")
    for r in rows:
        print(f"| {r['shape']} | {r['forward']:.2f} | {r['backward']:.2f} | {r['input grad only']:.2f} |")
    total = {k: sum(r[k] for r in rows) for k in ("forward", "backward", "input grad only")}
    print(f"| all {len(rows)} | {total['forward']:.1f} | {total['backward']:.1f} | {total['input grad only']:.1f} |")
    steps = train_step_ms(args.steps, args.batch_size)
    print(f"\nshapes training step (main stage, batch {args.batch_size}, {args.steps} steps each, interleaved)")
    print("| body | ms (median) |\n|---|---|")
    for name, ms in steps.items():
        print(f"| {name} | {ms:.0f} |")
    result = {f"layers_{k.replace(' ', '_')}_ms": round(v, 1) for k, v in total.items()}
    result.update({name.replace(" ", "_").replace("+", "and"): round(ms, 1) for name, ms in steps.items()})
    print(json.dumps(result))


if __name__ == "__main__":
    main()
