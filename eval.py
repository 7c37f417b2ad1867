"""`python eval.py ARGS` is `detector eval ARGS` (see `detector eval --help`)."""

from detector.cli import shim

shim("eval")
