"""The record every importer produces, whatever the format: an image file, its size read from the
file, and its boxes as float xyxy pixels with class names; plus the problems met on the way.

Box convention: continuous pixel coordinates, ``(x0, y0, x1, y1)`` with ``0 <= x0 < x1 <= width``:
the left edge of the first pixel is 0, the right edge of the last is ``width`` (COCO's ``[x, y, w,
h]`` is ``(x, y, x + w, y + h)``; VOC's 1-based inclusive ``xmin..xmax`` is ``(xmin - 1, xmax)``;
YOLO's normalised centre and size times the image's size). The writer turns them into the COCO
JSON that :mod:`detector.data.records` reads, which uses the same convention.

A box that reaches over the image's edge is clipped to it (counted: ``clipped``). A box with no
extent (a click without a drag in a labelling tool) is dropped and counted (``dropped``); a box
wholly outside the image is a bad record, like an unknown class, a malformed line, an
image that cannot be decoded or a label file without an image: each :class:`Problem` names the file
and the record, and condemns its whole image (an image that loses one object would teach the model
that the object is background).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from detector.data.image import ImageDecodeError, read_image_size

__all__ = [
    "IMAGE_EXTENSIONS",
    "Problem",
    "Source",
    "SourceBox",
    "SourceImage",
    "clip_box",
    "image_index",
    "read_size",
    "split_of_folder",
]

# Suffixes (lower case) of the image files the importers look for; PIL decodes all of them.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif")



@dataclass(frozen=True)
class SourceBox:
    """One object: ``label`` its class name, ``xyxy`` continuous pixels inside the image."""

    label: str
    xyxy: tuple[float, float, float, float]
    difficult: bool = False


@dataclass
class SourceImage:
    """One image: the absolute ``path`` of its file, its upright size read from the file header,
    its boxes, the split the source puts it in (``train``, ``val``, ``test``; None: no split), and
    ``where``: the annotation file it came from (for messages); ``restored``: the whole copy of a
    truncated file that the import wrote (:mod:`detector.data.importers.decoding`), which the JSON
    then names instead of ``path``."""

    path: Path
    width: int
    height: int
    boxes: list[SourceBox]
    split: str | None
    where: str
    restored: Path | None = None


@dataclass(frozen=True)
class Problem:
    """A bad record: ``message`` names the file and the record; ``reason`` is its kind (to count
    by); ``image`` the image (or label file) it condemns, ``boxes`` how many boxes that one has,
    ``split`` the source split it belongs to. One image may have several problems."""

    message: str
    reason: str
    image: str
    boxes: int = 0
    split: str | None = None


@dataclass
class Source:
    """What an importer read: the images it kept, the class names in label order, and the problems,
    clips and notes it met. ``layout`` says in words what was found where."""

    format: str
    root: Path
    layout: str
    images: list[SourceImage]
    class_names: list[str]
    problems: list[Problem] = field(default_factory=list)
    clipped: list[str] = field(default_factory=list)  # one entry per clipped box, naming it
    dropped: list[str] = field(default_factory=list)  # one entry per box without extent, naming it
    notes: list[str] = field(default_factory=list)  # what was changed or left out, and why


def clip_box(
    xyxy: tuple[float, float, float, float], width: int, height: int
) -> tuple[tuple[float, float, float, float] | None, bool, str | None]:
    """``xyxy`` continuous pixels -> (the box clipped to the image, was it clipped, problem).

    The problem (then the box is None) is ``"box without extent"`` for a box with x1 <= x0 or
    y1 <= y0 or a non-finite value, ``"box outside the image"`` for one that no pixel of lies inside.
    """
    x0, y0, x1, y1 = xyxy
    if not all(math.isfinite(v) for v in xyxy) or x1 <= x0 or y1 <= y0:
        return None, False, "box without extent"
    inside = (max(x0, 0.0), max(y0, 0.0), min(x1, float(width)), min(y1, float(height)))
    if inside[2] <= inside[0] or inside[3] <= inside[1]:
        return None, False, "box outside the image"
    return inside, inside != (x0, y0, x1, y1), None


def read_size(path: Path) -> tuple[tuple[int, int] | None, str | None]:
    """``((width, height), None)`` of an image from its header (EXIF orientation applied), or
    ``(None, what is wrong)`` for a file that is missing or cannot be decoded."""
    try:
        return read_image_size(path), None
    except FileNotFoundError:
        return None, "image file not found"
    except ImageDecodeError:
        return None, "image cannot be decoded (not an image file PIL knows)"
    except OSError as e:
        return None, f"image cannot be read ({e})"


def image_index(folder: Path) -> tuple[dict[str, str], dict[str, list[str]]]:
    """The image files directly in ``folder``: ({lower-case name: name}, {lower-case stem: [names]}),
    so that ``IMG_1.JPG`` is found for ``img_1.jpg`` or the stem ``img_1``."""
    by_name: dict[str, str] = {}
    by_stem: dict[str, list[str]] = {}
    for p in sorted(folder.iterdir()) if folder.is_dir() else []:
        if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file():
            by_name[p.name.lower()] = p.name
            by_stem.setdefault(p.stem.lower(), []).append(p.name)
    return by_name, by_stem


def split_of_folder(name: str) -> str | None:
    """The split a folder's name stands for (``train``, ``valid``/``val``/``validation``, ``test``)."""
    return {"train": "train", "training": "train", "valid": "val", "val": "val", "validation": "val",
            "test": "test", "testing": "test"}.get(name.lower())
