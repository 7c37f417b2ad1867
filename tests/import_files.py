"""One small labelled dataset written in every layout the importers read (VOC XML, YOLO txt, COCO
JSON), for the import tests: the same images and boxes each time, so every import must give the
same records."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from coco_files import write_jpeg

# (stem, extension, width, height, split, [(class, x0, y0, x1, y1) continuous pixels]); mixed-case
# and varied extensions, a negative, a box touching the corner.
TRUTH = [
    ("a", ".jpg", 48, 36, "train", [("cat", 4, 6, 20, 16), ("dog", 30, 20, 46, 34)]),
    ("b", ".JPG", 40, 30, "train", [("dog", 10, 5, 38, 28)]),
    ("c", ".png", 48, 36, "train", []),
    ("d", ".jpeg", 44, 32, "train", [("cat", 0, 0, 12, 10)]),
    ("e", ".jpg", 48, 36, "train", [("cat", 20, 10, 40, 30)]),
    ("f", ".jpg", 40, 40, "val", [("dog", 2, 2, 20, 38), ("cat", 22, 4, 38, 20)]),
    ("g", ".jpg", 48, 36, "val", [("dog", 5, 5, 25, 25)]),
    ("h", ".jpg", 36, 48, "test", [("cat", 6, 8, 30, 40)]),
]
CLASSES = ["cat", "dog"]
FOLDER = {"train": "train", "val": "valid", "test": "test"}  # Roboflow's folder names


def image(path: Path, width: int, height: int, boxes: list, seed: int) -> Path:
    """An image file of the given size (PIL tells the format by the content, not the name)."""
    write_jpeg(path, width, height, [b[1:] for b in boxes], seed=seed)
    return path


def truncate(path: Path, n: int = 20) -> Path:
    """``path`` without its last ``n`` bytes (a download cut short): PIL still reads the header,
    and the picture too with ``LOAD_TRUNCATED_IMAGES``, its missing end grey."""
    data = path.read_bytes()
    path.write_bytes(data[:-n])
    return path


def cut_before_scan(path: Path) -> Path:
    """A JPEG cut just before its start-of-scan marker: PIL reads its header (size, mode), but no
    picture at all, not even with ``LOAD_TRUNCATED_IMAGES``."""
    data = path.read_bytes()
    path.write_bytes(data[:data.index(b"\xff\xda")])
    return path


def voc_xml(path: Path, filename: str | None, size: tuple[int, int] | None, boxes: list) -> Path:
    """A VOC XML: 1-based inclusive corners, so a continuous x0..x1 is written xmin = x0 + 1, xmax = x1."""
    return voc_xml_raw(path, filename, size, [(name, x0 + 1, y0 + 1, x1, y1) for name, x0, y0, x1, y1 in boxes])


def voc_xml_raw(path: Path, filename: str | None = None, size: tuple[int, int] | None = (48, 36), objects: list = (),
                extra: str = "") -> Path:
    """A VOC XML with the corners as written: objects are (name, xmin, ymin, xmax, ymax[, difficult]);
    ``extra`` goes in as it is, before ``<size>``."""
    parts = ["<annotation>", f"<filename>{filename}</filename>" if filename else "", extra]
    if size:
        parts.append(f"<size><width>{size[0]}</width><height>{size[1]}</height><depth>3</depth></size>")
    for name, *corners in objects:
        difficult = f"<difficult>{corners.pop()}</difficult>" if len(corners) == 5 else ""
        parts.append(f"<object><name>{name}</name>{difficult}<bndbox>" + "".join(
            f"<{t}>{v}</{t}>" for t, v in zip(("xmin", "ymin", "xmax", "ymax"), corners)) + "</bndbox></object>")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(parts) + "</annotation>")
    return path


def _filename(stem: str, ext: str) -> str | None:
    """The XML's <filename>: b.jpg for B.JPG's case, d.jpg for d.jpeg (wrong: found by stem), none for c."""
    return {"b": "b.jpg", "c": None, "d": "d.jpg"}.get(stem, stem + ext)


def voc(root: Path, layout: str, sizes: bool = True, moved: dict[str, str] | None = None) -> Path:
    """The dataset in VOC ``layout``: devkit (ImageSets), devkit_no_sets, one_folder, two_folders, per_split;
    ``moved``: {stem: the folder below ``root`` its XML is written in instead} (an XML misplaced as
    in some published devkits: beside its image in JPEGImages/, or elsewhere)."""
    for k, (stem, ext, w, h, split, boxes) in enumerate(TRUTH):
        xml_dir, image_dir = {
            "devkit": ("Annotations", "JPEGImages"), "devkit_no_sets": ("Annotations", "JPEGImages"),
            "one_folder": (".", "."), "two_folders": ("annotations", "images"),
            "per_split": (FOLDER[split], FOLDER[split]),
        }[layout]
        image(root / image_dir / (stem + ext), w, h, boxes, k)
        xml_dir = (moved or {}).get(stem, xml_dir)
        voc_xml(root / xml_dir / f"{stem}.xml", _filename(stem, ext), (w, h) if sizes else None, boxes)
    if layout == "devkit":
        sets = root / "ImageSets" / "Main"
        sets.mkdir(parents=True)
        for split in ("train", "val", "test"):
            (sets / f"{split}.txt").write_text("".join(f"{t[0]}\n" for t in TRUTH if t[4] == split))
    return root


def yolo(root: Path, layout: str = "ultralytics") -> Path:
    """YOLO txt: ``ultralytics`` (data.yaml with names {id: name}; images/{split}, labels/{split}),
    ``roboflow`` (data.yaml with ``train: ../train/images`` and a names list; {split}/images,
    {split}/labels) or ``bare`` (images/ + labels/ + classes.txt, no split). No label file for the negative."""
    for k, (stem, ext, w, h, split, boxes) in enumerate(TRUTH):
        images, labels = {"ultralytics": (f"images/{split}", f"labels/{split}"), "bare": ("images", "labels"),
                          "roboflow": (f"{FOLDER[split]}/images", f"{FOLDER[split]}/labels")}[layout]
        image(root / images / (stem + ext), w, h, boxes, k)
        if boxes:
            lines = [f"{CLASSES.index(n)} {(x0 + x1) / 2 / w} {(y0 + y1) / 2 / h} {(x1 - x0) / w} {(y1 - y0) / h}"
                     for n, x0, y0, x1, y1 in boxes]
            (root / labels).mkdir(parents=True, exist_ok=True)
            (root / labels / f"{stem}.txt").write_text("\n".join(lines) + "\n")
    if layout == "ultralytics":
        data = {"path": ".", "train": "images/train", "val": "images/val", "test": "images/test", "names": dict(enumerate(CLASSES))}
    elif layout == "roboflow":
        data = {"train": "../train/images", "val": "../valid/images", "test": "../test/images", "nc": 2, "names": CLASSES}
    else:
        (root / "classes.txt").write_text("\n".join(CLASSES) + "\n")
        return root
    (root / "data.yaml").write_text(yaml.safe_dump(data))
    return root


def coco(root: Path) -> Path:
    """Roboflow's COCO export: {train,valid,test}/_annotations.coco.json with the images beside it,
    image ids from 0 in each split, and a dataset-named category that no box uses."""
    categories = [{"id": 0, "name": "pets", "supercategory": "none"}] + [
        {"id": k + 1, "name": n, "supercategory": "pets"} for k, n in enumerate(CLASSES)]
    for split, folder in FOLDER.items():
        images, annotations = [], []
        for k, (stem, ext, w, h, s, boxes) in enumerate(TRUTH):
            if s != split:
                continue
            image(root / folder / (stem + ext), w, h, boxes, k)
            images.append({"id": len(images), "file_name": stem + ext, "width": w, "height": h})
            for n, x0, y0, x1, y1 in boxes:
                annotations.append({"id": len(annotations), "image_id": images[-1]["id"], "bbox": [x0, y0, x1 - x0, y1 - y0],
                                    "category_id": CLASSES.index(n) + 1, "area": (x1 - x0) * (y1 - y0), "iscrowd": 0})
        (root / folder / "_annotations.coco.json").write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    return root
