"""PASCAL VOC tools: download VOC 2007 with the course's JSONs, and convert any VOCdevkit to them.

``python -m detector.data.voc download --root data/voc`` fetches, verifies and unpacks:

- ``VOCtrainval_06-Nov-2007.tar`` and ``VOCtest_06-Nov-2007.tar`` (md5 as torchvision's
  ``VOCDetection`` checks them), from the VOC server or the darknet mirror;
- ``PASCAL_VOC.zip``, the COCO-style JSONs the fast.ai notebooks use (from the COCO team's
  bucket). No published checksum exists for it, so it is verified by content instead: the three
  VOC 2007 JSONs must parse and hold 2,501 / 2,510 / 4,952 images.

Downloads resume: bytes arrive in ``<file>.part`` and a new run asks the server for the rest
(HTTP ``Range``); the checksum is checked before the file takes its real name. Offline, the
command fails with one line naming the URL. The resulting layout, and what a config points at::

    data/voc/VOCtrainval_06-Nov-2007.tar, VOCtest_06-Nov-2007.tar, PASCAL_VOC.zip  (kept)
    data/voc/VOCdevkit/VOC2007/{Annotations,ImageSets,JPEGImages,...}  (both tars, merged)
    data/voc/pascal_{train,val,test}2007.json (and the zip's other JSONs: the 2012 ones)

    json: data/voc/pascal_{train,val,test}2007.json
    image_dir: data/voc/VOCdevkit/VOC2007/JPEGImages

``python -m detector.data.voc convert --devkit DIR --out DIR [--splits ...] [--classes ...]``
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

import argparse
import hashlib
import http.client
import json
import re
import sys
import tarfile
import xml.etree.ElementTree as ET
import zipfile
from dataclasses import dataclass
from pathlib import Path
from urllib.error import HTTPError, URLError
from urllib.request import Request, urlopen

__all__ = [
    "COURSE_JSON_IMAGES",
    "Download",
    "DownloadError",
    "VOC2007_DOWNLOADS",
    "VOC_CLASSES",
    "VocAnnotation",
    "VocFormatError",
    "VocObject",
    "check_course_jsons",
    "convert_devkit",
    "download",
    "download_voc2007",
    "md5sum",
    "parse_voc_xml",
]

# Everingham et al., "The PASCAL Visual Object Classes (VOC) Challenge", IJCV 2010: class order
# of the devkit and of the course's JSON categories (ids 1..20).
VOC_CLASSES = [
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
    "tvmonitor",
]


@dataclass(frozen=True)
class Download:
    """One file: URLs tried in order (official first, then mirrors), its name, its md5 if known."""

    urls: tuple[str, ...]
    filename: str
    md5: str | None


VOC2007_DOWNLOADS = (
    Download(("http://host.robots.ox.ac.uk/pascal/VOC/voc2007/VOCtrainval_06-Nov-2007.tar",
              "https://pjreddie.com/media/files/VOCtrainval_06-Nov-2007.tar"),
             "VOCtrainval_06-Nov-2007.tar", "c52e279531787c972589f7e41ab4ae64"),
    Download(("http://host.robots.ox.ac.uk/pascal/VOC/voc2007/VOCtest_06-Nov-2007.tar",
              "https://pjreddie.com/media/files/VOCtest_06-Nov-2007.tar"),
             "VOCtest_06-Nov-2007.tar", "b6e924de25625d8de591ea690078ad9f"),
    Download(("https://storage.googleapis.com/coco-dataset/external/PASCAL_VOC.zip",
              "https://s3.amazonaws.com/images.cocodataset.org/external/external_PASCAL_VOC.zip"),
             "PASCAL_VOC.zip", None),  # no published md5: check_course_jsons verifies the content
)
COURSE_JSON_IMAGES = {"pascal_train2007.json": 2501, "pascal_val2007.json": 2510,
                      "pascal_test2007.json": 4952}
CHUNK = 1 << 20


class DownloadError(RuntimeError):
    """A download failed; the message is one line naming the file and the URL(s)."""


class VocFormatError(ValueError):
    """A VOCdevkit file is malformed; the message names the file (and the object index)."""


def md5sum(path: Path) -> str:
    """The hex md5 of a file, read in ``CHUNK``-byte blocks."""
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def _fetch(url: str, part: Path, timeout: float, chunk_size: int) -> None:
    """Append the rest of ``url`` to ``part`` (asking for ``Range: bytes=<size>-``), or restart it
    when the server ignores the range. Raises ``DownloadError`` if the transfer stops short."""
    offset = part.stat().st_size if part.exists() else 0
    headers = {"Range": f"bytes={offset}-"} if offset else {}
    try:
        response = urlopen(Request(url, headers=headers), timeout=timeout)
    except HTTPError as e:
        if e.code == 416 and offset:  # nothing left to send: the .part is already whole
            return
        raise
    with response:
        if offset and response.status == 206:
            start = re.match(r"bytes (\d+)-", response.headers.get("Content-Range", ""))
            if not start or int(start.group(1)) != offset:
                raise DownloadError(f"{url}: asked for bytes {offset}- but got "
                                    f"Content-Range {response.headers.get('Content-Range')!r}")
        else:
            offset = 0  # a plain 200: the whole file again
        length = response.headers.get("Content-Length")
        expected = offset + int(length) if length is not None else None
        print(f"downloading {url} -> {part.name}"
              + (f" (resuming at {offset / 1e6:.1f} MB)" if offset else "")
              + (f", {expected / 1e6:.1f} MB" if expected else ""), file=sys.stderr)
        written, report_every = offset, max(chunk_size, (expected or 0) // 10)
        with open(part, "ab" if offset else "wb") as f:
            try:
                for block in iter(lambda: response.read(chunk_size), b""):
                    f.write(block)
                    written += len(block)
                    if written // report_every != (written - len(block)) // report_every:
                        print(f"  {written / 1e6:.0f} MB", file=sys.stderr)
            except (OSError, http.client.HTTPException) as e:
                raise DownloadError(f"{url}: transfer stopped at {written} of {expected} bytes "
                                    f"({type(e).__name__}); run again to resume") from None
    if expected is not None and written != expected:
        raise DownloadError(f"{url}: transfer stopped at {written} of {expected} bytes; "
                            "run again to resume")


def download(urls: tuple[str, ...] | list[str] | str, dest: str | Path, md5: str | None = None,
             timeout: float = 30.0, chunk_size: int = CHUNK) -> Path:
    """Download ``dest`` from the first URL that works, resuming ``dest.part`` if present.

    A ``dest`` that exists (with the right ``md5`` when given) is kept as is. The md5 is checked on
    the finished ``.part`` before it is renamed to ``dest``; on a mismatch the ``.part`` is deleted.
    Raises ``DownloadError`` (one line, naming the URLs) when no URL works.
    """
    urls = (urls,) if isinstance(urls, str) else tuple(urls)
    dest = Path(dest)
    if dest.exists() and (md5 is None or md5sum(dest) == md5):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    failures = []
    for url in urls:
        try:
            _fetch(url, part, timeout, chunk_size)
            break
        except DownloadError as e:
            failures.append(str(e))
        except (URLError, OSError, http.client.HTTPException) as e:
            reason = e.reason if isinstance(e, URLError) and not isinstance(e, HTTPError) else e
            failures.append(f"{url} ({' '.join(str(reason).split())})")
    else:
        raise DownloadError(f"cannot download {dest.name}: " + "; ".join(failures)
                            + ". Check the network connection (offline?) and run again.")
    if md5 is not None:
        actual = md5sum(part)
        if actual != md5:
            part.unlink()
            raise DownloadError(f"{dest.name}: md5 {actual} does not match the expected {md5} "
                                f"(from {url}); deleted the download, run again")
    part.replace(dest)
    return dest


def _extract(archive: Path, root: Path) -> None:
    """Unpack a ``.tar`` into ``root``, or the ``*.json`` files of a ``.zip`` flat into ``root``.

    A stamp file ``root/.{archive name}.extracted`` makes a second call a no-op.
    """
    stamp = root / f".{archive.name}.extracted"
    if stamp.exists():
        return
    print(f"extracting {archive.name}", file=sys.stderr)
    try:
        if archive.suffix == ".tar":
            with tarfile.open(archive) as tar:
                tar.extractall(root, filter="data")  # "data": no absolute paths, links out, devices
        else:
            with zipfile.ZipFile(archive) as zf:
                for member in zf.namelist():
                    if member.endswith(".json"):
                        (root / Path(member).name).write_bytes(zf.read(member))
    except (tarfile.TarError, zipfile.BadZipFile) as e:
        raise DownloadError(f"{archive}: corrupt archive ({e}); delete it and run again") from None
    stamp.touch()


def check_course_jsons(root: str | Path) -> None:
    """Verify the course's JSONs by content: they parse and hold ``COURSE_JSON_IMAGES`` images."""
    for name, expected in COURSE_JSON_IMAGES.items():
        path = Path(root) / name
        try:
            n_images = len(json.loads(path.read_text())["images"])
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise DownloadError(f"{path}: not a readable course JSON ({type(e).__name__}: {e})") from None
        if n_images != expected:
            raise DownloadError(f"{path}: {n_images} images, expected {expected}")


