"""``detector data import PATH --out data/NAME``: a labelled folder in any common format -> the
COCO-style JSONs the pipeline reads, ``split.json`` and a ready ``config.yaml``; nothing downstream
changes, and the images are referenced where they are, not copied.

Steps: find the format (``--format auto``: a ``data.yaml`` means YOLO, XML files VOC, a COCO
JSON COCO, ``labels/*.txt`` YOLO); read it (:mod:`voc_xml`, :mod:`yolo_txt`, :mod:`coco_json`:
every image's size from its header); decode every image once (:mod:`decoding`: one that cannot be
decoded is a bad record; a truncated one PIL can still read is restored once the import goes
ahead, under ``out/restored/``); settle the
bad records (``--on-bad-record error``, the default: one line naming the file and the record, and
how many more; ``skip``: their images are left out, unless more than ``--max-skipped-fraction`` of
a split's images or boxes would be, :mod:`detector.data.skip_guard`); carve the missing splits
(:mod:`splits`); write (:mod:`writing`, :mod:`config_file`); return the summary.
"""

from __future__ import annotations

import os
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from detector.data.importers.coco_json import looks_like_coco, read_coco
from detector.data.importers.config_file import write_config
from detector.data.importers.decoding import check_images, restore
from detector.data.importers.source import Source
from detector.data.importers.splits import SplitPlan, plan_splits
from detector.data.importers.voc_xml import looks_like_voc, read_voc
from detector.data.importers.writing import summary, write_jsons
from detector.data.importers.yolo_txt import find_yaml, looks_like_yolo, read_yolo
from detector.data.skip_guard import check_fraction, check_skipped
from detector.defaults import MAX_SKIPPED_FRACTION
from detector.errors import BadRecordError, ConfigError, MissingFileError

__all__ = ["FORMATS", "Imported", "detect_format", "import_dataset", "read_source"]

Format = Literal["auto", "voc", "yolo", "coco"]
FORMATS: tuple[str, ...] = ("auto", "voc", "yolo", "coco")

# How many problems the refusal quotes.
_FIRST = 3


@dataclass(frozen=True)
class Imported:
    """What an import wrote, and the summary to print."""

    source: Source
    plan: SplitPlan
    jsons: dict[str, Path]
    image_dir: Path
    config: Path
    summary: str


def detect_format(path: Path) -> str:
    """``yolo``, ``voc`` or ``coco`` for the labelled folder (or file) ``path``."""
    if path.is_file():
        kind = {".json": "coco", ".yaml": "yolo", ".yml": "yolo"}.get(path.suffix.lower())
        if kind is None:
            raise ConfigError(f"{path}: import a folder, a COCO .json or a YOLO data.yaml")
        return kind
    if find_yaml(path) is not None:
        return "yolo"
    for kind, looks in (("voc", looks_like_voc), ("coco", looks_like_coco), ("yolo", looks_like_yolo)):
        if looks(path):
            return kind
    raise ConfigError(f"{path}: no VOC XML, COCO JSON or YOLO labels found; give --format voc|yolo|coco")


def read_source(path: Path, fmt: Format = "auto", classes: list[str] | None = None, images: Path | None = None,
                check_files: bool = True) -> Source:
    """Read ``path`` in format ``fmt`` (``auto``: :func:`detect_format`)."""
    if not path.exists():
        raise MissingFileError(f"{path}: no such folder or file")
    kind = detect_format(path) if fmt == "auto" else fmt
    if classes and kind != "voc":
        raise ConfigError(f"--classes is for VOC XML; {kind} data names its classes itself")
    if images is not None and kind != "coco":
        raise ConfigError(f"--images is for COCO JSON; {kind} data is found beside its labels")
    if kind == "voc":
        return read_voc(path, classes)
    if kind == "yolo":
        return read_yolo(path)
    return read_coco(path, images, check_files)


