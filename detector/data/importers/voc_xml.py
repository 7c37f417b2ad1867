"""VOC XML in any common layout -> :class:`~detector.data.importers.source.Source`.

Layouts (folder names matched case-insensitively):

- a VOCdevkit folder: ``Annotations/*.xml`` + ``JPEGImages/`` (or ``images/``), with optional
  ``ImageSets/Main/{train,val,trainval,test}.txt`` naming the splits (``trainval`` stands for
  train when there is no ``train.txt``, less what ``val.txt`` or ``test.txt`` names; an XML that no
  split file names is left out, and said so; a split file may name an XML that is not in
  ``Annotations/`` but beside its image or elsewhere under the folder, under the same stem (as in
  some published datasets): that one is used, and said so);
- the XMLs and the images in one folder, or in two sibling folders (``annotations/`` + ``images/``);
- one such folder per split: ``train/``, ``valid/`` or ``val/``, ``test/`` (Roboflow's export).

Each XML's image is found by its real name on disk: the XML's ``<filename>`` when a file of that
name is in the image folder, else the XML's stem with any image extension; both matched
case-insensitively (``IMG_1.JPG`` for ``img_1.jpg``). The image's size is read from its header; a
missing ``<size>`` is filled from it, a ``<size>`` that differs from it is reported (the image's
is used). Boxes: VOC's corners are 1-based inclusive pixels, so ``(xmin, ymin, xmax, ymax)`` ->
``(xmin - 1, ymin - 1, xmax, ymax)`` continuous pixels, as ``detector.data.voc`` converts them
(coinciding corners are a box without extent). ``<difficult>`` is optional (0 when absent).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from detector.data.importers.source import (
    IMAGE_EXTENSIONS,
    Problem,
    Source,
    SourceBox,
    SourceImage,
    clip_box,
    image_index,
    read_size,
    split_of_folder,
)
from detector.data.voc import VOC_CLASSES, VocAnnotation, VocFormatError, parse_voc_xml, voc_to_xyxy
from detector.defaults import SPLITS
from detector.errors import BadRecordError

__all__ = ["looks_like_voc", "read_voc"]


@dataclass(frozen=True)
class _Unit:
    """One folder of XMLs and its images; ``split`` from the folder's name, or ``lists`` from
    ``ImageSets/Main`` (split -> (the split list file read, the stems it names)), or neither."""

    folder: Path
    xml_dir: Path
    image_dir: Path
    split: str | None
    lists: dict[str, tuple[Path, list[str]]] | None
    described: str


def _files(folder: Path, suffixes: tuple[str, ...]) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in suffixes and p.is_file()) if folder.is_dir() else []


def _subfolders(folder: Path) -> dict[str, Path]:
    return {p.name.lower(): p for p in sorted(folder.iterdir()) if p.is_dir()}


def looks_like_voc(root: Path) -> bool:
    """Whether ``root`` holds XML files at most two folders down."""
    return root.is_dir() and any(
        p.suffix.lower() == ".xml" for pattern in ("*", "*/*", "*/*/*") for p in root.glob(pattern)
    )


def _unit(folder: Path, split: str | None) -> _Unit:
    subs = _subfolders(folder)
    with_images = [s for s in subs.values() if _files(s, IMAGE_EXTENSIONS)]
    if "annotations" in subs and _files(subs["annotations"], (".xml",)):
        xml_dir = subs["annotations"]
        image_dir = subs.get("jpegimages") or subs.get("images") or (with_images[0] if len(with_images) == 1 else folder)
    elif _files(folder, (".xml",)):
        xml_dir = folder
        image_dir = folder if _files(folder, IMAGE_EXTENSIONS) or len(with_images) != 1 else with_images[0]
    else:
        with_xml = [s for s in subs.values() if _files(s, (".xml",))]
        if len(with_xml) != 1 or len(with_images) != 1:
            raise BadRecordError(
                f"{folder}: no VOC layout found (want XMLs and images in one folder, in two sibling folders, "
                "or Annotations/ + JPEGImages/); give --format if this is another format"
            )
        xml_dir, image_dir = with_xml[0], with_images[0]
    lists: dict[str, tuple[Path, list[str]]] | None = None
    sets = next((subs["imagesets"] / m for m in ("Main", "main") if "imagesets" in subs and (subs["imagesets"] / m).is_dir()), None)
    if split is None and sets is not None:
        files = {s: sets / f"{s}.txt" for s in ("train", "trainval", "val", "test")}
        if not files["train"].is_file():
            files["train"] = files["trainval"]
        # in split order: an image that trainval.txt (as train) and val.txt both name is val's
        found = {s: files[s] for s in SPLITS if files[s].is_file()}
        lists = {s: (p, [line.split()[0] for line in p.read_text().splitlines() if line.strip()]) for s, p in found.items()} or None
    where = "one folder" if xml_dir == image_dir else f"{xml_dir.name}/ + {image_dir.name}/"
    if lists:
        where += f", splits from {sets.relative_to(folder)} ({', '.join(lists)})"
    return _Unit(folder, xml_dir, image_dir, split, lists, where)


def _misplaced(unit: _Unit, stems: list[str]) -> tuple[dict[str, Path], dict[str, list[Path]]]:
    """The XMLs of ``stems`` (named by a split file, not in ``unit.xml_dir``) found elsewhere under
    the unit's folder, matched by stem case-insensitively: ``({stem: the one beside its image, or
    the only one elsewhere}, {stem: the several found elsewhere, none beside the image})``."""
    if not stems:
        return {}, {}
    beside = {p.stem.lower(): p for p in _files(unit.image_dir, (".xml",))}
    elsewhere: dict[str, list[Path]] = {}
    for p in sorted(unit.folder.rglob("*")):
        if p.suffix.lower() == ".xml" and p.parent not in (unit.xml_dir, unit.image_dir) and p.is_file():
            elsewhere.setdefault(p.stem.lower(), []).append(p)
    found, several = {}, {}
    for stem in stems:
        there = [beside[stem.lower()]] if stem.lower() in beside else elsewhere.get(stem.lower(), [])
        if len(there) == 1:
            found[stem] = there[0]
        elif there:
            several[stem] = there
    return found, several


def _where_found(moved: dict[str, Path], unit: _Unit) -> str:
    """``"JPEGImages/ (2), extra/ (1)"``: the folders the misplaced XMLs were found in, below the unit's."""
    folders = Counter(p.parent.relative_to(unit.folder).as_posix() for p in moved.values())
    return ", ".join(f"{'./' if f == '.' else f + '/'} ({n})" for f, n in folders.most_common())


