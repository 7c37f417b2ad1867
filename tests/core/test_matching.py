from __future__ import annotations

import pytest
import torch
from torchvision.ops import box_iou

from detector.core.anchors import make_anchors
from detector.core.boxes import batched_box_iou
from detector.core.matching import FORCED_OVERLAP, match
from reference import get_y, match_one, random_targets


@pytest.fixture
def grid4():
    """The lesson's first model: a 4x4 grid, one square anchor per cell (16 anchors, side 0.25)."""
    return make_anchors(grids=(4,), zooms=(1.0,), ratios=((1.0, 1.0),))


def test_batched_box_iou_equals_torchvision():
    gen = torch.Generator().manual_seed(1)
    boxes, _ = random_targets([5, 3, 0, 7], 20, gen)
    anchors = make_anchors().xyxy
    got = batched_box_iou(boxes, anchors)
    assert got.shape == (4, 7, 189)
    for b in range(4):
        torch.testing.assert_close(got[b], box_iou(boxes[b], anchors), rtol=0, atol=0)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize("grids", [(4, 2, 1), (8, 4, 2, 1)])
def test_batched_matching_equals_the_lesson_loop(seed, grids):
    gen = torch.Generator().manual_seed(seed)
    anchors = make_anchors(grids=grids)
    counts = torch.randint(0, 21, (8,), generator=gen).tolist()
    counts[0] = 0  # always one image without objects
    boxes, labels = random_targets(counts, 20, gen, torch.float64)
    got = match(anchors, boxes, labels)
    for b in range(len(counts)):
        real_boxes, real_labels = get_y(boxes[b], labels[b])
        pos, gt_idx, gt_overlap = match_one(anchors, real_boxes, real_labels)
        assert torch.equal(got.positive[b], pos)
        torch.testing.assert_close(got.overlap[b], gt_overlap, rtol=0, atol=0)
        assert torch.equal(got.matched_idx[b][pos], gt_idx[pos])  # padding is at the end: same indices
        want_labels = torch.full_like(got.target_labels[b], -1)
        want_labels[pos] = real_labels[gt_idx[pos]]
        assert torch.equal(got.target_labels[b], want_labels)
        want_boxes = torch.zeros_like(got.target_boxes[b])
        want_boxes[pos] = real_boxes[gt_idx[pos]]
        assert torch.equal(got.target_boxes[b], want_boxes)
    assert not got.positive[0].any()
    assert got.positive[1:][torch.tensor(counts[1:]) > 0].any(dim=1).all()  # every image with objects has positives


def test_ties_lowest_anchor_wins_and_threshold_is_strict(grid4):
    # Covers anchors 0 ([0, 0, .25, .25]) and 1 ([.25, 0, .5, .25]) exactly half each: IoU 0.5 with both.
    boxes = torch.tensor([[[0.0, 0.0, 0.5, 0.25]]])
    labels = torch.tensor([[7]])
    m = match(grid4, boxes, labels, iou_threshold=0.5)
    assert m.overlap[0, 0] == FORCED_OVERLAP and m.overlap[0, 1] == 0.5
    assert m.positive[0].nonzero().flatten().tolist() == [0]  # 0.5 is not > 0.5
    assert m.target_labels[0, 0] == 7 and (m.target_labels[0, 1:] == -1).all()
    m = match(grid4, boxes, labels, iou_threshold=0.49)
    assert m.positive[0].nonzero().flatten().tolist() == [0, 1]
    torch.testing.assert_close(m.target_boxes[0, :2], boxes[0].expand(2, 4))
    assert (m.target_boxes[0, 2:] == 0).all()


def test_shared_best_anchor_goes_to_the_later_object(grid4):
    # Objects 0 and 2 both fit inside anchor 5 ([.25, .25, .5, .5]); object 1 sits on anchor 15.
    boxes = torch.tensor([[[0.26, 0.26, 0.40, 0.40], [0.80, 0.80, 0.95, 0.95], [0.30, 0.30, 0.48, 0.48]]])
    labels = torch.tensor([[3, 4, 5]])
    for _ in range(3):  # deterministic, not a race between duplicate scatter indices
        m = match(grid4, boxes, labels)
        assert m.positive[0].nonzero().flatten().tolist() == [5, 15]
        assert m.matched_idx[0, 5] == 2 and m.target_labels[0, 5] == 5
        assert m.matched_idx[0, 15] == 1 and m.target_labels[0, 15] == 4
    # Swapping the order swaps the winner: it is the index that decides, not the IoU.
    m = match(grid4, boxes[:, [2, 1, 0]], labels[:, [2, 1, 0]])
    assert m.matched_idx[0, 5] == 2 and m.target_labels[0, 5] == 3


