"""An imported :class:`Source` -> one COCO-style JSON per split, ``split.json``, and the summary.

The JSONs are what :func:`detector.data.records.load_records` reads: ``images`` (``id``,
``file_name``, ``width``, ``height``), ``annotations`` (``bbox = [x, y, w, h]`` continuous pixels,
``category_id``, ``ignore`` = difficult, ``iscrowd`` 0, ``area``), ``categories`` (ids 1..C in
label order). The images stay where they are: ``image_dir`` is the deepest folder that holds all
of them (absolute), and each ``file_name`` is the image's path below it (``train/a.jpg`` for
per-split folders), so one ``data.image_dir`` serves every split. A truncated image the import
restored (``SourceImage.restored``, under ``out/restored/``) is named by the absolute path of its
copy (an absolute ``file_name`` is read as it is), so ``image_dir`` and every other ``file_name``
stay what they were; ``split.json`` lists each restored copy beside its original. Image ids are 1..N over all
splits, in the order of those paths. ``split.json`` records each split's images and how the
missing splits were carved (seed, fractions), so the split can be checked and rebuilt.
"""

from __future__ import annotations

import json
import os
from collections import Counter, defaultdict
from pathlib import Path

from detector.data.importers.source import Source, SourceImage
from detector.data.importers.splits import SplitPlan
from detector.defaults import SPLITS

__all__ = ["common_folder", "summary", "write_jsons"]


def _plain(v: float) -> int | float:
    """A coordinate to 3 decimals (a thousandth of a pixel), integral ones as ints."""
    v = round(float(v), 3)
    return int(v) if v.is_integer() else v


def common_folder(images: list[SourceImage]) -> Path:
    """The deepest folder that holds every image (absolute)."""
    return Path(os.path.commonpath([str(i.path.absolute().parent) for i in images]))


def write_jsons(source: Source, plan: SplitPlan, out: Path, name: str) -> tuple[dict[str, Path], Path]:
    """Write ``out/{name}_{split}.json`` for each split and ``out/split.json``.

    Returns:
        ``({split: json path}, image_dir)``.
    """
    image_dir = common_folder(source.images)
    relative = [i.path.absolute().relative_to(image_dir).as_posix() for i in source.images]
    order = sorted(range(len(source.images)), key=relative.__getitem__)
    file_name = [i.restored.absolute().as_posix() if i.restored else r for i, r in zip(source.images, relative)]
    category = {n: k + 1 for k, n in enumerate(source.class_names)}
    categories = [{"id": k, "name": n, "supercategory": "none"} for n, k in category.items()]
    per_split: dict[str, dict[str, list]] = defaultdict(lambda: {"images": [], "annotations": []})
    next_ann = 1
    for image_id, i in enumerate(order, start=1):
        image, split = source.images[i], plan.splits[i]
        per_split[split]["images"].append({"id": image_id, "file_name": file_name[i], "width": image.width, "height": image.height})
        for box in image.boxes:
            x0, y0, x1, y1 = box.xyxy
            w, h = x1 - x0, y1 - y0
            per_split[split]["annotations"].append({
                "id": next_ann, "image_id": image_id, "bbox": [_plain(x0), _plain(y0), _plain(w), _plain(h)],
                "area": _plain(w * h), "category_id": category[box.label], "ignore": int(box.difficult), "iscrowd": 0,
            })
            next_ann += 1
    out.mkdir(parents=True, exist_ok=True)
    written = {}
    for split in (s for s in SPLITS if s in per_split):
        path = out / f"{name}_{split}.json"
        path.write_text(json.dumps({**per_split[split], "categories": categories, "type": "instances"}))
        written[split] = path
    record = {
        "source": str(source.root.absolute()), "format": source.format, "image_dir": str(image_dir),
        "seed": plan.seed, "fractions": plan.fractions, "carved": plan.carved, "carved_from": plan.pool,
        "splits": {s: [i["file_name"] for i in per_split[s]["images"]] for s in written},
    }
    restored = {relative[i]: file_name[i] for i in order if source.images[i].restored}
    if restored:
        record["restored"] = restored
    (out / "split.json").write_text(json.dumps(record, indent=1) + "\n")
    return written, image_dir


def _first(items: list[str], n: int = 3) -> str:
    return "; ".join(items[:n]) + (f"; ... and {len(items) - n} more" if len(items) > n else "")


def summary(source: Source, plan: SplitPlan, written: dict[str, Path], image_dir: Path) -> str:
    """The lines ``detector data import`` prints: what was found, per split, and what was changed."""
    names = source.class_names
    rows = [["split", "images", "no boxes", "boxes", *names]]
    totals = Counter()
    for split in written:
        images = [im for im, s in zip(source.images, plan.splits) if s == split]
        per_class = Counter(b.label for im in images for b in im.boxes)
        counts = [len(images), sum(not im.boxes for im in images), sum(per_class.values())] + [per_class[n] for n in names]
        totals.update(dict(enumerate(counts)))
        rows.append([split, *map(str, counts)])
    rows.append(["all", *(str(totals[k]) for k in range(3 + len(names)))])
    widths = [max(len(r[k]) for r in rows) for k in range(len(rows[0]))]
    table = ["  " + "  ".join(c.rjust(w) if k else c.ljust(w) for k, (c, w) in enumerate(zip(r, widths))) for r in rows]
    lines = [f"{source.format.upper()} from {source.root} ({source.layout}); {len(names)} class{'' if len(names) == 1 else 'es'}; images in {image_dir}", *table]
    difficult = sum(b.difficult for im in source.images for b in im.boxes)
    if difficult:
        lines.append(f"  difficult (ignored in evaluation): {difficult} boxes")
    lines.append(f"  boxes clipped to their image: {len(source.clipped)}" + (f" ({_first(source.clipped)})" if source.clipped else ""))
    if source.dropped:
        lines.append(f"  boxes dropped, without extent (x1 <= x0 or y1 <= y0): {len(source.dropped)} ({_first(source.dropped)})")
    if source.problems:
        lost = {p.image: p.boxes for p in source.problems if p.image}
        boxes = sum(lost.values()) + sum(p.boxes for p in source.problems if not p.image)  # + annotations of no image
        reasons = ", ".join(f"{n} {r}" for r, n in Counter(p.reason for p in source.problems).most_common())
        lines.append(f"  left out (--on-bad-record skip): {len(lost)} images with {boxes} boxes; problems: {reasons}")
        lines.append(f"    first: {_first([p.message for p in source.problems])}")
    lines += [f"  note: {n}" for n in source.notes + plan.notes]
    if plan.carved:
        carved = ", ".join(f"{s} {n} images ({plan.fractions[s]:g})" for s, n in plan.carved.items())
        lines.append(f"  split: {carved} carved from {plan.pool}, stratified by rarest class, seed {plan.seed}")
    return "\n".join(lines)
