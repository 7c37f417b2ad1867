"""No silent partial runs: ``on_bad_record: skip`` may leave out a few bad records, never a large
part of a split.

A split from which more than ``max_fraction`` (``data.max_skipped_fraction``, default 0.05) of the
images, or of the boxes, would be skipped is refused with one :class:`BadRecordError` that gives the
counts, the problems counted by reason, and the first few of them (each naming its file and record).
Skipping an image skips all its boxes (``detector.data.records``: an image that loses one object
would teach the model that the object is background), so both shares are checked. The importer
(``detector data import --on-bad-record skip``) applies the same rule to what it drops.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from detector.data.records import LoadedSplit
from detector.errors import BadRecordError, ConfigError

__all__ = ["check_fraction", "check_skipped", "check_split"]


# How many problems the refusal quotes.
_FIRST = 3


def check_fraction(value: float, setting: str = "data.max_skipped_fraction") -> float:
    """``value`` if it is a fraction in [0, 1], else a :class:`ConfigError` naming ``setting``."""
    if not 0.0 <= value <= 1.0:
        raise ConfigError(f"{setting} = {value}: give a fraction between 0 and 1 (0.05: at most 5 % skipped)")
    return value


def check_skipped(
    where: str,
    skipped_images: int,
    total_images: int,
    skipped_boxes: int,
    total_boxes: int,
    reasons: Sequence[str],
    problems: Sequence[str],
    max_fraction: float,
    setting: str = "data.max_skipped_fraction",
) -> None:
    """Refuse when more than ``max_fraction`` of ``where``'s images or boxes would be skipped.

    Args:
        where: what the counts are of (a JSON file, a dataset's split), first in the message.
        skipped_images, total_images, skipped_boxes, total_boxes: the counts; a total of 0 counts as
            nothing skipped.
        reasons: a short name of each problem's kind (``"image file not found"``), one per problem.
        problems: the problems' messages, each naming its file and record.
        max_fraction: the largest share of images, and of boxes, that may be skipped.
        setting: the option that sets ``max_fraction``, named in the message.
    """
    image_share = skipped_images / total_images if total_images else 0.0
    box_share = skipped_boxes / total_boxes if total_boxes else 0.0
    if image_share <= max_fraction and box_share <= max_fraction:
        return
    by_reason = ", ".join(f"{n} {reason}" for reason, n in Counter(reasons).most_common())
    first = "; ".join(problems[:_FIRST]) + (f"; ... and {len(problems) - _FIRST} more" if len(problems) > _FIRST else "")
    raise BadRecordError(
        f"{where}: on_bad_record='skip' would skip {skipped_images} of {total_images} images ({image_share:.1%}) "
        f"and {skipped_boxes} of {total_boxes} boxes ({box_share:.1%}), more than {setting} = {max_fraction:g}; "
        f"problems by reason: {by_reason or 'none recorded'}; first: {first or 'none'}. "
        f"Fix those records, or raise {setting} to train on what is left"
    )


def check_split(split: LoadedSplit, max_fraction: float, setting: str = "data.max_skipped_fraction") -> None:
    """:func:`check_skipped` on what :func:`detector.data.records.load_records` skipped of a split."""
    r = split.report
    check_skipped(
        str(split.json_path),
        r.skipped_images,
        r.images + r.skipped_images,
        r.skipped_annotations,
        r.boxes + r.skipped_annotations,
        r.reasons,
        r.problems,
        max_fraction,
        setting,
    )
