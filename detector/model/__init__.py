"""The network: backbone bodies and the lesson's SSD head; raw activations out.

- :mod:`~detector.model.backbones`: bodies in three stages (strides 8, 16, 32), fastai's layer groups;
- :mod:`~detector.model.head`: the lesson's ``SSD_MultiHead`` (``StdConv``, ``OutConv``), :class:`HeadConfig`;
- :mod:`~detector.model.ssd`: body + head.
"""

import lazy_loader as _lazy

__getattr__, __dir__, __all__ = _lazy.attach(__name__, submod_attrs={
    "backbones": ["BACKBONES", "Backbone", "backbone_stats", "build_backbone"],
    "head": ["HeadConfig", "SSDHead"],
    "ssd": ["SSD", "build_ssd"],
})