def download_voc2007(root: str | Path, downloads: tuple[Download, ...] | None = None) -> None:
    """Download, verify and unpack VOC 2007 and the course's JSONs into ``root`` (layout above).

    ``downloads`` defaults to ``VOC2007_DOWNLOADS``.
    """
    root = Path(root)
    downloads = VOC2007_DOWNLOADS if downloads is None else downloads
    root.mkdir(parents=True, exist_ok=True)
    for item in downloads:
        if not (root / f".{item.filename}.extracted").exists():
            _extract(download(item.urls, root / item.filename, item.md5), root)
    try:
        check_course_jsons(root)
    except DownloadError as e:
        for item in downloads:
            if item.md5 is None:  # verified by content only, so the suspect: fetch it afresh
                (root / item.filename).unlink(missing_ok=True)
                (root / f".{item.filename}.extracted").unlink(missing_ok=True)
        raise DownloadError(f"{e}; deleted the download(s) without a checksum, run again") from None
    print(f"VOC 2007 ready: json {root}/pascal_{{train,val,test}}2007.json, "
          f"image_dir {root}/VOCdevkit/VOC2007/JPEGImages", file=sys.stderr)


# ---------------------------------------------------------------------------------------------
# VOCdevkit -> the course's JSON layout


@dataclass(frozen=True)
class VocObject:
    """One ``<object>``: ``box`` = (xmin, ymin, xmax, ymax) as written, 1-based inclusive pixels."""

    name: str
    box: tuple[float, float, float, float]
    difficult: bool


