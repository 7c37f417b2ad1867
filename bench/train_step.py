"""Where a training step of the lesson's configuration spends its time, on this machine.

ResNet-34 SSD (224 px, 189 anchors, 20 classes), batch 64, the lesson's augmentation, the
DataLoader as the configs set it up. Each step is split into:

    data wait       waiting for the next batch from the DataLoader
    network         forward + backward of the network and the optimiser step
    matching+loss   batched matching + focal loss, forward and backward (on detached outputs,
                    so its backward is timed apart from the network's)

Images: the 13 VOC photos of ../shared/voc2007_sample cycled to fill the batches (VOC-sized
JPEGs), else generated shapes images. Prints a table, then one JSON line:
{"img_s": .., "data_share": .., "network_share": .., "loss_share": ..}

    python bench/train_step.py [--steps 4] [--batch-size 64] [--workers 1] [--device cpu|cuda] [--precision 32|bf16]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from detector.data.dataset import DetectionDataset, collate_detections
from detector.data.records import load_records
from detector.data.samplers import EpochSampler
from detector.data.transforms import DetectionTransform
from detector.defaults import IMAGENET_MEAN, IMAGENET_STD
from detector.training.tasks.detection import DetectorModule

SAMPLE = Path(__file__).resolve().parents[2] / "shared" / "voc2007_sample"


def split_for(batch_size: int, steps: int, tmp: Path):
    """A LoadedSplit with enough records for ``steps`` batches (the sample's 13 photos, repeated)."""
    if (SAMPLE / "pascal_sample2007.json").is_file():
        split = load_records(SAMPLE / "pascal_sample2007.json", SAMPLE / "JPEGImages")
        source = "VOC 2007 sample photos"
    else:
        from detector.data.shapes import generate_shapes

        generate_shapes(tmp, n_train=64, n_val=1, image_size=400, workers=1)
        split = load_records(tmp / "shapes_train.json", tmp / "JPEGImages")
        source = "generated shapes images (../shared absent)"
    need = batch_size * (steps + 1)
    records = (split.records * (need // len(split.records) + 1))[:need]
    return replace(split, records=records), source


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--precision", choices=["32", "bf16", "16"], default="32")
    args = parser.parse_args()
    device = torch.device(args.device)

    with tempfile.TemporaryDirectory() as tmp:
        split, source = split_for(args.batch_size, args.steps, Path(tmp))
        dataset = DetectionDataset(split, DetectionTransform("lesson", 224, IMAGENET_MEAN, IMAGENET_STD))
        loader = DataLoader(
            dataset,
            batch_size=args.batch_size,
            sampler=EpochSampler(len(dataset)),
            collate_fn=collate_detections,
            num_workers=args.workers,
            pin_memory=device.type == "cuda",
        )
        model = DetectorModule(num_classes=20, backbone="resnet34", weights="none", image_size=224).to(device).train()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
        dtype = {"32": None, "bf16": torch.bfloat16, "16": torch.float16}[args.precision]
        times: dict[str, list[float]] = {"data wait": [], "network": [], "matching+loss": []}
        it = iter(loader)
        for step in range(args.steps + 1):  # step 0 warms up (workers start, kernels load)
            t0 = time.perf_counter()
            batch = {k: v.to(device, non_blocking=True) for k, v in next(it).items()}
            sync(device)
            t1 = time.perf_counter()
            with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                cls_logits, box_deltas = model(batch["images"])
            sync(device)
            t2 = time.perf_counter()
            cls_d = cls_logits.detach().float().requires_grad_()
            box_d = box_deltas.detach().float().requires_grad_()
            terms = model.criterion(cls_d, box_d, model.anchors, batch["boxes"], batch["labels"])
            terms["loss"].backward()
            sync(device)
            t3 = time.perf_counter()
            torch.autograd.backward([cls_logits, box_deltas], [cls_d.grad.to(cls_logits.dtype), box_d.grad.to(box_deltas.dtype)])
            opt.step()
            opt.zero_grad(set_to_none=True)
            sync(device)
            t4 = time.perf_counter()
            if step > 0:
                times["data wait"].append(t1 - t0)
                times["network"].append((t2 - t1) + (t4 - t3))
                times["matching+loss"].append(t3 - t2)
    med = {k: statistics.median(v) for k, v in times.items()}
    total = sum(med.values())
    print(f"lesson config (ResNet-34, 224 px, 189 anchors, C = 20), batch {args.batch_size}, {args.workers} worker(s), "
          f"{device}, precision {args.precision}, torch threads {torch.get_num_threads()}; images: {source}; "
          f"median of {args.steps} steps")
    print(f"{'part':<15}{'ms/step':>12}{'share':>9}")
    for k, v in med.items():
        print(f"{k:<15}{v * 1e3:>12.1f}{v / total:>9.1%}")
    print(f"{'total':<15}{total * 1e3:>12.1f}{'':>9}   {args.batch_size / total:.1f} img/s")
    print(json.dumps({
        "img_s": round(args.batch_size / total, 2),
        "data_share": round(med["data wait"] / total, 4),
        "network_share": round(med["network"] / total, 4),
        "loss_share": round(med["matching+loss"] / total, 4),
    }))


if __name__ == "__main__":
    main()
