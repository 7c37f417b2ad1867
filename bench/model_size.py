"""Parameters and forward FLOPs of the SSD per configuration, as a markdown table.

Run: ``.venv/bin/python bench/model_size.py`` (after ``make install``). Counts are for one image; weights are random
(``weights="none"``: counts do not depend on them). FLOPs are torch's ``FlopCounterMode`` count of
convolutions and matrix products (2 per multiply-add; BatchNorm, activations and adds not counted).
The last line is one JSON object with the same numbers.
"""

from __future__ import annotations

import json

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from detector.core.anchors import AnchorConfig
from detector.model import build_ssd
from detector.model.head import HeadConfig

NARROW = HeadConfig(channels=128)  # the EfficientNet configs' head
CONFIGS: dict[str, dict] = {  # the lesson's zooms and ratios (k = 9) unless said
    "lesson": dict(num_classes=20, backbone="resnet34", image_size=224, anchors=AnchorConfig()),
    "lesson_4x4_k1": dict(
        num_classes=20, backbone="resnet34", image_size=224, anchors=AnchorConfig([4], [1.0], [(1.0, 1.0)])
    ),
    "resnet18": dict(num_classes=20, backbone="resnet18", image_size=224, anchors=AnchorConfig()),
    "resnet50": dict(num_classes=20, backbone="resnet50", image_size=224, anchors=AnchorConfig()),
    "shapes.yaml": dict(
        num_classes=7, backbone="efficientnet_lite0", image_size=224, anchors=AnchorConfig([14, 7, 4, 2, 1]), head=NARROW
    ),
    "bccd.yaml": dict(
        num_classes=3, backbone="efficientnet_lite0", image_size=320, anchors=AnchorConfig([20, 10, 5, 3, 1]), head=NARROW
    ),
    "raccoon.yaml": dict(
        num_classes=1, backbone="efficientnet_lite0", image_size=256, anchors=AnchorConfig([8, 4, 2, 1]), head=NARROW
    ),
}


def count_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def measure(config: dict) -> dict:
    """Parameters (total, body, head) and GFLOPs (total, body, head) of one forward of one image."""
    model = build_ssd(weights="none", **config).eval()
    size = config["image_size"]
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.randn(1, 3, size, size))
    flops = {name: sum(ops.values()) for name, ops in counter.get_flop_counts().items()}
    return {
        "backbone": config["backbone"],
        "image_size": size,
        "grids": list(config["anchors"].grids),
        "k": model.head.k,
        "num_classes": config["num_classes"],
        "anchors": model.head.num_anchors,
        "params_total": count_params(model),
        "params_body": count_params(model.backbone),
        "params_head": count_params(model.head),
        "gflops_total": counter.get_total_flops() / 1e9,
        "gflops_body": flops.get("SSD.backbone", 0) / 1e9,
        "gflops_head": flops.get("SSD.head", 0) / 1e9,
    }


def main() -> None:
    results = {name: measure(config) for name, config in CONFIGS.items()}
    columns = ["config", "backbone", "size", "grids", "k", "C", "anchors"]
    columns += ["params total (M)", "body (M)", "head (M)", "GFLOPs total", "body", "head"]
    print("| " + " | ".join(columns) + " |")
    print("|" + "---|" * len(columns))
    for name, r in results.items():
        grids = "/".join(str(g) for g in r["grids"])
        print(
            f"| {name} | {r['backbone']} | {r['image_size']} | {grids} | {r['k']} | {r['num_classes']} "
            f"| {r['anchors']} "
            f"| {r['params_total'] / 1e6:.2f} | {r['params_body'] / 1e6:.2f} | {r['params_head'] / 1e6:.2f} "
            f"| {r['gflops_total']:.2f} | {r['gflops_body']:.2f} | {r['gflops_head']:.3f} |"
        )
    print(json.dumps(results))


if __name__ == "__main__":
    main()
