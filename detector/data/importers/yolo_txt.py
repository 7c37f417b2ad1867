"""YOLO txt labels -> :class:`~detector.data.importers.source.Source`.

The ultralytics layout: a ``data.yaml`` with ``names`` (a list, or ``{id: name}``) and ``train``,
``val`` and optionally ``test``, each a folder of images, a list of folders, or a ``.txt`` file
listing image paths (relative to its own folder); ``path`` (optional) is the root they are
relative to. As ultralytics resolves them: relative to ``path`` (or the YAML's folder), and an
entry starting with ``../`` that does not exist there is tried without it (Roboflow writes
``train: ../train/images``). Without a YAML: ``images/`` + ``labels/`` (optionally with
``train/``, ``val/``, ``test/`` inside each, or ``train/images`` + ``train/labels`` per split) and
the names one per line in ``classes.txt`` (or ``obj.names``).

An image's labels are at its path with the last ``/images/`` replaced by ``/labels/`` and the
extension by ``.txt`` (ultralytics' ``img2label_paths``); a missing label file is an image without
objects. Each line is ``class cx cy w h``, the box's centre and size divided by the image's width
and height; the image's size is read from its header (EXIF orientation applied, as ultralytics does).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from detector.data.importers.source import (
    IMAGE_EXTENSIONS,
    Problem,
    Source,
    SourceBox,
    SourceImage,
    clip_box,
    read_size,
    split_of_folder,
)
from detector.defaults import SPLITS
from detector.errors import BadRecordError

__all__ = ["find_yaml", "looks_like_yolo", "read_yolo"]

_NAME_FILES = ("classes.txt", "obj.names", "classes.names", "_darknet.labels")


def find_yaml(root: Path) -> Path | None:
    """``root`` if it is a YAML file; else its ``data.yaml``, or its one YAML with ``names``."""
    if root.is_file():
        return root if root.suffix.lower() in (".yaml", ".yml") else None
    candidates = [root / "data.yaml", root / "data.yml"] + sorted(root.glob("*.y*ml"))
    for path in candidates:
        if path.is_file():
            try:
                data = yaml.safe_load(path.read_text())
            except yaml.YAMLError:
                continue
            if isinstance(data, dict) and "names" in data:
                return path
    return None


def looks_like_yolo(root: Path) -> bool:
    """A data.yaml, or a ``labels`` folder with txt files at most two folders down."""
    if find_yaml(root) is not None:
        return True
    return root.is_dir() and any(p.suffix == ".txt" and "labels" in p.parts for pattern in ("*/*", "*/*/*", "*/*/*/*") for p in root.glob(pattern))


def label_path(image: Path) -> Path:
    """ultralytics' ``img2label_paths``: the last ``/images/`` -> ``/labels/``, extension -> ``.txt``."""
    text = str(image)
    sa, sb = f"{os.sep}images{os.sep}", f"{os.sep}labels{os.sep}"
    if sa in text:
        text = sb.join(text.rsplit(sa, 1))
    return Path(text).with_suffix(".txt")


def _names(data: dict[str, Any], where: Path) -> list[str]:
    names = data.get("names")
    if isinstance(names, dict):
        if sorted(names) != list(range(len(names))):
            raise BadRecordError(f"{where}: names must have the ids 0..{len(names) - 1}, got {sorted(names)}")
        names = [names[i] for i in range(len(names))]
    if not isinstance(names, list) or not names:
        raise BadRecordError(f"{where}: names must be a list of class names (or {{id: name}}), got {names!r}")
    if "nc" in data and data["nc"] != len(names):
        raise BadRecordError(f"{where}: nc is {data['nc']} but names has {len(names)} entries")
    return [str(n) for n in names]


