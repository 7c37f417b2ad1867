"""Every default that more than one place in the package uses, written once.

Each module that needs one of these imports it from here; ``tests/test_house.py`` fails when one
of them is written again as a literal where it means the same thing (a parameter's or a field's
default, ``.get(key, default)``, an argparse ``default=``). A value only one module uses stays in
that module, beside the code it configures.
"""

from __future__ import annotations

from typing import Literal, get_args

__all__ = [
    "BOOTSTRAP_RESAMPLES",
    "COMPARE_SEEDS",
    "COMPARE_SPLIT",
    "CONFUSION_IOU",
    "EVAL_SCORE",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "IMAGE_SIZE",
    "MATCH_IOU",
    "MAX_SKIPPED_FRACTION",
    "NMS_IOU",
    "PICTURE_SCORE",
    "SPLITS",
    "Split",
]

IMAGE_SIZE = 224
"""Side of the square network input, in pixels: the lesson's (ResNet-34 at ImageNet's 224)."""

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
"""torchvision's ImageNet normalisation: the ResNet bodies' input statistics, and the data's
default when no body says otherwise."""

MATCH_IOU = 0.4
"""Matching: an anchor whose best IoU with an object is strictly above this is positive (the
lesson's ``map_to_ground_truth``, ``gt_overlap > 0.4``); also what ``anchors: auto`` covers."""

NMS_IOU = 0.4
"""Non-maximum suppression: a box overlapping a higher-scoring one of its class above this IoU is
dropped (the lesson's ``nms(..., overlap)`` as its notebooks call it)."""

EVAL_SCORE = 0.01
"""Detections kept for evaluation score above this: mAP rewards recall, and a high threshold
silently lowers it."""

PICTURE_SCORE = 0.25
"""Detections drawn in pictures (and counted in the confusion matrix) score above this: the
lesson's ``conf_scores > 0.25``; ultralytics' ``conf`` for its confusion matrix too."""

CONFUSION_IOU = 0.45
"""A detection matches an object in the confusion matrix above this IoU (ultralytics' ``iou_thres``)."""

Split = Literal["train", "val", "test"]
SPLITS: tuple[str, ...] = get_args(Split)
"""The dataset splits, in the order every listing and file uses."""

MAX_SKIPPED_FRACTION = 0.05
"""``on_bad_record: skip`` refuses to leave out more than this fraction of a split's images or
boxes (import and training alike): never a silent partial run."""

COMPARE_SEEDS = 5
"""``detector compare``: the seeds each side is trained with (0, 1, ..., 4)."""

COMPARE_SPLIT: Split = "test"
"""``detector compare``: the split the runs are evaluated on (the one no checkpoint was chosen on)."""

BOOTSTRAP_RESAMPLES = 1000
"""``detector compare``: the paired bootstrap's resamples."""
