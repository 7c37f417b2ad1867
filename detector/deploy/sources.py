"""What ``predict`` takes as images, read into ``(h, w, 3)`` uint8 RGB arrays the way evaluation
reads its files. NumPy and PIL only: the ONNX path (:mod:`detector.deploy.onnx_detector`) imports no torch.

A source is a path (an image file, a folder, a glob pattern), a PIL image, an ``(H, W, 3)`` uint8
RGB array (or ``(N, H, W, 3)``: N images), a torch tensor (``(3, H, W)`` or ``(N, 3, H, W)``, RGB,
uint8 or float in ``[0, 1]`` as torchvision takes it; a float is rounded to uint8 first), or a
list of these, predicted in that order.

* Files are decoded as :func:`detector.data.image.load_image` decodes them for evaluation: EXIF
  orientation applied, any mode made RGB, a JPEG at least twice the network's input size decoded
  at 1/2, 1/4 or 1/8 scale (libjpeg's DCT scaling). So a checkpoint predicts on a file exactly what
  ``detector eval`` computed on it.
* An image given in memory that large is first shrunk by the same factor with a box filter (PIL's
  ``reduce``), the in-memory counterpart of that reduced decode: the squash-resize to the input
  size that follows is bilinear, which aliases when it shrinks by more than 2.
* Sizes are always the original upright image's: boxes come back in its pixels.
"""

from __future__ import annotations

import glob
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from detector.data.image import ImageDecodeError, load_image, read_image_size
from detector.errors import BadImageError, MissingFileError

__all__ = ["KINDS", "Loaded", "expand", "find_images", "load", "shrink"]

KINDS = "a path, a folder, a glob pattern, a PIL image, an (H, W, 3) uint8 array, a tensor, or a list of these"


@dataclass
class Loaded:
    """One image ready for preprocessing.

    Attributes:
        image: ``(h, w, 3)`` uint8 RGB, at the decode scale (reduced for a large image).
        width, height: the original, upright image's size in pixels.
        path: the file, or ``None`` for an image given in memory.
        original: the full-size ``(H, W, 3)`` array of an image given in memory (for drawing);
            ``None`` for a file (drawing reads it again).
    """

    image: np.ndarray
    width: int
    height: int
    path: Path | None = None
    original: np.ndarray | None = None


def find_images(spec: str | Path) -> list[Path]:
    """The image files named by ``spec``, sorted.

    A folder: its files (not sub-folders) whose suffix is one PIL reads (``.jpg``, ``.png``, ...;
    other files are ignored). A file: itself. Anything else: a glob pattern (``**`` recurses), every
    matching file, whatever its suffix (so a corrupt or mis-named file is reported, not ignored).
    """
    path = Path(spec)
    if path.is_dir():
        suffixes = {s.lower() for s in Image.registered_extensions()}
        return sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in suffixes)
    if path.is_file():
        return [path]
    return sorted(Path(p) for p in glob.glob(str(spec), recursive=True) if Path(p).is_file())


def expand(source: Any) -> list[Path | np.ndarray]:
    """``source`` (module docstring) -> one item per image: a file's path, or an ``(H, W, 3)``
    uint8 array.

    Raises:
        MissingFileError: a path that names no image file (no such file, an empty folder, a pattern
            that matches nothing).
        BadImageError: an array or tensor of another shape or type, or an object of another kind.
    """
    if isinstance(source, (list, tuple)):
        return [item for part in source for item in expand(part)]
    if isinstance(source, (str, Path)):
        paths = find_images(source)
        if not paths:
            what = "a folder without image files" if Path(source).is_dir() else "no such file, and no file matches it as a pattern"
            raise MissingFileError(f"{source}: {what}")
        return list(paths)
    if isinstance(source, Image.Image):
        return [np.asarray(source if source.mode == "RGB" else source.convert("RGB"))]
    if type(source).__module__.startswith("torch") and hasattr(source, "detach"):
        return _tensor_images(source)
    if isinstance(source, np.ndarray):
        if source.dtype == np.uint8 and source.ndim in (3, 4) and source.shape[-1] == 3 and min(source.shape[-3:-1]) > 0:
            return [source] if source.ndim == 3 else list(source)
        raise BadImageError(
            f"an array of shape {source.shape} and dtype {source.dtype} is not an image: give (H, W, 3) or "
            "(N, H, W, 3) uint8 RGB (a float image: (x * 255).round().astype(np.uint8))"
        )
    raise BadImageError(f"cannot predict on a {type(source).__module__}.{type(source).__qualname__}: give {KINDS}")


def _tensor_images(tensor: Any) -> list[np.ndarray]:
    """``(3, H, W)`` or ``(N, 3, H, W)`` RGB, uint8 or float in ``[0, 1]`` -> ``(H, W, 3)`` uint8 arrays."""
    shape, dtype = tuple(tensor.shape), str(tensor.dtype)
    if len(shape) not in (3, 4) or shape[-3] != 3 or min(shape[-2:]) == 0:
        raise BadImageError(f"a tensor of shape {shape} is not an image: give (3, H, W) or (N, 3, H, W) RGB")
    array = tensor.detach().cpu().numpy()
    if array.dtype != np.uint8:
        if not np.issubdtype(array.dtype, np.floating):
            raise BadImageError(f"a tensor of dtype {dtype} is not an image: give uint8, or float in [0, 1]")
        array = np.clip(np.rint(array.astype(np.float32) * 255), 0, 255).astype(np.uint8)
    array = np.moveaxis(array, -3, -1)  # (..., H, W, 3)
    return [np.ascontiguousarray(array)] if array.ndim == 3 else [np.ascontiguousarray(a) for a in array]


def shrink(image: np.ndarray, min_side: int) -> np.ndarray:
    """``(H, W, 3)`` uint8 -> the same shrunk by the factor a JPEG of its size is decoded at for an
    input of ``min_side`` (:func:`detector.data.image.reduced_size`), with a box filter; unchanged
    when that factor is 1."""
    height, width = image.shape[:2]
    fit = min(width // min_side, height // min_side)
    k = next(k for k in (8, 4, 2, 1) if k <= max(fit, 1))  # reduced_size's rule
    return image if k == 1 else np.asarray(Image.fromarray(image).reduce(k))  # (ceil(H / k), ceil(W / k), 3)


def load(item: Path | np.ndarray, min_side: int) -> Loaded:
    """One item of :func:`expand`, decoded (a file) or shrunk (an array) for an input of ``min_side``.

    Raises:
        ImageDecodeError: a file that cannot be read or decoded (the message names it).
    """
    if isinstance(item, np.ndarray):
        height, width = item.shape[:2]
        return Loaded(shrink(item, min_side), width, height, None, item)
    image = load_image(item, min_side=min_side)  # (h, w, 3) uint8, as evaluation decodes
    try:
        width, height = read_image_size(item)  # the original, upright size
    except OSError as e:
        raise ImageDecodeError(f"{item}: {e}") from e
    return Loaded(image, width, height, Path(item))
