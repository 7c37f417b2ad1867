"""The one private Lightning API the package relies on (``detector/cli/private_apis.py``) still exists
and behaves as relied on; a failure names the installed version, so that an upgrade that changes it
says so instead of merging a checkpoint over the configuration. Nothing else in the package uses a
private name of Lightning or torchmetrics; what replaced the two that were retired (the samplers'
``DistributedSampler`` base, ``per_class``) still does its job through public APIs."""

from __future__ import annotations

import inspect

import lightning
import torch
import torchmetrics
from lightning.pytorch.cli import LightningCLI
from torch.utils.data.distributed import DistributedSampler

from detector.cli.private_apis import ConfigDecidesModel
from detector.data.samplers import EpochSampler, ShardSampler
from detector.evaluation.metrics import DetectionMetrics, per_class
from helpers import REPO

PACKAGE = REPO / "detector"
WHERE = f"(lightning {lightning.__version__}, torchmetrics {torchmetrics.__version__})"


def test_the_samplers_are_distributed_samplers_so_lightning_keeps_them():
    """Lightning replaces a loader's sampler under DDP unless it is a ``DistributedSampler``; ours shard
    the data themselves (no padded duplicates in evaluation, the augmentation seeded per sample)."""
    train, shard = EpochSampler(10, seed=3, num_replicas=2, rank=1), ShardSampler(7, num_replicas=2, rank=1)
    assert isinstance(train, DistributedSampler) and isinstance(shard, DistributedSampler)
    assert len(train) == 5 and len(list(train)) == 5 and {e for e, _ in train} == {0}
    train.set_epoch(4)
    assert {e for e, _ in train} == {4}
    assert list(shard) == [1, 3, 5] and len(shard) == 3  # every image once over the two ranks: 0, 2, 4, 6 on rank 0


def test_lightning_cli_still_merges_checkpoint_hyperparameters_in_parse_ckpt_path():
    """The override only matters while LightningCLI calls ``_parse_ckpt_path`` from ``__init__``."""
    assert callable(getattr(LightningCLI, "_parse_ckpt_path", None)), f"LightningCLI._parse_ckpt_path is gone {WHERE}"
    source = inspect.getsource(LightningCLI.__init__)
    assert "self._parse_ckpt_path()" in source, f"LightningCLI.__init__ no longer calls _parse_ckpt_path {WHERE}"
    assert ConfigDecidesModel._parse_ckpt_path(object()) is None


def test_one_class_results_keep_their_per_class_shape():
    """torchmetrics squeezes one-element results of ``compute()``; ``per_class`` gives them back as ``(1,)``."""
    metric = DetectionMetrics(1)
    box = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
    metric.update([{"boxes": box, "scores": torch.tensor([0.9]), "labels": torch.tensor([0])}],
                  [{"boxes": box, "labels": torch.tensor([0])}])
    result = metric.compute()
    assert result["per_class"]["map_50"].shape == (), f"torchmetrics no longer squeezes compute()'s results {WHERE}: drop per_class()"
    kept = per_class(result)
    assert {k: tuple(v.shape) for k, v in kept.items()} == {k: (1,) for k in result["per_class"]}
    assert float(kept["map_50"][0]) == 1.0


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
