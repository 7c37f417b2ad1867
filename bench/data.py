"""Training-pipeline throughput: ours (PIL + albumentations ``lesson`` preset) vs torchvision.transforms.v2.

    .venv/bin/python bench/data.py [--threads 1] [--repeats 7] [--images 64] [--size 224] [--batch 16]

Both pipelines do the same work on the same images, in-process (one worker): decode the JPEG,
scale the shorter side to ``size`` (fastai's ``Scale``), horizontal flip p=0.5, rotate up to 3
degrees p=0.5 (boxes: the enclosing box of the turned corners), brightness / contrast 0.05, squash
to ``size x size``, normalise with the ImageNet statistics, collate into the batch contract (boxes
padded, labels -1). Ours is ``DetectionDataset`` + ``collate_detections``; torchvision's decodes
with ``torchvision.io.decode_image`` and carries the boxes as ``tv_tensors.BoundingBoxes``.
The images are ``../shared/voc2007_sample`` if present (cycled to ``--images``), else generated
500 x 375 and 375 x 500 JPEGs in a temporary folder. Each repeat times both pipelines back to back,
alternating which goes first, so that the shared machine's noise falls on both; the table shows
medians. Prints a table, then one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from anywhere, installed or not

from torchvision import tv_tensors  # noqa: E402
from torchvision.io import ImageReadMode, decode_image, read_file  # noqa: E402
from torchvision.transforms import v2  # noqa: E402

from detector.data.dataset import DetectionDataset, collate_detections  # noqa: E402
from detector.data.records import LoadedSplit, load_records  # noqa: E402
from detector.data.samplers import EpochSampler  # noqa: E402
from detector.data.transforms import DetectionTransform  # noqa: E402
from detector.defaults import IMAGENET_MEAN, IMAGENET_STD  # noqa: E402

SHARED = Path(os.environ.get("DETECTOR_SHARED", REPO.parent / "shared"))


def voc_like_split(folder: Path, n: int = 16) -> LoadedSplit:
    """``n`` noisy 500 x 375 / 375 x 500 JPEGs with 1-4 filled boxes each, and their COCO JSON."""
    rng = np.random.default_rng(0)
    images, annotations = [], []
    for i in range(n):
        w, h = (500, 375) if i % 3 else (375, 500)
        pixels = cv2.GaussianBlur(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), (7, 7), 0)
        for _ in range(rng.integers(1, 5)):
            x, y = int(rng.integers(0, w - 60)), int(rng.integers(0, h - 60))
            bw, bh = int(rng.integers(20, w - x)), int(rng.integers(20, h - y))
            pixels[y:y + bh, x:x + bw] = rng.integers(0, 256, 3)
            annotations.append({"id": len(annotations) + 1, "image_id": i + 1, "bbox": [x, y, bw, bh], "category_id": 1})
        cv2.imwrite(str(folder / f"{i:06d}.jpg"), pixels[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 90])
        images.append({"id": i + 1, "file_name": f"{i:06d}.jpg", "width": w, "height": h})
    json_path = folder / "voc_like.json"
    json_path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": [{"id": 1, "name": "thing"}]}))
    return load_records(json_path, folder)


def ours(split: LoadedSplit, size: int, batch: int, count: int) -> Callable[[int], int]:
    dataset = DetectionDataset(split, DetectionTransform("lesson", size))
    sampler = EpochSampler(len(dataset))

    def run(epoch: int) -> int:
        sampler.set_epoch(epoch)
        keys = [key for _ in range(-(-count // len(dataset))) for key in sampler][:count]  # cycle the split
        for start in range(0, count, batch):
            collate_detections([dataset[k] for k in keys[start:start + batch]])
        return count

    return run


def torchvision_v2(split: LoadedSplit, size: int, batch: int, count: int) -> Callable[[int], int]:
    transform = v2.Compose([
        v2.Resize(size),  # shorter side -> size
        v2.RandomHorizontalFlip(p=0.5),
        v2.RandomApply([v2.RandomRotation(3, interpolation=v2.InterpolationMode.BILINEAR)], p=0.5),
        v2.ColorJitter(brightness=0.05, contrast=0.05),
        v2.Resize((size, size)),
        v2.ClampBoundingBoxes(),
        v2.SanitizeBoundingBoxes(labels_getter=lambda sample: (sample["labels"], sample["difficult"])),
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ])
    records = split.records

    def sample(index: int) -> dict:
        r = records[index % len(records)]
        image = tv_tensors.Image(decode_image(read_file(str(r.path)), mode=ImageReadMode.RGB, apply_exif_orientation=True))
        out = transform({
            "image": image,
            "boxes": tv_tensors.BoundingBoxes(torch.from_numpy(r.boxes.copy()), format="XYXY", canvas_size=(r.height, r.width)),
            "labels": torch.from_numpy(r.labels.copy()),
            "difficult": torch.from_numpy(r.difficult.copy()),
        })
        return {
            "image": out["image"].as_subclass(torch.Tensor),
            "boxes": out["boxes"].as_subclass(torch.Tensor) / size,
            "labels": out["labels"],
            "difficult": out["difficult"],
            "image_id": r.image_id,
            "size": (r.height, r.width),
        }

    def run(epoch: int) -> int:
        torch.manual_seed(epoch)
        order = torch.randperm(count) % len(records)
        for start in range(0, count, batch):
            collate_detections([sample(int(i)) for i in order[start:start + batch]])
        return count

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="torch and OpenCV threads (default 1, as in one worker)")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--images", type=int, default=64, help="images per timed pass")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=16)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)
    warnings.filterwarnings("ignore", message=".*decoding and encoding capabilities of TorchVision are deprecated")

    with tempfile.TemporaryDirectory() as tmp:
        sample_dir = SHARED / "voc2007_sample"
        if (sample_dir / "pascal_sample2007.json").is_file():
            split, source = load_records(sample_dir / "pascal_sample2007.json", sample_dir / "JPEGImages"), str(sample_dir)
        else:
            split, source = voc_like_split(Path(tmp)), "generated VOC-sized JPEGs"
        runs = {
            "ours (PIL + albumentations)": ours(split, args.size, args.batch, args.images),
            "torchvision.transforms.v2": torchvision_v2(split, args.size, args.batch, args.images),
        }
        names = list(runs)
        for run in runs.values():
            run(0)  # warm-up
        rates: dict[str, list[float]] = {name: [] for name in names}
        for r in range(args.repeats):
            for name in names if r % 2 == 0 else names[::-1]:
                start = time.perf_counter()
                n = runs[name](r + 1)
                rates[name].append(n / (time.perf_counter() - start))

    print(f"images: {len(split.records)} from {source}, cycled to {args.images} per pass; size {args.size}, "
          f"batch {args.batch}, {args.threads} thread(s), {args.repeats} repeats")
    print(f"{'pipeline':<30} {'img/s (median)':>15} {'min':>8} {'max':>8} {'ms/img':>8}")
    for name in names:
        med = statistics.median(rates[name])
        print(f"{name:<30} {med:>15.1f} {min(rates[name]):>8.1f} {max(rates[name]):>8.1f} {1e3 / med:>8.2f}")
    ours_rate, tv_rate = (statistics.median(rates[name]) for name in names)
    print(json.dumps({"ours_img_s": round(ours_rate, 1), "torchvision_v2_img_s": round(tv_rate, 1),
                      "ratio": round(ours_rate / tv_rate, 2)}))


if __name__ == "__main__":
    main()