def settle(source: Source, on_bad_record: str, max_fraction: float) -> None:
    """Refuse the bad records (``error``), or check that leaving their images out (``skip``)
    leaves out at most ``max_fraction`` of each split's images and boxes."""
    problems = source.problems
    if not problems:
        return
    if on_bad_record == "error":
        first = "; ".join(p.message for p in problems[:_FIRST])
        more = f"; ... and {len(problems) - _FIRST} more" if len(problems) > _FIRST else ""
        raise BadRecordError(f"{len(problems)} bad record(s) in {source.root}: {first}{more} "
                             "(fix them, or --on-bad-record skip leaves their images out)")
    kept: dict[str | None, list[int]] = defaultdict(lambda: [0, 0])
    for image in source.images:
        kept[image.split][0] += 1
        kept[image.split][1] += len(image.boxes)
    for split in {p.split for p in problems}:
        mine = [p for p in problems if p.split == split]
        lost = {p.image: p.boxes for p in mine if p.image}
        boxes = sum(lost.values()) + sum(p.boxes for p in mine if not p.image)
        check_skipped(
            f"{source.root} ({split or 'all'} images)", len(lost), kept[split][0] + len(lost), boxes, kept[split][1] + boxes,
            [p.reason for p in mine], [p.message for p in mine], max_fraction, "--max-skipped-fraction",
        )


def import_dataset(
    path: str | Path,
    out: str | Path,
    fmt: Format = "auto",
    name: str | None = None,
    val_fraction: float | None = None,
    test_fraction: float | None = None,
    seed: int = 0,
    on_bad_record: str = "error",
    max_skipped_fraction: float = MAX_SKIPPED_FRACTION,
    flip: bool = True,
    classes: list[str] | None = None,
    images: str | Path | None = None,
) -> Imported:
    """Import the labelled data at ``path`` into ``out`` (see the module's docstring).

    Args:
        path: the dataset's folder (or a COCO JSON, or a YOLO data.yaml).
        out: the folder for the JSONs, ``split.json`` and ``config.yaml`` (created).
        fmt: ``auto``, ``voc``, ``yolo`` or ``coco``.
        name: the dataset's name (JSON names, run name); default: ``out``'s folder name.
        val_fraction, test_fraction: share of all images for a split the source lacks (default 0.15).
        seed: the split's seed.
        on_bad_record: ``error`` or ``skip``; max_skipped_fraction: the most ``skip`` may leave out.
        flip: the config's train-time horizontal flip.
        classes: VOC only: the class names in label order.
        images: COCO only: the image folder of every JSON.
    """
    if on_bad_record not in ("error", "skip"):
        raise ConfigError(f"--on-bad-record {on_bad_record!r}: give error or skip")
    check_fraction(max_skipped_fraction, "--max-skipped-fraction")
    # Absolute and without "..", symlinks kept: the config names the images by these paths.
    path, out = Path(os.path.abspath(path)), Path(os.path.abspath(out))
    name = name or out.name
    images = Path(os.path.abspath(images)) if images else None
    source = read_source(path, fmt, classes, images, check_files=on_bad_record == "error")
    truncated = check_images(source)
    settle(source, on_bad_record, max_skipped_fraction)
    if not source.images:
        raise BadRecordError(f"{path}: no usable image found")
    root = source.root.absolute()
    keys = [_key(i.path.absolute(), root) for i in source.images]
    plan = plan_splits(keys, [[b.label for b in i.boxes] for i in source.images], [i.split for i in source.images],
                       val_fraction, test_fraction, seed)
    restore(source, truncated, out)
    jsons, image_dir = write_jsons(source, plan, out, name)
    train = [i for i, s in zip(source.images, plan.splits) if s == "train"]
    config = write_config(out / "config.yaml", name, {s: p.absolute() for s, p in jsons.items()}, image_dir, train,
                          str(root), flip)
    text = summary(source, plan, jsons, image_dir)
    return Imported(source, plan, jsons, image_dir, config, text)


def _key(path: Path, root: Path) -> str:
    """An image's name for the split's hash: its path below the dataset's root, ``/``-separated."""
    try:
        return path.relative_to(root).as_posix()
    except ValueError:  # a YOLO list file or COCO --images outside the root
        return path.as_posix()
