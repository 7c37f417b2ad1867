"""Download PASCAL VOC 2007 with the course's JSONs: ``detector data download-voc --root data/voc`` fetches, verifies and unpacks:

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
"""

from __future__ import annotations

import hashlib
import http.client
import json
import re
import sys
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from urllib.error import HTTPError, URLError
from urllib.request import Request, urlopen

from detector.errors import UserError

__all__ = [
    "COURSE_JSON_IMAGES",
    "Download",
    "DownloadError",
    "VOC2007_DOWNLOADS",
    "check_course_jsons",
    "download",
    "download_voc2007",
    "md5sum",
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


class DownloadError(UserError, RuntimeError):
    """A download failed; the message is one line naming the file and the URL(s)."""


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
