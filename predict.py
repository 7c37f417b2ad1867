"""`python predict.py ARGS` is `detector predict ARGS` (see `detector predict --help`)."""

from detector.cli import shim

shim("predict")
