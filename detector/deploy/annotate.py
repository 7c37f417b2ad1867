"""A prediction drawn on its image at the image's own resolution, with PIL (what ``detector predict``
writes and ``Detector.draw`` returns).

The lesson's look, as :mod:`detector.pictures.draw` draws it with matplotlib: every box in its own
colour (matplotlib's ``tab20``, saturated hues first) over a black outline, its class and score
written at its top-left corner in bold, outlined in black; a classifier's answer in the image's
top-left corner, white. PIL rather than matplotlib because the picture must be the photo itself,
pixel for pixel: a matplotlib figure resamples the photo to its canvas, and costs ~0.1 s and an
import of torch (through :mod:`detector.pictures`) that the ONNX path does without.

Everything scales with the image: the text is ``2.8 %`` of the longer side high (at least 11 px),
the lines ``1/8`` of that (at least 2 px): a 500 x 375 photo gets 14 px labels and 2 px lines, a
4000 x 3000 one 112 px and 14 px, so the labels read the same on both once the picture is shown
at any fixed size.
"""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from detector.data.image import ImageDecodeError, load_image
from detector.deploy.prediction import Prediction
from detector.errors import BadImageError

__all__ = ["PALETTE", "annotate", "draw", "label_size"]

# matplotlib's tab20, its ten saturated hues first, then their light partners (as box_colour).
PALETTE: tuple[tuple[int, int, int], ...] = (
    (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
    (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207),
    (174, 199, 232), (255, 187, 120), (152, 223, 138), (255, 152, 150), (197, 176, 213),
    (196, 156, 148), (247, 182, 210), (199, 199, 199), (219, 219, 141), (158, 218, 229),
)


def label_size(width: int, height: int) -> tuple[int, int]:
    """``(text height, line width)`` in pixels for an image of ``width x height`` (module docstring)."""
    text = max(11, round(0.028 * max(width, height)))
    return text, max(2, round(text / 8))


@functools.lru_cache(maxsize=16)
def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """DejaVu Sans Bold (matplotlib's, found without importing matplotlib) at ``size`` px; else
    PIL's own scalable font; else its fixed bitmap font."""
    spec = importlib.util.find_spec("matplotlib")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = Path(folder) / "mpl-data" / "fonts" / "ttf" / "DejaVuSans-Bold.ttf"
        if path.is_file():
            return ImageFont.truetype(str(path), size)
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


def annotate(image: np.ndarray | Image.Image, prediction: Prediction) -> Image.Image:
    """``prediction`` drawn on a copy of ``image`` (``(H, W, 3)`` uint8 RGB or a PIL image, the
    original the boxes are in pixels of).

    Boxes get their class name and score when the prediction has them; a prediction without boxes
    (a classifier's) is written as lines ``name score`` in the top-left corner.
    """
    picture = image.convert("RGB") if isinstance(image, Image.Image) else Image.fromarray(np.asarray(image, np.uint8))
    picture = picture.copy()
    draw = ImageDraw.Draw(picture)
    text_px, line = label_size(*picture.size)
    font, stroke = _font(text_px), max(1, round(text_px / 10))
    texts = _texts(prediction)
    if prediction.boxes is None:
        if texts:
            draw.multiline_text(
                (line + stroke, line + stroke), "\n".join(texts), fill="white", font=font, stroke_width=stroke, stroke_fill="black"
            )
        return picture
    width, height = picture.size
    for i, (x1, y1, x2, y2) in enumerate(prediction.boxes.tolist()):
        colour = PALETTE[i % len(PALETTE)]
        corners = [min(x1, x2), min(y1, y2), max(x1, x2), max(y1, y2)]
        draw.rectangle(corners, outline="black", width=line + 2)  # the lesson's draw_outline
        draw.rectangle(corners, outline=colour, width=line)
        if texts:
            left, top, right, bottom = draw.textbbox((0, 0), texts[i], font=font, stroke_width=stroke)
            x = min(max(corners[0] + line, 0), max(width - (right - left), 0))  # inside the picture
            y = min(max(corners[1] + line, 0), max(height - (bottom - top), 0))
            draw.text((x - left, y - top), texts[i], fill=colour, font=font, stroke_width=stroke, stroke_fill="black")
    return picture


def draw(prediction: Prediction, image: np.ndarray | Image.Image | None = None) -> Image.Image:
    """:func:`annotate` on ``image`` if given, else on the array the prediction was made on, else
    on its file read again (EXIF orientation applied, full size): ``Detector.draw``."""
    if image is None:
        image = prediction.image
    if image is None:
        if prediction.path is None:
            raise BadImageError("this prediction has neither its image nor a path: pass the image to draw on")
        try:
            image = load_image(prediction.path)  # (H, W, 3) uint8, full size
        except ImageDecodeError as e:
            raise BadImageError(str(e)) from None
    return annotate(image, prediction)


def _texts(p: Prediction) -> list[str]:
    """Per prediction: ``name score``, ``name`` or ``score``; ``[]`` when it has neither."""
    n = len(p)
    names = p.names if p.names is not None else [None] * n
    scores = p.scores.tolist() if p.scores is not None else [None] * n
    texts = [" ".join(t for t in (name, None if s is None else f"{s:.2f}") if t) for name, s in zip(names, scores)]
    return texts if any(texts) else []
