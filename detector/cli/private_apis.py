"""The one private API of Lightning the package relies on, in one place.

Used only because no public API does the job; ``tests/cli/test_private_apis.py`` checks that it still
exists and behaves as relied on, and fails naming the installed version when it changes. Nothing
else in the package touches a private name of Lightning or torchmetrics (the same test checks).

:class:`ConfigDecidesModel`: ``LightningCLI._parse_ckpt_path``, which merges a checkpoint file's
hyperparameters over the configuration's model section before anything is built, has no public
switch. The configuration decides the model here, and a checkpoint that does not fit it is refused,
saying what differs (``detector.training.checkpoints.check_checkpoint_fits``).
"""

from __future__ import annotations

__all__ = ["ConfigDecidesModel"]


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
