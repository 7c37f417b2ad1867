"""Coordinate-aware augmentation with albumentations: the boxes move with the pixels.

Named presets, chosen in YAML by a string (``DetectionDataModule(train_augment=...)``):

- ``lesson``: the default train set of Lesson 8-9 (fastai 0.7 ``RandomFlip()``,
  ``RandomRotate(3, p=0.5)``, ``RandomLighting(0.05, 0.05)``). As fastai did, the image is first
  scaled so that its shorter side is ``size`` (``Scale(sz)``), augmented, and then squashed.
- ``strong``: the second article's imgaug set (with p = 0.5: ``Affine`` translate +-15 %, scale,
  rotate +-5 degrees, then ``CoarseDropout``), plus the flip.
- ``ssd``: SSD's photometric distortion, zoom-out onto a mean-coloured canvas and random crop
  (Liu et al. 2016, "SSD", section 3.6; ranges as in ssd.pytorch's ``augmentations.py``), plus flip.
- ``none``: evaluation, resize only.

Every pipeline ends with a squash resize to ``size x size`` (no crop: the lesson's ``CropType.NO``,
so no object is cut off) and normalisation with the backbone's mean / std, giving a float32 CHW
tensor. Rotated boxes are the box enclosing the rotated box's corners (albumentations'
``rotate_method="largest_box"``; fastai 0.7 rotated a box mask and took its bounds, the same box).
A box less than ``MIN_VISIBILITY`` inside the picture after a geometric step is dropped; the rest
are clipped to the image. If augmentation drops every box of an image that had some, it is
retried, then the plain resize is used, so labels never vanish silently.

Resizing is bilinear (``INTER_LINEAR``): ~7x faster here than ``INTER_AREA`` (fastai's choice),
and ``detector.data.image.load_image`` decodes large JPEGs at a reduced scale, so the remaining
downscale factor stays below 2, where bilinear barely aliases.

Randomness comes only from the ``seed`` passed with each call: the result is a deterministic
function of (image, boxes, seed), whatever process or worker runs it.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, get_args

import albumentations as A
import cv2
import numpy as np
import torch
from albumentations.pytorch import ToTensorV2
from torch import Tensor

from detector.defaults import IMAGENET_MEAN, IMAGENET_STD

__all__ = [
    "AugmentPreset",
    "Augmented",
    "DetectionTransform",
    "MIN_VISIBILITY",
    "PRESETS",
    "build_pipeline",
]

AugmentPreset = Literal["lesson", "strong", "ssd", "none"]
PRESETS: tuple[str, ...] = get_args(AugmentPreset)

# torchvision's ImageNet statistics, which the pretrained ResNet-34 expects.

# Fraction of a box's area that must stay in the picture for the box to be kept.
MIN_VISIBILITY = 0.25


@dataclass(frozen=True)
class Augmented:
    """One transformed sample.

    Attributes:
        image: ``(3, size, size)`` float32, normalised with the pipeline's mean / std.
        boxes: ``(m, 4)`` float32 xyxy in ``[0, 1]`` of the output image, ``m <= n``.
        keep: ``(m,)`` int64 index of each output box among the ``n`` input boxes, to carry
            labels, difficult flags and ids along.
    """

    image: Tensor
    boxes: Tensor
    keep: np.ndarray


def build_pipeline(
    preset: AugmentPreset,
    size: int,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    flip: bool = True,
) -> A.Compose:
    """The albumentations pipeline for ``preset``.

    Called as ``pipeline(image=(H, W, 3) uint8 RGB, bboxes=(n, 4) xyxy pixels, box_index=(n,))``;
    returns ``image`` ``(3, size, size)`` float32 and ``bboxes`` ``(m, 4)`` xyxy pixels of the
    ``size x size`` output, with ``box_index`` ``(m,)`` telling which input boxes survived.
    ``flip=False`` leaves out the presets' horizontal flip (for classes that are not mirror-symmetric).
    """
    if preset not in PRESETS:
        raise ValueError(f"unknown augmentation preset {preset!r}; choose one of {PRESETS}")
    fill = tuple(255.0 * m for m in mean)  # the mean colour: zero after normalisation
    augment = {
        "none": [],
        "lesson": [
            A.SmallestMaxSize(max_size=size, interpolation=cv2.INTER_LINEAR),
            A.HorizontalFlip(p=0.5),
            A.Rotate(limit=3, border_mode=cv2.BORDER_REFLECT, rotate_method="largest_box", p=0.5),
            # fastai's RandomLighting(b, c): x * (1 + c) + b, both uniform in +-0.05, always applied.
            A.RandomBrightnessContrast(brightness_limit=0.05, contrast_limit=0.05, brightness_by_max=False, p=1.0),
        ],
        "strong": [
            A.SmallestMaxSize(max_size=size, interpolation=cv2.INTER_LINEAR),
            A.HorizontalFlip(p=0.5),
            A.Sequential(
                [
                    # The article's Affine had scale=(0.15, 1.5); below 0.5 most objects shrink under
                    # the smallest anchor (0.75 * 0.5 / 4 of the image), so we stop at 0.5.
                    A.Affine(
                        translate_percent=(-0.15, 0.15), scale=(0.5, 1.5), rotate=(-5, 5),
                        rotate_method="largest_box", border_mode=cv2.BORDER_CONSTANT, fill=fill, p=1.0,
                    ),
                    # imgaug's CoarseDropout(0.1): about a tenth of the picture blacked out in blocks.
                    A.CoarseDropout(
                        num_holes_range=(1, 8), hole_height_range=(0.05, 0.15), hole_width_range=(0.05, 0.15),
                        fill=0, p=1.0,
                    ),
                ],
                p=0.5,
            ),
        ],
        "ssd": [
            # ssd.pytorch's PhotometricDistort: brightness +-32/255, contrast and saturation 0.5-1.5, hue +-18 deg.
            A.ColorJitter(brightness=0.125, contrast=0.5, saturation=0.5, hue=0.05, p=0.5),
            # Zoom out: the image on a canvas up to 4x its side (ssd.pytorch's Expand, ratio 1-4), filled with the mean.
            A.CropAndPad(
                percent=((0.0, 1.5), (0.0, 1.5), (0.0, 1.5), (0.0, 1.5)), keep_size=False,
                sample_independently=True, border_mode=cv2.BORDER_CONSTANT, fill=fill, p=0.5,
            ),
            # Zoom in: a random crop that keeps every box whole (SSD sampled crops by minimum IoU instead).
            A.BBoxSafeRandomCrop(erosion_rate=0.0, p=0.5),
            A.HorizontalFlip(p=0.5),
        ],
    }[preset]
    if not flip:
        augment = [t for t in augment if not isinstance(t, A.HorizontalFlip)]
    finish = [
        A.Resize(height=size, width=size, interpolation=cv2.INTER_LINEAR),  # squash: the lesson's CropType.NO
        A.Normalize(mean=tuple(mean), std=tuple(std), max_pixel_value=255.0),
        ToTensorV2(),
    ]
    return A.Compose(
        augment + finish,
        bbox_params=A.BboxParams(
            format="pascal_voc", label_fields=["box_index"], min_visibility=MIN_VISIBILITY, clip=True
        ),
    )


class DetectionTransform:
    """A preset's pipeline plus the fallback that stops labels vanishing.

    Args:
        preset: one of :data:`PRESETS`.
        size: side of the square output.
        mean, std: per-channel statistics of the backbone, for pixels in ``[0, 1]``.
        max_tries: augmentation attempts before the plain resize is used for an image whose
            boxes all got dropped.
        flip: keep the preset's random horizontal flip.
    """

    def __init__(
        self,
        preset: AugmentPreset,
        size: int,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        max_tries: int = 3,
        flip: bool = True,
    ):
        self.preset = preset
        self.size = size
        self.max_tries = max_tries
        self.pipeline = build_pipeline(preset, size, mean, std, flip)
        self.fallback = build_pipeline("none", size, mean, std)

    def __call__(self, image: np.ndarray, boxes: np.ndarray, seed: int = 0) -> Augmented:
        """Transform one image and its boxes.

        Args:
            image: ``(H, W, 3)`` uint8 RGB.
            boxes: ``(n, 4)`` xyxy pixels inside the image.
            seed: the only source of randomness (e.g. derived from (base seed, epoch, index)).

        Returns:
            :class:`Augmented`: ``image (3, size, size)`` float32, ``boxes (m, 4)`` xyxy in [0, 1],
            ``keep (m,)``; ``m >= 1`` whenever ``n >= 1``.
        """
        # One generator pair shared by all the pipeline's transforms. (Compose(seed=...) would give
        # each transform its own generator with the same seed, so that flip and rotate draw the same
        # first number and fire together.)
        self.pipeline.set_random_state(np.random.default_rng(seed), random.Random(seed))
        index = np.arange(len(boxes), dtype=np.int64)
        for _ in range(self.max_tries):
            out = self.pipeline(image=image, bboxes=boxes, box_index=index)
            if len(out["bboxes"]) > 0 or len(boxes) == 0:
                break
        else:
            out = self.fallback(image=image, bboxes=boxes, box_index=index)
        xyxy = torch.as_tensor(np.asarray(out["bboxes"], dtype=np.float32).reshape(-1, 4)) / self.size  # (m, 4)
        return Augmented(image=out["image"], boxes=xyxy.clamp_(0.0, 1.0), keep=np.asarray(out["box_index"], dtype=np.int64))
