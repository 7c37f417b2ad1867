"""Research: questions about the data, the settings and the ideas, each answered by training
normal runs.

- :mod:`~detector.research.compare`: ``detector compare A B [C ...]``: the runs trained or reused,
  evaluated on one split, the paired bootstrap of every side's difference from A, the tables,
  verdicts, JSON and picture;
- :mod:`~detector.research.seed_runs`: the run of a config at a seed, found when it has finished
  (``source.json``) and trained when it has not;
- :mod:`~detector.research.folds`: k folds of a train split as COCO JSONs;
- :mod:`~detector.research.label_issues`: cleanlab's scores per box, ranked, as a CSV;
- :mod:`~detector.research.audit_picture`: the worst images with their flagged boxes;
- :mod:`~detector.research.audit`: ``detector data audit``, from a config to the CSV and the picture
  (k-fold held-out predictions ranked by cleanlab);
- :mod:`~detector.research.search_space`: the YAML of the settings to search, as Optuna's distributions;
- :mod:`~detector.research.tune`: ``detector tune``, a search of a config's settings with Optuna:
  the study, its storage and its workers, one run folder per trial.
"""

import lazy_loader as _lazy

__getattr__, __dir__, __all__ = _lazy.attach(__name__, submod_attrs={
    "audit": ["AuditResult", "audit", "audit_folder"],
    "audit_picture": ["issue_grid", "worst_images"],
    "compare": ["Outcome", "Side", "compare", "format_tables", "plan_sides", "write_outcome"],
    "folds": ["Fold", "assign_folds", "write_folds"],
    "label_issues": ["ImageBoxes", "Issue", "rank_issues", "read_issues", "worst_of_kind", "write_issues"],
    "search_space": ["SearchSpace", "read_space"],
    "seed_runs": ["SeedRun", "find_finished", "train_seed"],
    "tune": ["TuneResult", "tune"],
})
