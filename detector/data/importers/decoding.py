"""Every image of an import decoded once, before anything is written; a truncated one restored.

The importers read each image's size from its header only, which a file truncated after its header
passes; training would then stop on it at its first decode. So :func:`check_images` decodes every
image the importer kept, the way training does (:func:`detector.data.image.load_image`), in
threads (PIL's decoders release the GIL) with a tqdm progress bar on stderr. A JPEG is decoded at
1/8 scale (libjpeg's DCT scaling still reads every byte of the file, so a truncated or corrupt file
fails the same way, in about half the time of a full decode).

An image that fails is one of two things:

- truncated (the file ends before its picture does) and still readable by PIL with
  ``ImageFile.LOAD_TRUNCATED_IMAGES`` (the missing end decodes as grey): it is *restored*, as
  ultralytics does when it scans a dataset: :func:`restore` writes the picture whole, in the same
  format (a JPEG with its own quantisation tables and EXIF), to ``OUT/restored/<its path below the
  dataset's folder>``; the original is left untouched, and the JSON names the restored file
  (:attr:`SourceImage.restored`); one line of the summary names them;
- anything else (PIL cannot read it even so): a bad record, "image cannot be decoded", naming the
  file, which stops the import or, under ``--on-bad-record skip``, leaves the image out, counted
  against ``--max-skipped-fraction`` like any other bad record.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

from PIL import Image, ImageFile
from tqdm import tqdm

from detector.data.image import ImageDecodeError, load_image
from detector.data.importers.source import Problem, Source, SourceImage

__all__ = ["RESTORED", "check_images", "restore", "restored_path"]

# The folder under the import's --out that restored images are written to.
RESTORED = "restored"

# LOAD_TRUNCATED_IMAGES is a switch of PIL's for every thread: turned on only after the threaded check, one image at a time.
_truncated_lock = threading.Lock()


def _workers() -> int:
    """Threads for the check: the CPUs this process may use."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _decode(path: Path) -> str | None:
    """None if ``path`` decodes (at the smallest scale libjpeg offers), else why not."""
    try:
        load_image(path, min_side=1)
    except ImageDecodeError as e:
        return str(e)
    except Image.DecompressionBombError as e:  # PIL's refusal of a huge image: not an OSError
        return f"{path}: {e}"
    return None


@contextmanager
def _truncated_allowed() -> Iterator[None]:
    """PIL's ``LOAD_TRUNCATED_IMAGES`` on, for this block only."""
    with _truncated_lock:
        before = ImageFile.LOAD_TRUNCATED_IMAGES
        ImageFile.LOAD_TRUNCATED_IMAGES = True
        try:
            yield
        finally:
            ImageFile.LOAD_TRUNCATED_IMAGES = before


def _readable_truncated(path: Path) -> bool:
    """Whether PIL reads the whole picture of ``path`` with ``LOAD_TRUNCATED_IMAGES``."""
    try:
        with _truncated_allowed(), Image.open(path) as image:
            image.load()
        return True
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        return False


def check_images(source: Source, workers: int | None = None) -> list[SourceImage]:
    """Decode every image of ``source``; one that cannot be decoded leaves ``source.images`` and
    becomes a :class:`Problem` (``"image cannot be decoded"``).

    Returns:
        the truncated images that PIL can still read (left in ``source.images``): :func:`restore`
        writes them whole once the import goes ahead.
    """
    images = source.images
    if not images:
        return []
    workers = workers or _workers()
    with ThreadPoolExecutor(max_workers=min(workers, len(images))) as pool:
        errors = list(tqdm(pool.map(_decode, [i.path for i in images]), total=len(images), desc="decoding images",
                           unit="image", disable=None, leave=False))
    truncated, kept = [], []
    for image, error in zip(images, errors):
        if error is None:
            kept.append(image)
        elif "truncated" in error and _readable_truncated(image.path):  # one at a time: the switch is PIL-wide
            truncated.append(image)
            kept.append(image)
        else:
            source.problems.append(Problem(f"{error} (annotated in {image.where})", "image cannot be decoded", str(image.path),
                                           len(image.boxes), image.split))
    source.images = kept
    return truncated


def restored_path(out: Path, root: Path, path: Path) -> Path:
    """Where the restored copy of ``path`` goes: ``out/restored/<path below root>`` (below the
    dataset's folder; an image outside it keeps its whole path there)."""
    base = root.parent if root.is_file() else root
    try:
        below = path.absolute().relative_to(base.absolute())
    except ValueError:
        below = Path(*path.absolute().parts[1:])
    return out / RESTORED / below


def _write_whole(path: Path, to: Path) -> None:
    """The picture PIL reads of the truncated ``path``, saved whole to ``to`` in the same format."""
    with _truncated_allowed(), Image.open(path) as image:
        image.load()
        options = {k: image.info[k] for k in ("exif", "icc_profile") if image.info.get(k)}
        if image.format == "JPEG":
            options["quality"] = "keep"  # its own quantisation tables and subsampling: no second loss
        to.parent.mkdir(parents=True, exist_ok=True)
        image.save(to, format=image.format, **options)


def restore(source: Source, truncated: list[SourceImage], out: Path) -> None:
    """Write each of ``truncated`` (from :func:`check_images`) whole under ``out/restored/``, point
    its :attr:`SourceImage.restored` there, and add one note naming them."""
    if not truncated:
        return
    for image in truncated:
        image.restored = restored_path(out, source.root, image.path)
        _write_whole(image.path, image.restored)
        load_image(image.restored, min_side=1)  # it decodes now, or this is a bug: let it raise
    first = "; ".join(f"{i.path} -> {i.restored}" for i in truncated[:3]) + (f"; ... and {len(truncated) - 3} more" if len(truncated) > 3 else "")
    source.notes.append(f"{len(truncated)} truncated image(s) restored (PIL reads them with LOAD_TRUNCATED_IMAGES; the missing end "
                        f"is grey): written whole under {out / RESTORED}, the JSONs name these copies, the originals are untouched: {first}")
