from __future__ import annotations

import pytest
import torch
from torchvision.ops import box_iou

from detector.core.anchors import Anchors, make_anchors
from detector.core.boxes import batched_box_iou
from detector.core.matching import FORCED_OVERLAP, match
from reference import atss_match_one, get_y, match_one, random_targets


@pytest.fixture
def grid4():
    """The lesson's first model: a 4x4 grid, one square anchor per cell (16 anchors, side 0.25)."""
    return make_anchors(grids=(4,), zooms=(1.0,), ratios=((1.0, 1.0),))



def assert_image_matches(got, b, pos, gt_idx, gt_overlap, real_boxes, real_labels) -> None:
    """Image ``b`` of a batched match equals the per-image loop's ``(pos, gt_idx, gt_overlap)``:
    positives, overlaps, matched indices (padding is at the end: the same indices), targets."""
    assert torch.equal(got.positive[b], pos)
    torch.testing.assert_close(got.overlap[b], gt_overlap, rtol=0, atol=0)
    assert torch.equal(got.matched_idx[b][pos], gt_idx[pos])
    want_labels = torch.full_like(got.target_labels[b], -1)
    want_labels[pos] = real_labels[gt_idx[pos]]
    assert torch.equal(got.target_labels[b], want_labels)
    want_boxes = torch.zeros_like(got.target_boxes[b])
    want_boxes[pos] = real_boxes[gt_idx[pos]]
    assert torch.equal(got.target_boxes[b], want_boxes)

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
        assert_image_matches(got, b, pos, gt_idx, gt_overlap, real_boxes, real_labels)
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


# --------------------------------------------------------------------------------------------------
# ATSS (Zhang et al. 2020): adaptive thresholds per object


def _concatenated_anchors():
    """Two grids with their own anchors per cell (4x4 with 2, 2x2 with 3), joined as bench/loss.py's SSD300 set is."""
    fine = make_anchors(grids=(4,), zooms=(1.0,), ratios=((1.0, 1.0), (1.0, 0.5)))
    coarse = make_anchors(grids=(2,), zooms=(1.0,), ratios=((1.0, 1.0), (1.0, 0.5), (0.5, 1.0)))
    return Anchors(torch.cat([fine.cxcywh, coarse.cxcywh]), torch.cat([fine.cell_size, coarse.cell_size]), (4, 2), 3)


def test_level_sizes():
    assert make_anchors().level_sizes() == [9 * 16, 9 * 4, 9]
    assert make_anchors(grids=(8, 4, 2, 1), zooms=(1.0,), ratios=((1.0, 1.0),)).level_sizes() == [64, 16, 4, 1]
    assert _concatenated_anchors().level_sizes() == [32, 12]


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("anchors,topk", [
    (make_anchors(), 9),
    (make_anchors(), 4),  # fewer than a cell's 9 tied shapes: the lowest anchors among the ties
    (make_anchors(grids=(8, 4, 2, 1)), 9),
    (make_anchors(grids=(8, 4, 2, 1), zooms=(1.0,), ratios=((1.0, 1.0),)), 9),  # one anchor per cell, as the paper
    (_concatenated_anchors(), 5),
], ids=["lesson-9", "lesson-4", "8421-9", "8421-k1-9", "concatenated-5"])
def test_batched_atss_equals_the_plain_loop(seed, anchors, topk):
    gen = torch.Generator().manual_seed(seed)
    counts = torch.randint(0, 21, (8,), generator=gen).tolist()
    counts[0] = 0  # always one image without objects
    boxes, labels = random_targets(counts, 20, gen, torch.float64)
    got = match(anchors, boxes, labels, method="atss", atss_topk=topk)
    forced = 0
    for b in range(len(counts)):
        real_boxes, real_labels = get_y(boxes[b], labels[b])
        pos, gt_idx, gt_overlap = atss_match_one(anchors, real_boxes, real_labels, topk)
        assert_image_matches(got, b, pos, gt_idx, gt_overlap, real_boxes, real_labels)
        forced += int((gt_overlap[pos] == FORCED_OVERLAP).sum())
    assert not got.positive[0].any()
    assert got.positive.sum() > forced  # most positives are ATSS's own, not the fallback
    fixed = match(anchors, boxes, labels)
    assert not torch.equal(got.positive, fixed.positive)


@pytest.fixture
def grids21():
    """A 2x2 grid and a 1x1 grid, one square anchor per cell: anchors 0-3 the quarters (row-major), 4 the image."""
    return make_anchors(grids=(2, 1), zooms=(1.0,), ratios=((1.0, 1.0),))


def test_atss_takes_the_nearest_candidates_whose_centre_is_inside(grids21):
    # The left half: IoU 0.5 with quarters 0 and 2 and with the whole image; 0 with quarters 1 and 3.
    boxes, labels = torch.tensor([[[0.0, 0.0, 0.5, 1.0]]]), torch.tensor([[4]])
    fixed = match(grids21, boxes, labels)
    assert fixed.positive[0].nonzero().flatten().tolist() == [0, 2, 4]  # every anchor above 0.4
    # topk 1: quarter 0 (tied with quarter 2 for nearest: the lower anchor) and the image's anchor;
    # IoU 0.5 and 0.5, threshold 0.5 + 0: both pass, but the image anchor's centre (0.5, 0.5) lies
    # on the object's edge, not inside it.
    atss = match(grids21, boxes, labels, method="atss", atss_topk=1)
    assert atss.positive[0].nonzero().flatten().tolist() == [0]
    assert atss.overlap[0, 0] == 0.5 and atss.target_labels[0, 0] == 4
    # topk 2: both quarters are candidates, both inside: the same positives as fixed, less the image.
    atss = match(grids21, boxes, labels, method="atss", atss_topk=2)
    assert atss.positive[0].nonzero().flatten().tolist() == [0, 2]



