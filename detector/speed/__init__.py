"""Opt-in speed-ups for training on a CPU, each switched on by a setting and measured in ``bench/``:

- :mod:`~detector.speed.fold`: BatchNorm in eval mode folded into the convolution before it
  (on when the recipe has ``train_bn: false`` or ``norm_eval: true``);
- :mod:`~detector.speed.depthwise`: depthwise kernels kept at their pretrained values
  (``train_depthwise: false``);
- :mod:`~detector.speed.image_cache`: decoded images kept in memory (``data.cache_images: true``).

The lesson's configuration switches none of them on, and nothing imports them unless a setting does.
"""
