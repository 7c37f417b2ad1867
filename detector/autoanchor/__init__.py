"""Anchors from the data (``anchors: auto``, the SSD analogue of YOLOv5's autoanchor): the input
size and the fewest anchors that cover the training boxes, and how well a set covers them.

- :mod:`~detector.autoanchor.fit`: the search (pure: boxes in, an :class:`AnchorChoice` out);
- :mod:`~detector.autoanchor.choice`: ``anchors: auto`` in a config resolved from its train split;
- :mod:`~detector.autoanchor.coverage`: how well an anchor set matches a split's objects.
"""

import lazy_loader as _lazy

__getattr__, __dir__, __all__ = _lazy.attach(__name__, submod_attrs={
    "choice": ["describe_choice", "resolve_auto_anchors"],
    "coverage": ["match_statistics"],
    "fit": ["AnchorChoice", "choose_anchors"],
})