def test_anchor_ties_between_objects_go_to_the_lower_index(grid4):
    # Two identical objects: every anchor's best object is object 0 except the forced one (object 1, later).
    boxes = torch.tensor([[[0.0, 0.0, 0.45, 0.45], [0.0, 0.0, 0.45, 0.45]]])
    m = match(grid4, boxes, torch.tensor([[1, 2]]), iou_threshold=0.1)
    assert m.matched_idx[0, 0] == 1  # the shared best anchor: later object
    positives = m.positive[0].nonzero().flatten()
    assert positives.tolist() == [0, 1, 4, 5] and (m.matched_idx[0, positives[1:]] == 0).all()


def test_padding_never_matches(grid4):
    # The padding row sits exactly on anchor 10; the real object is far away in the corner.
    boxes = torch.tensor([[[0.0, 0.0, 0.25, 0.25], [0.5, 0.5, 0.75, 0.75]]])
    m = match(grid4, boxes, torch.tensor([[2, -1]]))
    assert m.positive[0].nonzero().flatten().tolist() == [0]
    assert (m.matched_idx[0] == 0).all()


def test_images_without_objects_are_all_background(grid4):
    boxes = torch.rand(3, 2, 4)
    labels = torch.tensor([[-1, -1], [0, -1], [-1, -1]])
    boxes[1, 0] = torch.tensor([0.1, 0.1, 0.6, 0.6])
    m = match(grid4, boxes, labels)
    for b in (0, 2):
        assert not m.positive[b].any()
        assert (m.target_labels[b] == -1).all() and (m.overlap[b] == 0).all() and (m.target_boxes[b] == 0).all()
    assert m.positive[1].any()


def test_zero_objects_in_the_whole_batch(grid4):
    m = match(grid4, torch.zeros(2, 0, 4), torch.zeros(2, 0, dtype=torch.long))
    assert m.positive.shape == (2, 16) and not m.positive.any()
    assert m.target_boxes.shape == (2, 16, 4) and m.target_labels.dtype == torch.long
    assert (m.target_labels == -1).all()


def test_bad_inputs_fail_loudly(grid4):
    with pytest.raises(ValueError, match="boxes"):
        match(grid4, torch.zeros(2, 3, 4), torch.zeros(2, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="boxes"):  # right rank and labels, 5 coordinates
        match(grid4, torch.zeros(2, 3, 5), torch.zeros(2, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="iou_threshold"):
        match(grid4, torch.zeros(2, 3, 4), torch.zeros(2, 3, dtype=torch.long), iou_threshold=2.0)
    with pytest.raises(ValueError, match="iou_threshold"):  # 1 would leave only the forced anchors
        match(grid4, torch.zeros(2, 3, 4), torch.zeros(2, 3, dtype=torch.long), iou_threshold=1.0)


def test_threshold_zero_makes_every_overlapping_anchor_positive(grid4):
    boxes = torch.tensor([[[0.1, 0.1, 0.6, 0.6]]])  # overlaps the 3x3 top-left cells of the 4x4 grid
    m = match(grid4, boxes, torch.zeros(1, 1, dtype=torch.long), iou_threshold=0.0)
    assert m.positive[0].nonzero().flatten().tolist() == [0, 1, 2, 4, 5, 6, 8, 9, 10]


def test_match_keeps_its_inputs_device(grid4):
    boxes = torch.zeros(2, 3, 4, device="meta")  # the meta device stands in for an accelerator
    m = match(grid4.to("meta"), boxes, torch.zeros(2, 3, dtype=torch.long, device="meta"))
    assert {t.device.type for t in (m.matched_idx, m.positive, m.target_labels, m.target_boxes, m.overlap)} == {"meta"}
    assert m.target_boxes.shape == (2, 16, 4) and m.overlap.shape == (2, 16)
