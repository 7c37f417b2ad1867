"""Per-image records from a COCO-format detection JSON, validated before training starts.

The course's ``pascal_{train,val,test}2007.json`` are COCO files: ``images`` (``id``,
``file_name``, ``width``, ``height``), ``annotations`` (``id``, ``image_id``, ``bbox`` = ``[x, y,
w, h]`` pixels, ``category_id``, optional ``ignore`` / ``iscrowd``) and ``categories`` (``id``,
``name``). Any COCO detection JSON loads the same way. The boxes become float xyxy pixels here, at
the boundary, and nowhere else.

Every problem is found at load time and reported as a :class:`BadRecordError` whose message names
the JSON file and the image id or annotation id (and the image file where there is one).
``on_bad_record="skip"`` drops **the whole image** a bad annotation belongs to: keeping the image
without one of its objects would teach the model that the object is background. An annotation
whose ``image_id`` names no image is dropped on its own. Problems with the file as a whole (not
UTF-8, invalid JSON, missing top-level keys, bad ``categories``) always raise: no record of such a
file can be trusted. Images with no annotations are kept: they are valid negatives.
"""

from __future__ import annotations

import json
import logging
import math
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from detector.data.image import ImageDecodeError, read_image_size
from detector.errors import BadRecordError, MissingFileError

__all__ = [
    "BadRecordError",
    "LoadReport",
    "LoadedSplit",
    "OnBadRecord",
    "Record",
    "load_records",
    "read_class_names",
]

log = logging.getLogger(__name__)

OnBadRecord = Literal["error", "skip"]

# How many problems an error message lists before it says "and N more".
_MAX_LISTED = 20


@dataclass(frozen=True, eq=False)
class Record:
    """One image and its objects, after validation.

    Attributes:
        image_id: the JSON's image ``id``.
        path: absolute path of the image file.
        width, height: size of the upright image in pixels.
        boxes: ``(n, 4)`` float32 xyxy pixels, inside ``[0, width] x [0, height]``.
        labels: ``(n,)`` int64 in ``0..C-1``, the index of the category in the JSON's ``categories``.
        difficult: ``(n,)`` bool, from ``ignore`` (VOC "difficult") or ``iscrowd``.
        ann_ids: ``(n,)`` int64 annotation ids.
    """

    image_id: int
    path: Path
    width: int
    height: int
    boxes: np.ndarray
    labels: np.ndarray
    difficult: np.ndarray
    ann_ids: np.ndarray


@dataclass(frozen=True)
class LoadReport:
    """What :func:`load_records` kept, clipped and skipped."""

    images: int
    boxes: int
    difficult: int
    negatives: int  # kept images with no objects
    clipped: int  # boxes that overflowed the image and were clipped to it
    skipped_images: int
    skipped_annotations: int  # all annotations that did not make it into a record
    problems: tuple[str, ...] = ()
    reasons: tuple[str, ...] = ()  # a short name of each problem's kind, in the order of ``problems``


@dataclass(frozen=True)
class LoadedSplit:
    """The validated records of one JSON file."""

    records: list[Record]
    class_names: list[str]
    json_path: Path
    report: LoadReport = field(repr=False)
    category_ids: list[int] = field(default_factory=list)  # the JSON id of label i is category_ids[i]

    def summary(self) -> str:
        r = self.report
        return (
            f"{self.json_path}: {r.images} images ({r.negatives} without objects), {r.boxes} boxes "
            f"in {len(self.class_names)} classes, {r.difficult} difficult, {r.clipped} clipped to their image; "
            f"skipped {r.skipped_images} images and {r.skipped_annotations} annotations."
        )


def read_class_names(json_path: str | Path) -> list[str]:
    """The class names in the order of the JSON's ``categories`` (label ``i`` is ``names[i]``).

    Checks only ``categories``, so it is quick to call before loading (e.g. to size the model).
    The standard library has no streaming parser, so the whole file is still parsed: ~0.05 s for a
    VOC-sized JSON (3 MB, 5,000 images), against ~0.35 s for :func:`load_records` with its checks.
    """
    path = Path(json_path)
    names, _ = _parse_categories(_read_json(path), path)
    return names


