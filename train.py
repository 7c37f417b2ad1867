"""`python train.py ARGS` is `detector train ARGS` (see `detector train --help`)."""

from detector.cli import shim

shim("train")
