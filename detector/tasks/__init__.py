"""The lessons' stepping stones before the SSD, each a LightningModule picked in YAML by ``class_path``:

    detector.tasks.LargestObjectClassifier   the largest object's class      (Lesson 8)
    detector.tasks.LargestBoxRegressor       the largest object's box        (Lesson 8)
    detector.tasks.SingleObjectDetector      both, from one 4 + C head       (Lesson 8)
    detector.tasks.MultiLabelClassifier      every class present             (Lesson 9)

They share the detector's data module (targets are computed from its batches:
:mod:`detector.tasks.targets`), backbones, layer groups, staged recipe and loggers
(:class:`detector.staged.StagedModule`, :class:`detector.tasks.base.TaskModule`).
"""

from __future__ import annotations

from detector.tasks.base import TaskModule
from detector.tasks.largest import LargestBoxRegressor, LargestObjectClassifier, SingleObjectDetector
from detector.tasks.multilabel import MultiLabelClassifier

__all__ = ["LargestBoxRegressor", "LargestObjectClassifier", "MultiLabelClassifier", "SingleObjectDetector", "TaskModule"]
