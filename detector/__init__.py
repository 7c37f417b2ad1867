"""detector: the single-shot detector of fast.ai 2018 Part 2, Lessons 8-9, with PyTorch Lightning.

The command line is ``detector`` (:mod:`detector.cli`); the data flow, top to bottom, is
``data`` (records, transforms, batches) -> ``model`` (body and SSD head, raw activations) ->
``anchors``, ``matching``, ``loss`` (training) and ``box_coder``, ``postprocess``, ``metrics``
(evaluation), wired by ``module.DetectorModule`` on the recipe of ``staged`` and ``recipe``.
Importing this package imports nothing else.
"""
