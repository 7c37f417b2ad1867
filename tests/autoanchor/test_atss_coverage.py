"""ATSS in the anchor-coverage statistics (``detector inspect matches``' text): the objects it
matches, the ones only their forced anchor covers, positives per object."""

from __future__ import annotations

import pytest

from coco_files import two_class_json
from detector.autoanchor.coverage import format_statistics, match_statistics
from detector.core.anchors import make_anchors
from detector.data.records import load_records


def test_match_statistics_with_atss_counts_the_objects_it_forces(tmp_path):
    """A 2x2 grid of quarters and the whole image: an object equal to a quarter is ATSS's own; a small
    one near a corner, whose candidates' centres all miss it, only has the anchor forced to it; the
    left half has three anchors at IoU 0.5, but the image's centre lies on its edge."""
    anchors = make_anchors([2, 1], [1.0], [(1.0, 1.0)])
    boxes = {1: [[50, 50, 100, 100]], 2: [[5, 5, 20, 20], [50, 0, 100, 50]], 3: [[0, 0, 50, 100]]}
    split = load_records(two_class_json(tmp_path, boxes), tmp_path)
    stats = match_statistics(split, anchors, iou_threshold=0.4, matching="atss", atss_topk=2)
    assert stats["objects"] == 4 and stats["unmatched"] == 0
    assert stats["forced_only"] == 1  # the small object
    assert stats["per_class"] == {"first": (3, 1, 0), "second": (1, 0, 0)}
    assert stats["positives_per_object"] == (pytest.approx(5 / 4), 1, 2)  # the left half: two quarters
    fixed = match_statistics(split, anchors, iou_threshold=0.4)
    assert fixed["forced_only"] == 1 and fixed["positives_per_object"] == (pytest.approx(6 / 4), 1, 3)
    text = format_statistics(stats, anchors, 0.4, split, matching="atss", atss_topk=2)
    assert "ATSS, 2 candidates per grid" in text and "no candidate passed their ATSS threshold): 1 (25.0 %)" in text