def load_records(
    json_path: str | Path,
    image_dir: str | Path,
    on_bad_record: OnBadRecord = "error",
    verify_images: bool = True,
) -> LoadedSplit:
    """Parse and validate a COCO-format detection JSON into one :class:`Record` per image.

    Args:
        json_path: the JSON file.
        image_dir: the folder that relative ``file_name``s resolve against (an absolute one is
            read as it is: the restored copy of a truncated image, ``detector data import``).
        on_bad_record: ``"error"`` raises one :class:`BadRecordError` listing every problem;
            ``"skip"`` logs each problem, drops the images concerned, and logs a total.
        verify_images: check that every image file exists, has a readable image header, and has
            the JSON's width and height (header only, EXIF orientation applied; see
            ``detector.data.image``). A file whose header is fine but whose data is truncated
            fails later, when the dataset decodes it, with an error naming the file and image id.

    Returns:
        :class:`LoadedSplit` with the records in the order of the JSON's ``images``.
    """
    if on_bad_record not in ("error", "skip"):
        raise ValueError(f"on_bad_record must be 'error' or 'skip', not {on_bad_record!r}")
    json_path = Path(json_path)
    data = _read_json(json_path)
    class_names, category_index = _parse_categories(data, json_path)
    ctx = _Problems(json_path)

    images = _parse_images(data["images"], ctx)
    per_image, clipped = _parse_annotations(data["annotations"], images, category_index, ctx)
    image_dir = Path(image_dir).absolute()
    if verify_images:
        for image_id, (file_name, width, height) in images.items():
            if image_id not in ctx.bad_images:
                _check_image_file(image_id, file_name, image_dir / file_name, width, height, ctx)

    if ctx.messages and on_bad_record == "error":
        listed = "\n  ".join(ctx.messages[:_MAX_LISTED])
        more = len(ctx.messages) - _MAX_LISTED
        raise BadRecordError(
            f"{json_path}: {len(ctx.messages)} bad record(s) (on_bad_record='skip' drops them):\n  {listed}"
            + (f"\n  ... and {more} more" if more > 0 else "")
        )

    records = []
    for image_id, (file_name, width, height) in images.items():
        if image_id in ctx.bad_images:
            continue
        anns = per_image.get(image_id, [])
        records.append(
            Record(
                image_id=image_id,
                path=image_dir / file_name,
                width=width,
                height=height,
                boxes=_frozen(np.array([a[1] for a in anns], dtype=np.float32).reshape(-1, 4)),
                labels=_frozen(np.array([a[2] for a in anns], dtype=np.int64)),
                difficult=_frozen(np.array([a[3] for a in anns], dtype=bool)),
                ann_ids=_frozen(np.array([a[0] for a in anns], dtype=np.int64)),
            )
        )
    n_anns = len(data["annotations"])
    kept_boxes = sum(len(r.labels) for r in records)
    report = LoadReport(
        images=len(records),
        boxes=kept_boxes,
        difficult=int(sum(int(r.difficult.sum()) for r in records)),
        negatives=sum(len(r.labels) == 0 for r in records),
        clipped=sum(clipped[i] for i in images if i not in ctx.bad_images),
        skipped_images=len(data["images"]) - len(records),
        skipped_annotations=n_anns - kept_boxes,
        problems=tuple(ctx.messages),
        reasons=tuple(ctx.reasons),
    )
    if ctx.messages:
        for message in ctx.messages:
            log.warning("skipped: %s", message)
        log.warning(
            "%s: skipped %d images and %d annotations (%d problems); kept %d images",
            json_path, report.skipped_images, report.skipped_annotations, len(ctx.messages), report.images,
        )
    return LoadedSplit(
        records=records,
        class_names=class_names,
        json_path=json_path,
        report=report,
        category_ids=list(category_index),  # dicts keep insertion order: label order
    )


# ---------------------------------------------------------------------------------------------
# The file as a whole: these problems always raise.


