"""Training: the LightningModules (the SSD and the lessons' stepping stones, on one staged base),
the recipe (stages, one-cycle, freezing), the config's links, the learning-rate range test, run
folders, and what a long run needs around the model (checkpoints that survive a kill, exact
resumption, guards, loggers, dashboards).

The configs name the model, callbacks and loggers by these short paths
(``detector.training.DetectorModule``, ``detector.training.CSVLogger``,
``detector.training.ValidationPictures``); each loads its module on first use, so that importing
this package (``detector eval --help``, listing runs) loads no Lightning.

- :mod:`~detector.training.tasks`: ``DetectorModule``, ``StagedModule`` and the stepping stones;
- :mod:`~detector.training.recipe`: ``Stage``, ``OneCycle``, ``OptimizerConfig``, freezing;
- :mod:`~detector.training.config`: YAML -> model and data, with the CLI's links;
- :mod:`~detector.training.plan`: what ``detector train`` does to a parsed config (run folder,
  recipe length, DDP checks); :mod:`~detector.training.runs`: ``runs/NAME/vN``;
- :mod:`~detector.training.checkpoints`, :mod:`~detector.training.rng`,
  :mod:`~detector.training.guards`, :mod:`~detector.training.loggers`,
  :mod:`~detector.training.dashboard`: around a long run;
- :mod:`~detector.training.lr_finder`; :mod:`~detector.training.fold`,
  :mod:`~detector.training.depthwise`: opt-in CPU speed-ups.
"""

import lazy_loader as _lazy

__getattr__, __dir__, __all__ = _lazy.attach(__name__, submod_attrs={
    "checkpoints": ["AtomicCheckpointIO", "AtomicCheckpoints", "read_checkpoint"],
    "dashboard": ["ResultsFolder", "ValidationPictures"],
    "guards": ["FiniteWeights", "ImageCounts", "NonFiniteLossError", "NonFiniteWeightsError"],
    "loggers": ["CSVLogger", "RunIdentity", "WandbLogger"],
    "recipe": ["OneCycle", "OptimizerConfig", "Stage"],
    "rng": ["RNGState"],
    "tasks": ["DetectorModule", "LargestBoxRegressor", "LargestObjectClassifier", "MultiLabelClassifier",
              "SingleObjectDetector", "StagedModule"],
})
