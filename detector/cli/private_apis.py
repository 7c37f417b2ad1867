"""Every private API of Lightning and torchmetrics the package relies on, in one place.

Each is used only where no public API does the job (said below, per use);
``tests/test_private_apis.py`` checks that each still exists and behaves as relied on, and fails
naming the installed version when one changes. Nothing else in the package touches a private
name of either library.

1. :func:`uses_distributed_sampler`: ``Trainer(use_distributed_sampler=...)`` is stored only in
   ``trainer._accelerator_connector``. The data module shards its data itself and must refuse a
   trainer that would shard it again (every process would silently train on 1/world of its share).
2. :class:`ConfigDecidesModel`: ``LightningCLI._parse_ckpt_path``, which merges a checkpoint file's
   hyperparameters over the configuration's model section before anything is built, has no public
   switch. The configuration decides the model here, and a checkpoint that does not fit it is
   refused, saying what differs (``detector.training.checkpoints.check_checkpoint_fits``).
3. :class:`KeepsPerClassShape`: torchmetrics' ``Metric._wrap_compute`` squeezes every one-element
   tensor of ``compute()``'s result to 0-d, which turns the ``(C,)`` per-class tensors of a
   one-class dataset into scalars; no public option turns that off.
"""

from __future__ import annotations

from typing import Any, Callable

__all__ = ["ConfigDecidesModel", "KeepsPerClassShape", "uses_distributed_sampler"]


def uses_distributed_sampler(trainer: Any) -> bool:
    """The ``use_distributed_sampler`` the ``lightning.pytorch.Trainer`` was built with."""
    return bool(trainer._accelerator_connector.use_distributed_sampler)


class ConfigDecidesModel:
    """A ``LightningCLI`` mixin (list it before ``LightningCLI``): the configuration builds the model
    with ``--ckpt_path FILE`` as with ``--ckpt_path last``; the checkpoint's hyperparameters are not
    merged over it.

    Lightning 2.6 merges them for a checkpoint file (not for ``last``), so the YAML and the command
    line silently lose to the checkpoint; and the merge cannot even parse this package's
    checkpoints (the modules save their hyperparameters without LightningCLI's ``_class_path``).
    """

    def _parse_ckpt_path(self) -> None:
        """Leave the parsed configuration as it is (see the class docstring)."""


class KeepsPerClassShape:
    """A ``torchmetrics.Metric`` mixin (list it before ``Metric``): ``compute()``'s ``per_class``
    dict keeps its ``(C,)`` tensors for ``C = num_classes = 1`` too."""

    num_classes: int

    def _wrap_compute(self, compute: Callable) -> Callable:
        wrapped = super()._wrap_compute(compute)  # type: ignore[misc]

        def per_class_kept(*args: Any, **kwargs: Any) -> dict[str, Any]:
            out = wrapped(*args, **kwargs)
            out["per_class"] = {k: v.reshape(self.num_classes) for k, v in out["per_class"].items()}
            return out

        return per_class_kept
