"""The mistakes a user can make, as exception types.

Every error that names something the user gave (a setting, a data file or record, a checkpoint)
is a :class:`UserError`; the ``detector`` commands print its message on one line and exit with
status 2, without a traceback. Each type also derives from the built-in exception a caller would
expect (``ValueError``, ``FileNotFoundError``), so code that catches those keeps working.
Anything else that escapes a command is a bug in the package, and keeps its traceback.
"""

from __future__ import annotations

__all__ = [
    "BadImageError",
    "BadRecordError",
    "CheckpointError",
    "CheckpointMismatchError",
    "ConfigError",
    "MissingFileError",
    "UserError",
]


class UserError(Exception):
    """A mistake in what the user gave; the message names the thing and says what to change."""


class ConfigError(UserError, ValueError):
    """A setting that cannot work (the message names its key)."""


class MissingFileError(UserError, FileNotFoundError):
    """A file or folder the user named does not exist."""


class BadRecordError(UserError, ValueError):
    """A data file or record that cannot be used: names the file and the record's id."""


class BadImageError(UserError, ValueError):
    """An image given to predict that cannot be used: a file that cannot be decoded, an array of
    the wrong shape or type, an object that is no kind of image (the message names it)."""


class CheckpointError(UserError, ValueError):
    """A checkpoint file that is missing or cannot be read; the message names the file."""


class CheckpointMismatchError(CheckpointError):
    """A checkpoint whose weights do not fit the model built from this configuration."""
