"""The LightningModules, each picked in YAML by ``class_path`` on one staged base
(:class:`~detector.training.tasks.staged.StagedModule`: layer groups, the discriminative
learning rates, the optimiser and schedule, the guards):

    detector.training.DetectorModule            the SSD                          (Lesson 9)
    detector.training.LargestObjectClassifier   the largest object's class       (Lesson 8)
    detector.training.LargestBoxRegressor       the largest object's box         (Lesson 8)
    detector.training.SingleObjectDetector      both, from one 4 + C head        (Lesson 8)
    detector.training.MultiLabelClassifier      every class present              (Lesson 9)

The stepping stones share the detector's data module (their targets are computed from its
batches: :mod:`~detector.training.tasks.targets`), backbones and recipe
(:class:`~detector.training.tasks.stepping.TaskModule`; their heads in
:mod:`~detector.training.tasks.nets`).
"""

import lazy_loader as _lazy

__getattr__, __dir__, __all__ = _lazy.attach(__name__, submod_attrs={
    "detection": ["DetectorModule"],
    "largest": ["LargestBoxRegressor", "LargestObjectClassifier", "SingleObjectDetector"],
    "multilabel": ["MultiLabelClassifier"],
    "staged": ["StagedModule"],
    "stepping": ["TaskModule"],
})
