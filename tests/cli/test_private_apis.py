"""Every private Lightning and torchmetrics API the package relies on (``detector/cli/private_apis.py``)
still exists and behaves as relied on; each failure names the installed version, so that an upgrade
that changes one says which, instead of training silently on part of the data or merging a
checkpoint over the configuration. Nothing else in the package uses a private name of either."""

from __future__ import annotations

import inspect

import lightning
import lightning as L
import torch
import torchmetrics
from lightning.pytorch.cli import LightningCLI
from torchmetrics import Metric

from detector.evaluation.metrics import DetectionMetrics
from detector.cli.private_apis import ConfigDecidesModel, KeepsPerClassShape, uses_distributed_sampler
from helpers import REPO

PACKAGE = REPO / "detector"
WHERE = f"(lightning {lightning.__version__}, torchmetrics {torchmetrics.__version__})"


def test_trainer_keeps_use_distributed_sampler_where_it_is_read():
    for value in (True, False):
        trainer = L.Trainer(accelerator="cpu", devices=1, use_distributed_sampler=value, logger=False)
        assert uses_distributed_sampler(trainer) is value, f"Trainer._accelerator_connector.use_distributed_sampler moved {WHERE}"


def test_lightning_cli_still_merges_checkpoint_hyperparameters_in_parse_ckpt_path():
    """The override only matters while LightningCLI calls ``_parse_ckpt_path`` from ``__init__``."""
    assert callable(getattr(LightningCLI, "_parse_ckpt_path", None)), f"LightningCLI._parse_ckpt_path is gone {WHERE}"
    source = inspect.getsource(LightningCLI.__init__)
    assert "self._parse_ckpt_path()" in source, f"LightningCLI.__init__ no longer calls _parse_ckpt_path {WHERE}"
    assert ConfigDecidesModel._parse_ckpt_path(object()) is None


def test_torchmetrics_wraps_compute_and_squeezes_one_element_tensors():
    """Without the mixin a one-class dataset's per-class tensors come back 0-d; with it, ``(1,)``."""
    assert callable(getattr(Metric, "_wrap_compute", None)), f"Metric._wrap_compute is gone {WHERE}"

    class Plain(Metric):
        def update(self) -> None:
            pass

        def compute(self) -> dict:
            return {"per_class": {"ap": torch.ones(1)}}

    class Kept(KeepsPerClassShape, Plain):
        num_classes = 1

    for cls, shape in ((Plain, ()), (Kept, (1,))):
        metric = cls()
        metric.update()
        assert metric.compute()["per_class"]["ap"].shape == shape, f"torchmetrics' squeeze of compute() changed {WHERE}"
    assert issubclass(DetectionMetrics, KeepsPerClassShape)


def test_no_other_module_uses_a_private_name_of_lightning_or_torchmetrics():
    """Attribute access ``x._name`` on objects of those libraries is confined to private_apis.py;
    a crude but loud check: no ``trainer._``, ``strategy._``, ``cli._`` or ``_wrap_compute`` elsewhere."""
    suspects = ("trainer._", "strategy._", "_accelerator_connector", "_parse_ckpt_path", "_wrap_compute", "_ddp_kwargs",
                "ExperimentWriter", "_save_last_checkpoint", "_check_log_dir_exists")
    found = []
    for path in PACKAGE.rglob("*.py"):
        if path.name == "private_apis.py":
            continue
        text = path.read_text()
        found += [f"{path.relative_to(PACKAGE)}: {s}" for s in suspects if s in text]
    assert not found, found
