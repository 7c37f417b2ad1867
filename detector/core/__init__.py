"""The lesson's pieces, pure PyTorch on batches (no Lightning, no data, no network): box maths,
the anchor grid, the box coders, matching, the loss and the post-processing.

- :mod:`~detector.core.boxes`: pure functions on ``(..., 4)`` boxes (IoU, format conversions, clipping);
- :mod:`~detector.core.anchors`: ``anc_grids`` x ``anc_zooms`` x ``anc_ratios`` -> the anchors;
- :mod:`~detector.core.box_coder`: activations <-> boxes (the lesson's ``actn_to_bb``, the SSD paper's);
- :mod:`~detector.core.matching`: ``map_to_ground_truth`` for a whole batch, ``no_grad``;
- :mod:`~detector.core.loss`: ``ssd_loss`` (localisation + BCE / focal classification), batched;
- :mod:`~detector.core.postprocess`: activations -> boxes -> per-class NMS -> detections.
"""

import lazy_loader as _lazy

__getattr__, __dir__, __all__ = _lazy.attach(__name__, submod_attrs={
    "anchors": ["AnchorConfig", "Anchors", "make_anchors"],
    "box_coder": ["BoxCoder", "SSDCoder", "TanhCoder", "make_box_coder"],
    "boxes": ["batched_box_iou", "box_iou", "cxcywh_to_xyxy", "xyxy_to_cxcywh"],
    "loss": ["LossConfig", "SSDLoss"],
    "matching": ["Match", "match"],
    "postprocess": ["PostprocessConfig", "postprocess", "to_pixels"],
})
