"""Running a trained checkpoint on image files: annotated pictures and COCO-format detections.

    python predict.py --checkpoint runs/shapes/checkpoints/best.ckpt --images photos/ --out out/photos
    python predict.py --checkpoint CKPT --images "data/shapes/JPEGImages/val_*.jpg" --out out/val --score 0.3

For every readable image, ``OUT/<name>.png`` shows the detections scoring above ``--score``
(default: the checkpoint's ``picture_score_threshold``, the lesson's 0.25), and
``OUT/detections.json`` lists the same detections in the COCO results layout::

    [{"image_id": 1, "file_name": "photo.jpg", "category_id": 3, "category_name": "triangle",
      "bbox": [x, y, w, h], "score": 0.91}, ...]

* ``bbox`` is in pixels of the original, upright image (EXIF orientation applied, as every decoder
  here does), whatever the network's input size;
* ``category_id`` is the class index + 1: class ``i`` of the checkpoint's ``class_names`` has id
  ``i + 1``, as in the course's JSONs (``pascal_*2007.json``, the shapes JSONs), whose categories
  are numbered 1..C in order;
* ``image_id`` numbers the images 1, 2, ... in the sorted order of their paths (``file_name`` is
  the file's name, to join on).

The preprocessing is evaluation's exactly (``DetectionDataset`` with the ``"none"`` preset): a JPEG
at least twice the network's input size is decoded at a reduced scale (libjpeg's DCT scaling, see
:func:`detector.data.image.load_image`), squashed to ``S x S`` and normalised with the backbone's
statistics; so a checkpoint predicts here what it predicted when it was evaluated. The pictures
are drawn on that decoded image.

Images of any size and mode (grayscale, RGBA, palette, CMYK) are read; a file that cannot be
decoded is reported by name and skipped, and a summary lists them at the end. The exit status is
non-zero only when no image at all could be read.
"""

from __future__ import annotations

import argparse
import glob
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from detector.boxes import xyxy_to_xywh
from detector.data.image import ImageDecodeError, load_image, read_image_size
from detector.data.transforms import DetectionTransform
from detector.module import DetectorModule
from detector.visualize import save_figure, show_boxes

__all__ = ["PredictReport", "find_images", "load_detector", "main", "predict_images", "resolve_device"]


def find_images(spec: str | Path) -> list[Path]:
    """The image files named by ``spec``, sorted.

    A folder: its files (not sub-folders) whose suffix is one PIL reads (``.jpg``, ``.png``, ...;
    other files are ignored). A file: itself. Anything else: a glob pattern (``**`` recurses), every
    matching file, whatever its suffix (so a corrupt or mis-named file is reported, not ignored).
    """
    path = Path(spec)
    if path.is_dir():
        suffixes = {s.lower() for s in Image.registered_extensions()}
        return sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in suffixes)
    if path.is_file():
        return [path]
    return sorted(Path(p) for p in glob.glob(str(spec), recursive=True) if Path(p).is_file())