@dataclass(frozen=True)
class VocAnnotation:
    """One ``Annotations/*.xml``: the image size and its objects in file order."""

    path: Path
    width: int
    height: int
    objects: list[VocObject]


def _number(element: ET.Element, tag: str, where: str) -> float:
    text = element.findtext(tag)
    if text is None or not text.strip():
        raise VocFormatError(f"{where}: missing <{tag}>")
    try:
        return float(text)
    except ValueError:
        raise VocFormatError(f"{where}: <{tag}> is {text.strip()!r}, not a number") from None


def parse_voc_xml(path: str | Path) -> VocAnnotation:
    """Read one VOC XML file; raise ``VocFormatError`` naming the file (and object index)."""
    path = Path(path)
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as e:
        raise VocFormatError(f"{path}: not well-formed XML ({e})") from None
    size = root.find("size")
    if size is None:
        raise VocFormatError(f"{path}: missing <size>")
    width, height = (_number(size, tag, f"{path} <size>") for tag in ("width", "height"))
    if width <= 0 or height <= 0 or width % 1 or height % 1:
        raise VocFormatError(f"{path}: <size> must be positive integers, got {width} x {height}")
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
    return VocAnnotation(path, int(width), int(height), objects)


def _plain(v: float) -> int | float:
    """Integral floats as ints, as the course's JSON writes its pixel coordinates."""
    return int(v) if float(v).is_integer() else v


def _extent(lo: float, hi: float) -> float:
    """Pixels spanned by inclusive corners ``lo..hi``; coinciding corners span none (see top)."""
    return hi - lo + 1 if hi != lo else 0


def _coco_annotation(obj: VocObject, category_id: int, image_id: int, ann_id: int) -> dict:
    xmin, ymin, xmax, ymax = obj.box
    x, y, w, h = (_plain(v) for v in (xmin - 1, ymin - 1, _extent(xmin, xmax), _extent(ymin, ymax)))
    right, bottom = _plain(xmax - 1), _plain(ymax - 1)  # the last pixel's 0-based index
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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="PASCAL VOC: download VOC 2007, convert a VOCdevkit.")
    commands = parser.add_subparsers(dest="command", required=True)
    fetch = commands.add_parser("download", help="VOC 2007 trainval + test and the course's JSONs")
    fetch.add_argument("--root", type=Path, default=Path("data/voc"))
    convert = commands.add_parser("convert", help="VOCdevkit XML -> the course's COCO-style JSON")
    convert.add_argument("--devkit", type=Path, required=True,
                         help="folder with Annotations/, ImageSets/Main/, JPEGImages/")
    convert.add_argument("--out", type=Path, required=True)
    convert.add_argument("--splits", nargs="+", default=None)
    convert.add_argument("--classes", nargs="+", default=None)
    args = parser.parse_args(argv)
    try:
        if args.command == "download":
            download_voc2007(args.root)
        else:
            convert_devkit(args.devkit, args.out, args.splits, args.classes)
    except (DownloadError, VocFormatError) as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    main()
