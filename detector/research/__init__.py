"""Research on the data and the settings, each a question answered by training normal runs: the
likely label errors of a training split (``detector data audit``: k-fold held-out predictions
ranked by cleanlab) and a search of a config's settings (``detector tune``: Optuna, one run
folder per trial, several workers on one study).

- :mod:`~detector.research.folds`: k folds of a train split as COCO JSONs;
- :mod:`~detector.research.label_issues`: cleanlab's scores per box, ranked, as a CSV;
- :mod:`~detector.research.audit_picture`: the worst images with their flagged boxes;
- :mod:`~detector.research.audit`: ``detector data audit``, from a config to the CSV and the picture;
- :mod:`~detector.research.search_space`: the YAML of the settings to search, as Optuna's distributions;
- :mod:`~detector.research.tune`: ``detector tune``, the study, its storage and its workers.
"""

import lazy_loader as _lazy

__getattr__, __dir__, __all__ = _lazy.attach(__name__, submod_attrs={
    "audit": ["AuditResult", "audit", "audit_folder"],
    "audit_picture": ["issue_grid", "worst_images"],
    "folds": ["Fold", "assign_folds", "write_folds"],
    "label_issues": ["ImageBoxes", "Issue", "rank_issues", "read_issues", "worst_of_kind", "write_issues"],
    "search_space": ["SearchSpace", "read_space"],
    "tune": ["TuneResult", "tune"],
})
