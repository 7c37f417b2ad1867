"""VOCdevkit XML -> the course's COCO-style JSON layout.

``detector data convert-voc --devkit DIR --out DIR [--splits ...] [--classes ...]``
turns a VOCdevkit-layout folder (``Annotations/*.xml``, ``ImageSets/Main/{split}.txt``,
``JPEGImages/``) into the same JSON layout, one file per split: ``pascal_{split}{year}.json`` for a
folder named ``VOC{year}`` (the course's names), else ``{folder name}_{split}.json``; their
``image_dir`` is ``DIR/JPEGImages``. So VOC 2007 test, VOC 2012, or any dataset labelled in VOC
XML work without the course's files. The conversion is the course's:

- ``bbox = [xmin - 1, ymin - 1, xmax - xmin + 1, ymax - ymin + 1]``: VOC corners are 1-based,
  inclusive pixel indices. The one exception: coinciding corners (``xmax == xmin``, or in y) are
  a click without a drag in an annotation tool (BCCD's ``BloodImage_00338``, ``BloodImage_00343``),
  a box with no extent, so they are written with size 0 rather than as a 1-pixel object. The
  converter writes every box and lets ``detector.data.records.load_records`` judge it (one set of
  checks, one ``on_bad_record`` switch); it prints the degenerate ones it saw.
- ``ignore = difficult``; ``segmentation`` = the box as a polygon; ``area = w * h``.
- ``categories``: the order of ``--classes`` when given; else VOC's 20 classes in VOC order when
  every name is a VOC class; else the sorted names found (``--classes`` pins them across runs).
- image ids: the file stem when every stem is an integer (``000001`` -> 1, as the course's), else
  1, 2, ... over all stems in ``Annotations`` in sorted order (the same in every split); annotation
  ids 1, 2, ... in each file.
"""

from __future__ import annotations

import json
import re
import sys
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

from detector.errors import BadRecordError

__all__ = ["VOC_CLASSES", "VocAnnotation", "VocFormatError", "VocObject", "convert_devkit", "parse_voc_xml", "voc_to_xyxy"]

# Everingham et al., "The PASCAL Visual Object Classes (VOC) Challenge", IJCV 2010: class order
# of the devkit and of the course's JSON categories (ids 1..20).
VOC_CLASSES = [
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
    "tvmonitor",
]


class VocFormatError(BadRecordError):
    """A VOCdevkit file is malformed; the message names the file (and the object index)."""



@dataclass(frozen=True)
class VocObject:
    """One ``<object>``: ``box`` = (xmin, ymin, xmax, ymax) as written, 1-based inclusive pixels."""

    name: str
    box: tuple[float, float, float, float]
    difficult: bool


@dataclass(frozen=True)
class VocAnnotation:
    """One ``Annotations/*.xml``: the image size and its objects in file order; ``filename`` is the
    XML's ``<filename>`` (None when absent); width and height are None when ``<size>`` is missing or
    not positive and the parser was told not to require it."""

    path: Path
    width: int | None
    height: int | None
    objects: list[VocObject]
    filename: str | None = None


def _number(element: ET.Element, tag: str, where: str) -> float:
    text = element.findtext(tag)
    if text is None or not text.strip():
        raise VocFormatError(f"{where}: missing <{tag}>")
    try:
        return float(text)
    except ValueError:
        raise VocFormatError(f"{where}: <{tag}> is {text.strip()!r}, not a number") from None


def parse_voc_xml(path: str | Path, require_size: bool = True) -> VocAnnotation:
    """Read one VOC XML file; raise ``VocFormatError`` naming the file (and object index).

    ``require_size=False``: a missing, empty or non-positive ``<size>`` gives width and height None
    (the importer reads the size from the image) instead of an error; ``<difficult>`` is optional.
    """
    path = Path(path)
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as e:
        raise VocFormatError(f"{path}: not well-formed XML ({e})") from None
    size = root.find("size")
    width = height = None
    if size is None and require_size:
        raise VocFormatError(f"{path}: missing <size>")
    if size is not None and (require_size or all((size.findtext(t) or "").strip() for t in ("width", "height"))):
        width, height = (_number(size, tag, f"{path} <size>") for tag in ("width", "height"))
        if width <= 0 or height <= 0 or width % 1 or height % 1:
            if require_size:
                raise VocFormatError(f"{path}: <size> must be positive integers, got {width} x {height}")
            width = height = None
    objects = []
    for i, obj in enumerate(root.findall("object")):
        name = (obj.findtext("name") or "").strip()
        where = f"{path} object {i} ({name or 'no name'})"
        if not name:
            raise VocFormatError(f"{where}: missing <name>")
        bndbox = obj.find("bndbox")
        if bndbox is None:
            raise VocFormatError(f"{where}: missing <bndbox>")
        box = tuple(_number(bndbox, tag, where) for tag in ("xmin", "ymin", "xmax", "ymax"))
        difficult = (obj.findtext("difficult") or "0").strip()
        if difficult not in ("0", "1"):
            raise VocFormatError(f"{where}: <difficult> is {difficult!r}, expected 0 or 1")
        objects.append(VocObject(name, box, difficult == "1"))  # type: ignore[arg-type]
    filename = (root.findtext("filename") or "").strip() or None
    return VocAnnotation(path, None if width is None else int(width), None if height is None else int(height), objects, filename)


def _plain(v: float) -> int | float:
    """Integral floats as ints, as the course's JSON writes its pixel coordinates."""
    return int(v) if float(v).is_integer() else v