def _images_of(entry: Path) -> list[Path]:
    """The images of a split entry: a folder (searched recursively) or a list file."""
    if entry.is_dir():
        return sorted(p for p in entry.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
    lines = [line.strip() for line in entry.read_text().splitlines() if line.strip()]
    return [p if p.is_absolute() else (entry.parent / p) for p in map(Path, lines)]


def _from_yaml(path: Path) -> tuple[list[str], dict[str, list[Path]], str]:
    data = yaml.safe_load(path.read_text()) or {}
    names = _names(data, path)
    base = Path(str(data.get("path") or "")).expanduser()
    base = base if base.is_absolute() else path.parent / base
    splits: dict[str, list[Path]] = {}
    for split, key in (("train", "train"), ("val", "val"), ("val", "valid"), ("test", "test")):
        given = data.get(key)
        if not given or split in splits:
            continue
        images = []
        for text in given if isinstance(given, list) else [given]:
            entry = base / str(text)
            if not entry.exists() and str(text).startswith("../"):
                entry = base / str(text)[3:]
            if not entry.exists():
                raise BadRecordError(f"{path}: {key}: {text} is neither a folder nor a list file (looked for {entry})")
            images += _images_of(entry)
        splits[split] = images
    if "train" not in splits:
        raise BadRecordError(f"{path}: no train entry (want train: and val: folders or list files)")
    return names, splits, f"{path.name}: " + ", ".join(f"{s} {len(v)} images" for s, v in splits.items())


def _bare(root: Path) -> tuple[list[str], dict[str | None, list[Path]], str]:
    name_file = next((f for d in (root, root / "labels") for n in _NAME_FILES if (f := d / n).is_file()), None)
    if name_file is None:
        raise BadRecordError(f"{root}: YOLO labels without class names: add a data.yaml with names: [...] (or classes.txt)")
    names = [line.strip() for line in name_file.read_text().splitlines() if line.strip()]
    folders = {s: p / "images" for n, p in ((p.name, p) for p in sorted(root.iterdir()) if p.is_dir())
               if (s := split_of_folder(n)) and (p / "images").is_dir()}
    if not folders and (root / "images").is_dir():
        inside = {s: p for p in sorted((root / "images").iterdir()) if p.is_dir() and (s := split_of_folder(p.name))}
        folders = inside or {None: root / "images"}  # type: ignore[dict-item]
    if not folders:
        raise BadRecordError(f"{root}: no images/ folder (want images/ + labels/, or train/images + train/labels)")
    splits = {s: _images_of(p) for s, p in folders.items()}
    described = ", ".join(f"{s or 'all'} {len(splits[s])} images in {p.relative_to(root)}" for s, p in folders.items())
    return names, splits, f"{name_file.name}: {described}"


def _parse(label: Path, names: list[str], size: tuple[int, int], clipped: list[str],
           dropped: list[str]) -> tuple[list[SourceBox], list[tuple[str, str]]]:
    """One label file -> (boxes, [(problem, reason)]); a box without extent is dropped (named in ``dropped``)."""
    boxes, bad = [], []
    for n, line in enumerate(label.read_text().splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        where = f"{label} line {n}"
        try:
            values = [float(v) for v in parts]
        except ValueError:
            values = []
        if len(parts) != 5 or not values or not values[0].is_integer():
            bad.append((f"{where}: expected 'class cx cy w h' (an integer and four numbers), got {line.strip()!r}", "malformed line"))
            continue
        cls, cx, cy, w, h = int(values[0]), *values[1:]
        if not 0 <= cls < len(names):
            bad.append((f"{where}: class {cls} is not one of the {len(names)} classes (0..{len(names) - 1})", "unknown class"))
            continue
        width, height = size
        xyxy, was_clipped, trouble = clip_box(((cx - w / 2) * width, (cy - h / 2) * height, (cx + w / 2) * width, (cy + h / 2) * height), width, height)
        if trouble == "box without extent":
            dropped.append(f"{where} ({' '.join(parts[1:])})")
            continue
        if trouble:
            bad.append((f"{where}: {trouble} (cx cy w h = {' '.join(parts[1:])}, image {width} x {height})", trouble))
            continue
        if was_clipped:
            clipped.append(where)
        boxes.append(SourceBox(names[cls], xyxy))
    return boxes, bad


def _lines(label: Path) -> int:
    """The boxes a label file holds (its non-empty lines); 0 when there is none."""
    return sum(bool(line.strip()) for line in label.read_text().splitlines()) if label.is_file() else 0


def read_yolo(root: Path) -> Source:
    """Read a YOLO dataset: ``root`` a ``data.yaml``, or a folder with one, or the bare layout above."""
    yaml_path = find_yaml(root)
    names, splits, layout = _from_yaml(yaml_path) if yaml_path else _bare(root)
    root = root.parent if root.is_file() else root
    problems: list[Problem] = []
    images: list[SourceImage] = []
    clipped: list[str] = []
    dropped: list[str] = []
    seen: dict[Path, str | None] = {}
    label_dirs: dict[Path, str | None] = {}
    for split, paths in splits.items():
        for path in paths:
            path = path.resolve()
            if path in seen:
                raise BadRecordError(f"{path} is in both the {seen[path]} and the {split} split: each image belongs to one split")
            seen[path] = split
            label = label_path(path)
            label_dirs.setdefault(label.parent, split)
            count = _lines(label)
            size, trouble = read_size(path)
            if size is None:
                problems.append(Problem(f"{path}: {trouble}", "image cannot be decoded", str(path), count, split))
                continue
            boxes, bad = _parse(label, names, size, clipped, dropped) if label.is_file() else ([], [])
            problems += [Problem(m, r, str(path), count, split) for m, r in bad]
            if not bad:
                images.append(SourceImage(path, size[0], size[1], boxes, split, str(label)))
    expected = {label_path(p) for p in seen}
    for folder, split in sorted(label_dirs.items()):
        for label in sorted(folder.glob("*.txt")) if folder.is_dir() else []:
            if label.resolve() not in expected and label.name not in _NAME_FILES:
                problems.append(Problem(f"{label}: a label file without an image (no {label.stem}.* among the images)",
                                        "label file without an image", str(label), _lines(label), split))
    split_names = [s for s in SPLITS if s in splits]
    return Source("yolo", root, layout + (f" (splits: {', '.join(split_names)})" if split_names else ""), images, names, problems, clipped, dropped)