@pytest.mark.parametrize("half,quarters", [
    ([0.0, 0.0, 0.5, 1.0], [0, 2]),  # left: the image anchor's centre on its right edge
    ([0.5, 0.0, 1.0, 1.0], [1, 3]),  # right: on its left edge
    ([0.0, 0.0, 1.0, 0.5], [0, 1]),  # top: on its bottom edge
    ([0.0, 0.5, 1.0, 1.0], [2, 3]),  # bottom: on its top edge
], ids=["left", "right", "top", "bottom"])
def test_atss_centre_on_any_edge_of_the_object_is_outside(grids21, half, quarters):
    """Each half of the image: its two quarters and the image anchor all have IoU 0.5 with it and
    are its candidates at topk 2 per grid, but the image anchor's centre lies on one of the half's
    four edges, and "inside" is strict on every edge."""
    boxes, labels = torch.tensor([[half]]), torch.tensor([[4]])
    atss = match(grids21, boxes, labels, method="atss", atss_topk=2)
    assert atss.positive[0].nonzero().flatten().tolist() == quarters

def test_atss_takes_anchors_the_fixed_threshold_misses(grid4):
    # Centred between cells 5 and 6 of the 4x4 grid: IoU 0.0625 / 0.175 = 0.357 with each, below 0.4.
    boxes, labels = torch.tensor([[[0.15, 0.25, 0.85, 0.5]]]), torch.tensor([[0]])
    fixed = match(grid4, boxes, labels)
    assert fixed.positive[0].nonzero().flatten().tolist() == [5]  # only the forced best anchor
    atss = match(grid4, boxes, labels, method="atss", atss_topk=2)  # candidates 5 and 6: equal IoU = the threshold
    assert atss.positive[0].nonzero().flatten().tolist() == [5, 6]
    torch.testing.assert_close(atss.overlap[0, [5, 6]], torch.tensor([0.0625 / 0.175] * 2))


def test_atss_gives_an_object_without_positives_its_best_anchor(grids21):
    # A small object near the corner: no candidate's centre lies inside it. ATSS alone would leave
    # it unlearned; here it gets its best anchor (quarter 0, IoU 0.09), forced as in the lesson.
    boxes, labels = torch.tensor([[[0.05, 0.05, 0.2, 0.2], [0.5, 0.5, 1.0, 1.0]]]), torch.tensor([[1, 2]])
    m = match(grids21, boxes, labels, method="atss", atss_topk=2)
    assert m.positive[0].nonzero().flatten().tolist() == [0, 3]
    assert m.overlap[0, 0] == FORCED_OVERLAP and m.matched_idx[0, 0] == 0 and m.target_labels[0, 0] == 1
    assert m.overlap[0, 3] == 1.0 and m.target_labels[0, 3] == 2  # the other object: by ATSS, IoU 1


def test_atss_shared_anchor_goes_to_the_object_it_overlaps_most(grids21):
    # Both objects choose quarter 0 (IoU 1 with the first, 0.2 / 0.3 with the second): the first wins it.
    boxes = torch.tensor([[[0.0, 0.0, 0.5, 0.5], [0.1, 0.0, 0.6, 0.5]]])
    m = match(grids21, boxes, torch.tensor([[1, 2]]), method="atss", atss_topk=2)
    assert m.positive[0].nonzero().flatten().tolist() == [0, 4]
    assert m.matched_idx[0, 0] == 0 and m.overlap[0, 0] == 1.0 and m.target_labels[0, 0] == 1
    # The second is left without: it is forced onto the best anchor still background (the image's,
    # IoU 0.25), never onto quarter 0, which would leave the first object without one.
    assert m.matched_idx[0, 4] == 1 and m.overlap[0, 4] == FORCED_OVERLAP and m.target_labels[0, 4] == 2


def test_atss_padding_and_empty_images(grid4):
    boxes = torch.tensor([[[0.0, 0.0, 0.25, 0.25], [0.5, 0.5, 0.75, 0.75]], [[0.1, 0.1, 0.6, 0.6], [0.0, 0.0, 1.0, 1.0]]])
    m = match(grid4, boxes, torch.tensor([[2, -1], [-1, -1]]), method="atss")
    assert m.positive[0].nonzero().flatten().tolist() == [0] and (m.matched_idx[0] == 0).all()
    assert not m.positive[1].any() and (m.overlap[1] == 0).all() and (m.target_labels[1] == -1).all()
    empty = match(grid4, torch.zeros(2, 0, 4), torch.zeros(2, 0, dtype=torch.long), method="atss")
    assert empty.positive.shape == (2, 16) and not empty.positive.any()


def test_atss_bad_inputs_fail_loudly(grid4):
    boxes, labels = torch.zeros(2, 3, 4), torch.zeros(2, 3, dtype=torch.long)
    with pytest.raises(ValueError, match="unknown matching 'adaptive'"):
        match(grid4, boxes, labels, method="adaptive")
    with pytest.raises(ValueError, match="atss_topk must be >= 1"):
        match(grid4, boxes, labels, method="atss", atss_topk=0)