def voc_to_xyxy(box: tuple[float, float, float, float]) -> tuple[float, float, float, float]:
    """VOC's 1-based inclusive corners ``(xmin, ymin, xmax, ymax)`` -> continuous xyxy pixels
    ``(xmin - 1, ymin - 1, xmax, ymax)``; coinciding corners span no pixel (see top)."""
    xmin, ymin, xmax, ymax = box
    return (xmin - 1, ymin - 1, xmax if xmax != xmin else xmin - 1, ymax if ymax != ymin else ymin - 1)


def _coco_annotation(obj: VocObject, category_id: int, image_id: int, ann_id: int) -> dict:
    x0, y0, x1, y1 = voc_to_xyxy(obj.box)
    x, y, w, h = (_plain(v) for v in (x0, y0, x1 - x0, y1 - y0))
    right, bottom = _plain(obj.box[2] - 1), _plain(obj.box[3] - 1)  # the last pixel's 0-based index
    return {"segmentation": [[x, y, x, bottom, right, bottom, right, y]], "area": _plain(w * h),
            "iscrowd": 0, "image_id": image_id, "bbox": [x, y, w, h], "category_id": category_id,
            "id": ann_id, "ignore": int(obj.difficult)}


def _split_stems(devkit: Path, split: str) -> list[str]:
    path = devkit / "ImageSets" / "Main" / f"{split}.txt"
    if not path.is_file():
        raise VocFormatError(f"{path}: split file not found")
    return [line.split()[0] for line in path.read_text().splitlines() if line.strip()]


def _image_ids(devkit: Path) -> dict[str, int]:
    """Stem -> image id: the integer stem itself, or the rank among all sorted stems."""
    stems = sorted(p.stem for p in (devkit / "Annotations").glob("*.xml"))
    if stems and all(stem.isdigit() for stem in stems):
        return {stem: int(stem) for stem in stems}
    return {stem: i + 1 for i, stem in enumerate(stems)}


def _categories(names: set[str], classes: list[str] | None) -> list[str]:
    if classes:
        return list(classes)
    if names <= set(VOC_CLASSES):
        return list(VOC_CLASSES)
    return sorted(names)


def _output_name(devkit: Path, split: str) -> str:
    year = re.fullmatch(r"VOC(\d{4})", devkit.name)
    return f"pascal_{split}{year.group(1)}.json" if year else f"{devkit.name}_{split}.json"


def convert_devkit(devkit: str | Path, out: str | Path, splits: list[str] | None = None,
                   classes: list[str] | None = None) -> dict[str, Path]:
    """Write one course-layout JSON per split of a VOCdevkit folder (conventions at the top).

    Args:
        devkit: folder with ``Annotations/``, ``ImageSets/Main/{split}.txt``, ``JPEGImages/``.
        out: output folder (created).
        splits: default: those of ``train, val, trainval, test`` that have a split file.
        classes: category order; an object of another class is an error. Default: VOC's 20
            classes when every name is one, else the sorted names found in ``splits``.

    Returns:
        ``{split: json path}``. Raises ``VocFormatError`` naming the file for malformed input.
    """
    devkit, out = Path(devkit).resolve(), Path(out)
    if splits is None:
        splits = [s for s in ("train", "val", "trainval", "test")
                  if (devkit / "ImageSets" / "Main" / f"{s}.txt").is_file()]
        if not splits:
            raise VocFormatError(f"{devkit / 'ImageSets' / 'Main'}: no train/val/trainval/test.txt")
    stems = {split: _split_stems(devkit, split) for split in splits}
    image_ids = _image_ids(devkit)
    parsed: dict[str, VocAnnotation] = {}
    for split, names in stems.items():
        for stem in names:
            if stem not in image_ids:
                raise VocFormatError(f"{devkit}/ImageSets/Main/{split}.txt lists {stem!r}, "
                                     f"but {devkit}/Annotations/{stem}.xml does not exist")
            if stem not in parsed:
                parsed[stem] = parse_voc_xml(devkit / "Annotations" / f"{stem}.xml")
    found = {obj.name for ann in parsed.values() for obj in ann.objects}
    category_names = _categories(found, classes)
    category_id = {name: i + 1 for i, name in enumerate(category_names)}
    for ann in parsed.values():
        for i, obj in enumerate(ann.objects):
            if obj.name not in category_id:
                raise VocFormatError(f"{ann.path} object {i}: class {obj.name!r} is not one of "
                                     f"{category_names}")
    degenerate = sorted(f"{ann.path.name} object {i}" for ann in parsed.values()
                        for i, obj in enumerate(ann.objects)
                        if obj.box[2] <= obj.box[0] or obj.box[3] <= obj.box[1])
    if degenerate:
        print(f"convert: {len(degenerate)} box(es) without extent, written with size <= 0 for "
              f"load_records to reject: {', '.join(degenerate)}", file=sys.stderr)

    out.mkdir(parents=True, exist_ok=True)
    categories = [{"supercategory": "none", "id": i + 1, "name": n} for i, n in enumerate(category_names)]
    written = {}
    for split, names in stems.items():
        images, annotations = [], []
        for stem in names:
            ann = parsed[stem]
            images.append({"file_name": f"{stem}.jpg", "height": ann.height, "width": ann.width,
                           "id": image_ids[stem]})
            for obj in ann.objects:
                annotations.append(_coco_annotation(obj, category_id[obj.name], image_ids[stem],
                                                    len(annotations) + 1))
        path = out / _output_name(devkit, split)
        path.write_text(json.dumps({"images": images, "type": "instances",
                                    "annotations": annotations, "categories": categories}))
        written[split] = path
        print(f"{path}: {len(images)} images, {len(annotations)} boxes", file=sys.stderr)
    return written
