"""The mistakes a user can make, as exception types.

Every error that names something the user gave (a setting, a data file or record, a checkpoint)
is a :class:`UserError`; the ``detector`` commands print its message on one line and exit with
status 2, without a traceback. Each type also derives from the built-in exception a caller would
expect (``ValueError``, ``FileNotFoundError``), so code that catches those keeps working.
Anything else that escapes a command is a bug in the package, and keeps its traceback.

A UserError raised in a DataLoader worker process reaches the main process as the same type, built
by PyTorch from one string: "Caught BadRecordError in DataLoader worker process 0.\nOriginal
Traceback (most recent call last): ..." followed by the worker's whole traceback (PyTorch's
``ExceptionWrapper.reraise`` calls ``exc_type(message)``). :class:`UserError` keeps only the
worker's own message from such a string (the last ``module.Type: message`` of the traceback) and
notes where it was raised, so the user reads the same line as without workers.
"""

from __future__ import annotations

import re

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

    def __init__(self, *args: object) -> None:
        where = None
        if len(args) == 1 and isinstance(args[0], str):
            message, where = _unwrapped(args[0], type(self))
            args = (message,)
        super().__init__(*args)
        if where:
            self.add_note(f"(raised {where}; re-raised in the main process)")


# PyTorch's frame around an exception re-raised from a DataLoader worker (torch/_utils.py, ExceptionWrapper).
_WORKER = re.compile(r"Caught (?P<type>\w+) (?P<where>in [^\n]*?)\.\nOriginal Traceback \(most recent call last\):\n")


def _unwrapped(text: str, kind: type) -> tuple[str, str | None]:
    """``(the worker's message, where it was raised)`` from a worker traceback wrapped by PyTorch,
    or ``(text, None)`` for any other text."""
    frame = _WORKER.match(text)
    if frame is None or frame["type"] != kind.__name__:
        return text, None
    # the traceback's last exception line: "module.Qualname: message" (traceback.format_exception_only)
    name = kind.__qualname__ if kind.__module__ in ("builtins", "__main__") else f"{kind.__module__}.{kind.__qualname__}"
    start = text.rfind(f"\n{name}: ")
    if start < 0:
        return text, None
    return text[start + len(name) + 3:].rstrip("\n"), frame["where"]


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
