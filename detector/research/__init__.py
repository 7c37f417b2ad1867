"""Measuring an idea honestly: training a config at several seeds, comparing configs with intervals
that hold the noise of the seeds and of a small test split.

- :mod:`~detector.research.compare`: ``detector compare A B [C ...]``: the runs trained or reused,
  evaluated on one split, the paired bootstrap of every side's difference from A, the tables,
  verdicts, JSON and picture;
- :mod:`~detector.research.seed_runs`: the run of a config at a seed, found when it has finished
  (``source.json``) and trained when it has not.
"""

import lazy_loader as _lazy

__getattr__, __dir__, __all__ = _lazy.attach(__name__, submod_attrs={
    "compare": ["Outcome", "Side", "compare", "format_tables", "plan_sides", "write_outcome"],
    "seed_runs": ["SeedRun", "find_finished", "train_seed"],
})