def resolve_device(name: str) -> torch.device:
    """``auto`` -> ``cuda`` when a GPU is visible, else ``cpu``; anything else as ``torch.device``."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} asked for, but torch sees no CUDA GPU")
    return device


def load_detector(checkpoint: str | Path, device: torch.device | str = "cpu") -> DetectorModule:
    """A checkpoint written by ``train.py``, in eval mode on ``device`` (no pretrained download:
    ``weights="none"``; the checkpoint's state dict supplies every weight)."""
    model = DetectorModule.load_from_checkpoint(checkpoint, map_location="cpu", weights="none")
    return model.eval().to(device)


class _ImageFiles(Dataset):
    """Decodes and preprocesses one file per item; a file that fails becomes ``{"error": ...}``."""

    def __init__(self, paths: Sequence[Path], transform: DetectionTransform):
        self.paths, self.transform = list(paths), transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> dict[str, Any]:
        path = self.paths[index]
        try:
            image = load_image(path, min_side=self.transform.size)  # (h, w, 3) uint8, as evaluation decodes
            width, height = read_image_size(path)  # the original, upright size
        except (ImageDecodeError, OSError) as e:
            reason = str(e).removeprefix(f"{path}: ")  # the summary names the file itself
            return {"index": index, "path": path, "error": reason}
        network_input = self.transform(image, np.zeros((0, 4), np.float32)).image  # (3, S, S)
        return {"index": index, "path": path, "image": image, "input": network_input, "size": (height, width)}


@dataclass
class PredictReport:
    """What :func:`predict_images` did.

    Attributes:
        detections: the COCO results written to ``detections.json`` (see the module docstring).
        pictures: the annotated PNGs written, in image order.
        failures: ``(path, reason)`` of every file that could not be read.
        images: how many images were read and predicted.
    """

    detections: list[dict[str, Any]] = field(default_factory=list)
    pictures: list[Path] = field(default_factory=list)
    failures: list[tuple[Path, str]] = field(default_factory=list)
    images: int = 0

    def summary(self) -> str:
        lines = [f"{self.images} images, {len(self.detections)} detections"]
        if self.failures:
            lines.append(f"{len(self.failures)} unreadable file(s), skipped:")
            lines += [f"  {path}: {reason}" for path, reason in self.failures]
        return "\n".join(lines)


def _picture_names(paths: Sequence[Path]) -> list[str]:
    """``<stem>.png`` per path; a stem seen before gets ``_2``, ``_3``, ... (same names in two folders)."""
    taken: set[str] = set()
    names = []
    for path in paths:
        name, n = path.stem, 1
        while name in taken:
            n += 1
            name = f"{path.stem}_{n}"
        taken.add(name)
        names.append(f"{name}.png")
    return names


@torch.inference_mode()
def predict_images(
    model: DetectorModule,
    paths: Sequence[Path],
    out: str | Path,
    score: float | None = None,
    batch_size: int = 8,
    workers: int = 0,
    pictures: bool = True,
    progress: bool = True,
) -> PredictReport:
    """Detect objects in ``paths`` with ``model``; write the pictures and ``detections.json`` to ``out``.

    Args:
        model: a :class:`DetectorModule` in eval mode, on the device to run on.
        score: keep detections scoring above this (default: ``model.post_cfg.picture_score_threshold``).
        batch_size: images per forward pass.
        workers: DataLoader processes decoding images (0: decode in this process).
        pictures: write one annotated PNG per image.

    Returns:
        :class:`PredictReport`; unreadable files are in ``failures``, never raised.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    threshold = model.post_cfg.picture_score_threshold if score is None else score
    mean, std = model.model.backbone.mean, model.model.backbone.std
    transform = DetectionTransform("none", model.hparams.image_size, mean=mean, std=std)
    loader = DataLoader(_ImageFiles(paths, transform), batch_size=batch_size, num_workers=workers, collate_fn=list)
    names = _picture_names(paths)
    device = next(model.parameters()).device
    report = PredictReport()
    bar = tqdm(total=len(paths), unit="img", desc="predict", file=sys.stderr, disable=not progress)
    for items in loader:
        for item in items:
            if "error" in item:
                report.failures.append((item["path"], item["error"]))
                tqdm.write(f"predict: skipping unreadable {item['path']}: {item['error']}", file=sys.stderr)
        good = [item for item in items if "error" not in item]
        if good:
            inputs = torch.stack([item["input"] for item in good]).to(device)  # (b, 3, S, S)
            # Thresholding before NMS keeps exactly the detections of evaluation's NMS that score above
            # ``threshold``: a box below it could never have suppressed one above it.
            for item, det in zip(good, model.detect(inputs, score_threshold=threshold)):
                boxes, scores, labels = det["boxes"].cpu(), det["scores"].cpu(), det["labels"].cpu()
                _record(report, item, boxes, scores, labels, model.class_names)
                if pictures:
                    h, w = item["image"].shape[:2]
                    fig = show_boxes(item["image"], boxes * torch.tensor([w, h, w, h]), labels, model.class_names, scores)
                    report.pictures.append(save_figure(fig, out / names[item["index"]]))
        report.images += len(good)
        bar.update(len(items))
    bar.close()
    (out / "detections.json").write_text(json.dumps(report.detections) + "\n")
    return report


def _record(
    report: PredictReport, item: dict[str, Any], boxes: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor,
    class_names: Sequence[str],
) -> None:
    """Append one image's detections (``boxes (N, 4)`` xyxy in ``[0, 1]``) in COCO results layout."""
    height, width = item["size"]
    xywh = xyxy_to_xywh(boxes * torch.tensor([width, height, width, height], dtype=boxes.dtype))  # (N, 4) pixels
    for box, s, label in zip(xywh.tolist(), scores.tolist(), labels.tolist()):
        report.detections.append(
            {
                "image_id": item["index"] + 1,
                "file_name": item["path"].name,
                "category_id": label + 1,
                "category_name": class_names[label],
                "bbox": [round(v, 2) for v in box],
                "score": round(s, 5),
            }
        )


def main(argv: Sequence[str] | None = None) -> int:
    """The ``predict.py`` command line; returns the exit status (see the module docstring)."""
    parser = argparse.ArgumentParser(
        prog="predict.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--checkpoint", required=True, help="a .ckpt written by train.py")
    parser.add_argument("--images", required=True, help="a folder, an image file, or a glob pattern (quote it)")
    parser.add_argument("--out", required=True, help="folder for the annotated PNGs and detections.json")
    parser.add_argument(
        "--score", type=float, default=None,
        help="keep detections scoring above this (default: the checkpoint's picture threshold, 0.25 in the lesson)",
    )
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, ... or auto (a GPU when there is one)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--workers", type=int, default=0, help="processes decoding images")
    parser.add_argument("--no-pictures", action="store_true", help="write detections.json only")
    args = parser.parse_args(argv)

    paths = find_images(args.images)
    if not paths:
        print(f"predict.py: no image files found at {args.images!r}", file=sys.stderr)
        return 2
    model = load_detector(args.checkpoint, resolve_device(args.device))
    report = predict_images(
        model, paths, args.out, args.score, args.batch_size, args.workers, pictures=not args.no_pictures
    )
    print(report.summary())
    print(f"wrote {Path(args.out) / 'detections.json'} and {len(report.pictures)} pictures")
    return 0 if report.images else 1
