"""Looking before and after training: what ``detector inspect`` draws (a config's anchors, their
matches with the objects, augmented batches, a checkpoint's predictions) and ``detector data
report`` writes (a config's training data: classes, box shapes, anchor coverage).

- :mod:`~detector.inspection.views`: ``detector inspect anchors|matches|batch|predictions``;
- :mod:`~detector.inspection.report`: ``detector data report``.
"""

import lazy_loader as _lazy

__getattr__, __dir__, __all__ = _lazy.attach(__name__, submod_attrs={
    "report": ["write_report"],
    "views": ["inspect_anchors", "inspect_batches", "inspect_matches", "inspect_predictions"],
})
