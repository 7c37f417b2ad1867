"""What a long training run needs around the model: checkpoints that survive a kill, exact
resumption (RNG states, logger runs), guards against non-finite numbers and bad images, loggers,
and dashboard pictures. The configs name the callbacks and loggers by these short paths
(``detector.training.CSVLogger``, ``detector.training.ValidationPictures``)."""

from detector.training.checkpoints import AtomicCheckpointIO, AtomicCheckpoints, read_checkpoint
from detector.training.dashboard import ValidationPictures
from detector.training.guards import FiniteWeights, ImageCounts, NonFiniteLossError, NonFiniteWeightsError
from detector.training.loggers import CSVLogger, RunIdentity, WandbLogger
from detector.training.rng import RNGState

__all__ = [
    "AtomicCheckpointIO",
    "AtomicCheckpoints",
    "CSVLogger",
    "FiniteWeights",
    "ImageCounts",
    "NonFiniteLossError",
    "NonFiniteWeightsError",
    "RNGState",
    "RunIdentity",
    "ValidationPictures",
    "WandbLogger",
    "read_checkpoint",
]
