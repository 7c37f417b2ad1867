"""How good a trained detector is: COCO mAP and the VOC devkit's AP, precision-recall and F1 curves,
the confusion matrix, the error analysis, a model over a whole split, and the results folder with
its pictures.

- :mod:`~detector.evaluation.metrics`: :class:`DetectionMetrics` (torchmetrics + pycocotools, VOC AP);
- :mod:`~detector.evaluation.voc_ap`: the VOC devkit's matching and AP (11-point, all-point);
- :mod:`~detector.evaluation.curves`: PR and F1 curves, the confusion matrix (numbers);
- :mod:`~detector.evaluation.errors`: which images and which kind of error (TIDE's dAP, per-image
  TP/FP/FN); :mod:`~detector.evaluation.error_figures`: its pictures;
- :mod:`~detector.evaluation.evaluator`: a model over a split: summary, COCO detections, the table;
- :mod:`~detector.evaluation.coco_matches`: COCO AP of any multiset of a split's images, from
  pycocotools' per-image matches computed once; :mod:`~detector.evaluation.bootstrap`: the paired
  bootstrap of a difference between configs trained with several seeds;
- :mod:`~detector.evaluation.figures`: the results' pictures; :mod:`~detector.evaluation.results`:
  the results folder ``runs/NAME/vN/results/SPLIT``.
"""

import lazy_loader as _lazy

__getattr__, __dir__, __all__ = _lazy.attach(__name__, submod_attrs={
    "errors": ["ErrorAnalysis", "analyse_errors"],
    "bootstrap": ["Comparison", "Difference", "compare_runs"],
    "coco_matches": ["CocoMatches", "match_images"],
    "evaluator": ["Evaluation", "evaluate", "format_table", "summarize"],
    "metrics": ["DetectionMetrics", "fitness"],
    "results": ["write_results"],
    "voc_ap": ["voc_evaluate"],
})