def _units(root: Path) -> list[_Unit]:
    per_split = {split_of_folder(name): p for name, p in _subfolders(root).items() if split_of_folder(name)}
    per_split = {s: p for s, p in per_split.items() if looks_like_voc(p)}
    if "train" in per_split:
        return [_unit(p, s) for s, p in sorted(per_split.items(), key=lambda sp: SPLITS.index(sp[0]))]
    return [_unit(root, None)]


def read_voc(root: Path, classes: list[str] | None = None) -> Source:
    """Read every XML under ``root`` in one of the layouts above.

    Args:
        root: the dataset folder.
        classes: the class names in label order; an object of another class is a bad record.
            Default: the names found, sorted (VOC's order when they are VOC's 20 classes).
    """
    units = _units(root)
    problems: list[Problem] = []
    images: list[SourceImage] = []
    notes: list[str] = []
    clipped: list[str] = []
    dropped: list[str] = []
    missing_size, wrong_size, unlisted, unannotated = 0, [], 0, 0
    parsed: list[tuple[VocAnnotation, Path, str | None]] = []
    for unit in units:
        split_of = {stem: s for s, (_, stems) in (unit.lists or {}).items() for stem in stems}
        xmls = _files(unit.xml_dir, (".xml",))
        stems = {p.stem for p in xmls}
        missing = [stem for _, listed in (unit.lists or {}).values() for stem in listed if stem not in stems]
        moved, several = _misplaced(unit, list(dict.fromkeys(missing)))
        for s, (list_file, listed) in (unit.lists or {}).items():
            for stem in listed:
                if stem in several:
                    problems.append(Problem(f"{list_file} names {stem!r}: not in {unit.xml_dir}, and several XMLs of that stem "
                                            f"elsewhere ({', '.join(map(str, several[stem]))}); keep one", "split file names a missing XML", stem, 0, s))
                elif stem not in stems and stem not in moved:
                    problems.append(Problem(f"{list_file} names {stem!r}, "
                                            f"but {unit.xml_dir / (stem + '.xml')} does not exist", "split file names a missing XML", stem, 0, s))
        if moved:
            notes.append(f"{len(moved)} XML(s) that the split files name were not in {unit.xml_dir.name}/: used the one of the same stem "
                         f"in {_where_found(moved, unit)} (first: {next(iter(moved.values()))})")
        by_name, by_stem = image_index(unit.image_dir)
        used: set[str] = set()
        for xml, stem in [(p, p.stem) for p in xmls] + [(p, stem) for stem, p in moved.items()]:
            split = unit.split if unit.lists is None else split_of.get(stem)
            if unit.lists is not None and split is None:
                unlisted += 1
                continue
            try:
                ann = parse_voc_xml(xml, require_size=False)
            except VocFormatError as e:
                problems.append(Problem(str(e), "malformed XML", str(xml), 0, split))
                continue
            wanted = Path(ann.filename).name.lower() if ann.filename else None
            name = by_name.get(wanted) if wanted else None
            name = name or next(iter(by_stem.get(stem.lower(), [])), None)
            if name is None:
                problems.append(Problem(
                    f"{xml}: no image for it in {unit.image_dir} (looked for <filename> {ann.filename!r} and "
                    f"{stem} with any image extension)", "label file without an image", str(xml), len(ann.objects), split))
                continue
            used.add(name)
            parsed.append((ann, unit.image_dir / name, split))
        with_xml = {stem.lower() for stem in [*stems, *moved]}
        unannotated += sum(n not in used and Path(n).stem.lower() not in with_xml for n in by_name.values())
    found = {obj.name for ann, _, _ in parsed for obj in ann.objects}
    names = list(classes) if classes else list(VOC_CLASSES) if found == set(VOC_CLASSES) else sorted(found)
    for ann, path, split in parsed:
        size, trouble = read_size(path)
        if size is None:
            problems.append(Problem(f"{path}: {trouble} (annotated in {ann.path})", "image cannot be decoded", str(path), len(ann.objects), split))
            continue
        if ann.width is None:
            missing_size += 1
        elif (ann.width, ann.height) != size:
            wrong_size.append(f"{ann.path.name} says {ann.width} x {ann.height}, {path.name} is {size[0]} x {size[1]}")
        boxes, bad = [], []
        for i, obj in enumerate(ann.objects):
            where = f"{ann.path} object {i} ({obj.name})"
            if obj.name not in names:
                bad.append((f"{where}: class {obj.name!r} is not one of {names}", "unknown class"))
                continue
            xyxy, was_clipped, trouble = clip_box(voc_to_xyxy(obj.box), *size)
            if trouble:
                corners = tuple(_plain(v) for v in obj.box)
                if trouble == "box without extent":  # dropped, the image kept: a click without a drag
                    dropped.append(f"{where} {corners}")
                    continue
                bad.append((f"{where}: {trouble} (xmin, ymin, xmax, ymax = {corners}, image {size[0]} x {size[1]})", trouble))
                continue
            if was_clipped:
                clipped.append(where)
            boxes.append(SourceBox(obj.name, xyxy, obj.difficult))
        problems += [Problem(message, reason, str(path), len(ann.objects), split) for message, reason in bad]
        if not bad:
            images.append(SourceImage(path, size[0], size[1], boxes, split, str(ann.path)))
    if missing_size:
        notes.append(f"{missing_size} XML(s) without a usable <size>: the size was read from the image")
    if wrong_size:
        notes.append(f"{len(wrong_size)} XML <size>(s) differ from the image (the image's size is used): "
                     + "; ".join(wrong_size[:3]) + (" ..." if len(wrong_size) > 3 else ""))
    if unlisted:
        notes.append(f"{unlisted} XML(s) named in no ImageSets/Main split file: left out")
    if unannotated:
        notes.append(f"{unannotated} image(s) without an XML: left out (give each an XML without objects to keep it as a negative)")
    layout = "; ".join(f"{u.split + '/: ' if u.split else ''}{u.described}" for u in units)
    return Source("voc", root, layout, images, names, problems, clipped, dropped, notes)


def _plain(v: float) -> int | float:
    return int(v) if float(v).is_integer() else v