def _read_json(path: Path) -> dict[str, Any]:
    """Read and decode a JSON file; check the three top-level lists."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise MissingFileError(f"{path}: annotation file not found") from None
    try:
        text = raw.decode("utf-8-sig")  # tolerate a byte-order mark
    except UnicodeDecodeError as e:
        raise BadRecordError(f"{path}: not UTF-8 text (byte {e.start}: {raw[e.start:e.start + 1]!r})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise BadRecordError(
            f"{path}: invalid or truncated JSON at line {e.lineno} column {e.colno} (char {e.pos}): {e.msg}"
        ) from None
    if not isinstance(data, dict):
        raise BadRecordError(f"{path}: top level is a {type(data).__name__}, expected an object")
    for key in ("images", "annotations", "categories"):
        if key not in data:
            raise BadRecordError(f"{path}: missing top-level key {key!r}")
        if not isinstance(data[key], list):
            raise BadRecordError(f"{path}: {key!r} is a {type(data[key]).__name__}, expected a list")
    return data


def _parse_categories(data: dict[str, Any], path: Path) -> tuple[list[str], dict[int, int]]:
    """``categories`` -> (class names in list order, category id -> label index)."""
    names: list[str] = []
    index: dict[int, int] = {}
    for i, cat in enumerate(data["categories"]):
        if not isinstance(cat, dict) or "id" not in cat or "name" not in cat:
            raise BadRecordError(f"{path}: categories[{i}] must be an object with 'id' and 'name', got {cat!r}")
        if not _is_int(cat["id"]):
            raise BadRecordError(f"{path}: category id {cat['id']!r} (categories[{i}]) is not an integer")
        if cat["id"] in index:
            raise BadRecordError(f"{path}: duplicate category id {cat['id']} (categories[{i}])")
        index[cat["id"]] = len(names)
        names.append(str(cat["name"]))
    if not names:
        raise BadRecordError(f"{path}: 'categories' is empty")
    return names, index


# ---------------------------------------------------------------------------------------------
# Records: problems here are collected, then raised together or skipped.


class _Problems:
    """The problems found so far, and the images they condemn."""

    def __init__(self, json_path: Path):
        self.json_path = json_path
        self.messages: list[str] = []
        self.reasons: list[str] = []  # a short name of each message's problem, to count them by
        self.bad_images: set[int] = set()

    def image(self, image_id: Any, where: str, what: str, reason: str) -> None:
        self.messages.append(f"{self.json_path}: image id {image_id} ({where}): {what}")
        self.reasons.append(reason)
        if _is_int(image_id):
            self.bad_images.add(image_id)

    def annotation(self, ann_id: Any, image_id: Any, where: str, what: str, reason: str, drop_image: bool = True) -> None:
        self.messages.append(f"{self.json_path}: annotation id {ann_id} (image id {image_id}, {where}): {what}")
        self.reasons.append(reason)
        if drop_image and _is_int(image_id):
            self.bad_images.add(image_id)


def _parse_images(entries: list[Any], ctx: _Problems) -> dict[int, tuple[str, int, int]]:
    """``images`` -> {image id: (file_name, width, height)}, in file order, bad ones recorded."""
    images: dict[int, tuple[str, int, int]] = {}
    for i, entry in enumerate(entries):
        where = f"images[{i}]"
        if not isinstance(entry, dict):
            ctx.image("?", where, f"expected an object, got {entry!r}", "malformed image entry")
            continue
        image_id = entry.get("id", "?")
        missing = [k for k in ("id", "file_name", "width", "height") if k not in entry]
        if missing:
            ctx.image(image_id, where, f"missing key(s) {missing}", "malformed image entry")
            continue
        if not _is_int(image_id):
            ctx.image(image_id, where, "id is not an integer", "malformed image entry")
            continue
        where = f"{entry['file_name']}"
        if image_id in images:
            ctx.image(image_id, where, f"duplicate image id (also {images[image_id][0]})", "duplicate id")
            continue
        width, height = entry["width"], entry["height"]
        images[image_id] = (str(entry["file_name"]), width, height)
        if not (_is_int(width) and _is_int(height) and width > 0 and height > 0):
            ctx.image(image_id, where, f"width and height must be positive integers, got {width!r} x {height!r}", "malformed image entry")
    return images


def _parse_annotations(
    entries: list[Any],
    images: dict[int, tuple[str, int, int]],
    category_index: dict[int, int],
    ctx: _Problems,
) -> tuple[dict[int, list[tuple[int, list[float], int, bool]]], dict[int, int]]:
    """``annotations`` -> ({image id: [(ann id, xyxy, label, difficult)]}, {image id: clipped boxes})."""
    per_image: dict[int, list[tuple[int, list[float], int, bool]]] = defaultdict(list)
    clipped: dict[int, int] = defaultdict(int)
    seen: dict[int, Any] = {}  # annotation id -> its image id
    for j, ann in enumerate(entries):
        if not isinstance(ann, dict):
            ctx.annotation("?", "?", f"annotations[{j}]", f"expected an object, got {ann!r}", "malformed annotation", drop_image=False)
            continue
        ann_id, image_id = ann.get("id", "?"), ann.get("image_id", "?")
        known = _is_int(image_id) and image_id in images
        if not known and _is_int(image_id) and image_id in ctx.bad_images:
            continue  # its image entry was bad and is reported already; the annotation goes with it
        where = images[image_id][0] if known else f"annotations[{j}]"
        missing = [k for k in ("id", "image_id", "bbox", "category_id") if k not in ann]
        if missing:
            ctx.annotation(ann_id, image_id, where, f"missing key(s) {missing}", "malformed annotation", drop_image=known)
            continue
        if not known:
            ctx.annotation(ann_id, image_id, where, "unknown image id", "unknown image id", drop_image=False)
            continue
        if not _is_int(ann_id):
            ctx.annotation(ann_id, image_id, where, "id is not an integer", "malformed annotation")
            continue
        if ann_id in seen:
            ctx.annotation(ann_id, image_id, where, f"duplicate annotation id (also on image id {seen[ann_id]})", "duplicate id")
            ctx.bad_images.add(seen[ann_id])
            continue
        seen[ann_id] = image_id
        if not _is_int(ann["category_id"]) or ann["category_id"] not in category_index:
            ctx.annotation(ann_id, image_id, where, f"unknown category_id {ann['category_id']!r}", "unknown class")
            continue
        _, width, height = images[image_id]
        xyxy, was_clipped, problem = _bbox_to_xyxy(ann["bbox"], width, height)
        if problem:
            ctx.annotation(ann_id, image_id, where, problem[1], problem[0])
            continue
        clipped[image_id] += was_clipped
        # pycocotools' COCOeval treats crowd regions as "ignore" too, the role VOC's difficult plays.
        difficult = bool(ann.get("ignore", 0)) or bool(ann.get("iscrowd", 0))
        per_image[image_id].append((ann_id, xyxy, category_index[ann["category_id"]], difficult))
    return per_image, clipped


def _bbox_to_xyxy(bbox: Any, width: Any, height: Any) -> tuple[list[float], bool, tuple[str, str] | None]:
    """COCO ``[x, y, w, h]`` -> (xyxy clipped to the image, was it clipped, (reason, problem) or None).

    Hand-written: one box of plain Python numbers, checked before anything becomes a tensor.
    """
    if not isinstance(bbox, (list, tuple)) or len(bbox) != 4 or not all(_is_number(v) for v in bbox):
        return [], False, ("malformed box", f"bbox must be 4 numbers [x, y, w, h], got {bbox!r}")
    if not all(math.isfinite(v) for v in bbox):
        return [], False, ("malformed box", f"bbox has a NaN or infinite value: {bbox!r}")
    x, y, w, h = (float(v) for v in bbox)
    if w <= 0 or h <= 0:
        return [], False, ("box without extent", f"bbox [x, y, w, h] = {bbox!r} has width or height <= 0")
    xyxy = [x, y, x + w, y + h]
    if not (_is_int(width) and _is_int(height) and width > 0 and height > 0):
        return xyxy, False, None  # the image entry is bad and reported already; nothing to clip against
    inside = [max(x, 0.0), max(y, 0.0), min(x + w, float(width)), min(y + h, float(height))]
    if inside[2] <= inside[0] or inside[3] <= inside[1]:
        return [], False, ("box outside the image", f"bbox [x, y, w, h] = {bbox!r} lies wholly outside the {width} x {height} image")
    return inside, inside != xyxy, None


def _check_image_file(image_id: int, file_name: str, path: Path, width: int, height: int, ctx: _Problems) -> None:
    try:
        actual = read_image_size(path)
    except FileNotFoundError:
        ctx.image(image_id, file_name, f"image file not found: {path}", "image file not found")
    except ImageDecodeError as e:
        ctx.image(image_id, file_name, f"corrupt or unsupported image: {e}", "image cannot be decoded")
    except OSError as e:  # a folder, permissions, I/O errors, truncated headers
        ctx.image(image_id, file_name, f"unreadable image file: {e}", "image cannot be read")
    else:
        if actual != (width, height):
            ctx.image(
                image_id, file_name,
                f"image is {actual[0]} x {actual[1]} (width x height, EXIF orientation applied) "
                f"but the JSON says {width} x {height}",
                "image size differs from the JSON",
            )


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _frozen(a: np.ndarray) -> np.ndarray:
    """Make a record's array read-only, so that no transform can change it in place."""
    a.flags.writeable = False
    return a
