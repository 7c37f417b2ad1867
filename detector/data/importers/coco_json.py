"""COCO JSON -> :class:`~detector.data.importers.source.Source`, read by
:func:`detector.data.records.load_records` (so a JSON is judged by the same checks as in training),
after a check that names every image file the JSON lists but the image folder lacks.

Layouts: a JSON file; a folder with one per split (``train/_annotations.coco.json`` with the images
beside it: Roboflow's export; ``annotations/instances_train2017.json`` + ``train2017/``: COCO's);
the split is read from the JSON's folder name or file name (``train``, ``val``/``valid``,
``test``). Each JSON's image folder, unless given, is the first of: the JSON's folder, its
``images/``, a folder under the root whose name is in the JSON's name (``train2017``), the root's
``images/``, the root; that holds the first image the JSON lists.

Roboflow adds a category named after the dataset that no box uses and that is the
``supercategory`` of every other: such a category is left out (and said so).
"""

from __future__ import annotations

import json
import logging
import re
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from detector.data.importers.source import (
    Problem,
    Source,
    SourceBox,
    SourceImage,
    split_of_folder,
)
from detector.data.records import load_records
from detector.errors import BadRecordError, MissingFileError

__all__ = ["find_jsons", "looks_like_coco", "read_coco"]

# The image id in a message of detector.data.records ("image id 12 (a.jpg)", "(image id 12, a.jpg)").
_IMAGE_ID = re.compile(r"image id (-?\d+)[ ,)]")


def _is_coco(path: Path) -> bool:
    try:
        with path.open("rb") as f:
            head = f.read(1 << 16).decode("utf-8", "ignore")
    except OSError:
        return False
    return '"images"' in head or '"annotations"' in head or '"categories"' in head


def _split_of(path: Path, root: Path) -> str | None:
    if path.parent != root and (split := split_of_folder(path.parent.name)):
        return split
    tokens = re.split(r"[^a-z]+", path.stem.lower())
    return next((s for t in tokens if (s := split_of_folder(t))), None)


def find_jsons(root: Path) -> dict[str | None, Path]:
    """``{split: COCO JSON}`` of ``root`` (a JSON file, or a folder with at most one per split)."""
    if root.is_file():
        return {_split_of(root, root.parent): root}
    found = [p for pattern in ("*.json", "*/*.json") for p in sorted(root.glob(pattern)) if _is_coco(p)]
    by_split: dict[str | None, Path] = {}
    for path in found:
        split = _split_of(path, root)
        if split in by_split:
            raise BadRecordError(f"{root}: two COCO JSONs for the {split or 'same'} split ({by_split[split]}, {path}): give the one to import")
        by_split[split] = path
    if None in by_split and len(by_split) > 1:
        raise BadRecordError(f"{root}: {by_split[None]} names no split beside {sorted(s for s in by_split if s)}: give the one to import")
    return by_split


def looks_like_coco(root: Path) -> bool:
    if root.is_file():
        return root.suffix.lower() == ".json"
    return root.is_dir() and any(_is_coco(p) for pattern in ("*.json", "*/*.json") for p in root.glob(pattern))


def _image_dir(json_path: Path, root: Path, first: str | None) -> Path:
    folder = json_path.parent
    stem = json_path.stem.lower()
    named = [p for p in sorted(root.iterdir()) if p.is_dir() and p.name.lower() in stem] if root.is_dir() else []
    named += [p for p in sorted((root / "images").iterdir()) if p.is_dir() and p.name.lower() in stem] if (root / "images").is_dir() else []
    candidates = [folder, folder / "images", *named, root / "images", root]
    return next((c for c in candidates if first is not None and (c / first).is_file()), folder)


def _check_files(json_path: Path, image_dir: Path, files: list[str]) -> None:
    """Name every image file the JSON lists that the folder lacks."""
    missing = [f for f in files if not (image_dir / f).is_file()]
    if not missing:
        return
    if len(missing) == len(files):
        raise MissingFileError(f"{json_path}: none of its {len(files)} images is in {image_dir} (first: {files[0]}): "
                               "give the image folder with --images DIR")
    raise MissingFileError(f"{json_path}: {len(missing)} of its {len(files)} image files are not in {image_dir}: "
                           + ", ".join(missing) + " (remove them from the JSON, or --on-bad-record skip leaves them out)")


@contextmanager
def _quiet_records() -> Iterator[None]:
    """``load_records`` logs each skipped record; the importer reports them itself."""
    logger = logging.getLogger("detector.data.records")
    level = logger.level
    logger.setLevel(logging.ERROR)  # setLevel, not .level =: it clears the loggers' isEnabledFor cache
    try:
        yield
    finally:
        logger.setLevel(level)


def read_coco(root: Path, images: Path | None = None, check_files: bool = True) -> Source:
    """Read the COCO JSON(s) of ``root``; ``images``: the image folder of every JSON (default: found
    as above); ``check_files``: refuse a JSON whose image files are not all there, naming them
    (off: those images become bad records, for ``--on-bad-record skip``)."""
    jsons = find_jsons(root)
    if not jsons:
        raise BadRecordError(f"{root}: no COCO JSON (with images, annotations, categories) found")
    base = root.parent if root.is_file() else root
    raw = {split: json.loads(path.read_text(encoding="utf-8-sig")) for split, path in jsons.items()}
    used = {a.get("category_id") for data in raw.values() for a in data.get("annotations", []) if isinstance(a, dict)}
    cats = [c for data in raw.values() for c in data.get("categories", []) if isinstance(c, dict)]
    parents = {c.get("supercategory") for c in cats}
    unused_parents = {c.get("name") for c in cats if c.get("id") not in used and c.get("name") in parents}
    problems: list[Problem] = []
    out: list[SourceImage] = []
    names: list[str] = []
    clipped: list[str] = []
    for split, path in jsons.items():
        files = [str(i.get("file_name")) for i in raw[split].get("images", []) if isinstance(i, dict)]
        image_dir = images or _image_dir(path, base, files[0] if files else None)
        if check_files:
            _check_files(path, image_dir, files)
        with _quiet_records():
            loaded = load_records(path, image_dir, on_bad_record="skip")
        report = loaded.report
        boxes_of = Counter(a.get("image_id") for a in raw[split].get("annotations", []) if isinstance(a, dict))
        for message, reason in zip(report.problems, report.reasons):
            image = _IMAGE_ID.search(message)
            if reason == "unknown image id" or image is None:  # an annotation alone, no image lost
                problems.append(Problem(message, reason, "", 1, split))
            else:
                problems.append(Problem(message, reason, f"{path} image id {image.group(1)}", boxes_of[int(image.group(1))], split))
        clipped += [f"a box in {path}"] * report.clipped
        names += [n for n in loaded.class_names if n not in names and n not in unused_parents]
        for record in loaded.records:
            labels = [loaded.class_names[i] for i in record.labels]
            boxes = [SourceBox(n, tuple(float(v) for v in b), bool(d)) for n, b, d in zip(labels, record.boxes, record.difficult)]
            out.append(SourceImage(record.path, record.width, record.height, boxes, split, f"{path} image id {record.image_id}"))
    notes = [f"categories {sorted(unused_parents)} left out: no box uses them and they are the supercategory of the others"] if unused_parents else []
    layout = ", ".join(f"{(s + ': ') if s else ''}{p.relative_to(base) if p.is_relative_to(base) else p}" for s, p in jsons.items())
    return Source("coco", base, layout, out, names, problems, clipped, notes=notes)
